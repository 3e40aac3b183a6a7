"""Retrieval quality on a BEIR dataset (SciFact by default): dense, BM25 and hybrid, beside published figures.

Protocol
- The index is built by this project's own ``IngestionPipeline`` (chunks with title prefix); candidates come
  from the product's own components (Chroma for dense, the persisted bm25s index for BM25).
- A document scores as its best chunk (max over its chunks); metrics are nDCG@10 and recall@100 over documents,
  computed with ``eval.metrics`` (trec_eval/BEIR definitions).
- Fusion is the product's weighted reciprocal rank fusion: score = w_dense / (k + rank_dense) + w_bm25 /
  (k + rank_bm25) over each retriever's top ``candidate_k`` chunks. nDCG@10 is measured at the product's operating
  point (``candidate_k`` candidates per retriever); recall@100 needs a deeper pool (``DEEP_POOL`` chunks).
- Fusion settings are tuned on ``qrels/train.tsv`` only (grid search on mean nDCG@10); the test split is scored
  once per configuration, at the end. The offline fusion is checked against ``Retriever.retrieve``.
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np

from bench.common import SCIFACT, WORK_DIR, BenchError, machine_info, require_scifact, table
from bench.retrieval_study import embedder_overrides
from eval.datasets import read_qrels
from eval.metrics import ndcg_at_k, ranked_documents, recall_at_k
from rag.ml.slices import bootstrap_ci
from rag.settings import RetrievalMode, Settings

DEEP_POOL = 300
PUBLISHED_NDCG10 = {  # SciFact test, from ../shared/data/scifact/SOURCE.md and issue 7
    "BM25 (BEIR paper, Table 2)": 0.665,
    "BM25 Pyserini flat": 0.679,
    "BM25 + cross-encoder rerank (BEIR)": 0.688,
    "all-MiniLM-L6-v2 (MTEB)": 0.645,
    "bge-small-en-v1.5 (MTEB)": 0.713,
    "bge-base-en-v1.5 (issue 7)": 0.741,
}
GRID = {
    "rrf_k": [1, 2, 5, 10, 20, 30, 45, 60, 100],
    "dense_weight": [0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
    "candidate_k": [20, 50, 100, 200],
}
QUICK_QUERIES = 60


@dataclass
class Dataset:
    name: str
    corpus: Path
    queries: dict[str, str]
    train: dict[str, dict[str, int]]
    test: dict[str, dict[str, int]]


Hit = tuple[str, str, float]  # chunk id, doc id, score


@dataclass
class Candidates:
    """Per query: BM25 ranking (DEEP_POOL deep; exact, so any prefix is that pool's result) and the dense ranking
    for every pool size, each from its own Chroma query (HNSW search depth follows n_results, so a prefix of a
    deeper search can differ from what the product gets at its candidate_k)."""

    dense: dict[int, list[list[Hit]]]
    bm25: list[list[Hit]]

    def dense_for(self, pool: int) -> list[list[Hit]]:
        if not self.dense:  # gathered for BM25 only
            return [[] for _ in self.bm25]
        return self.dense[pool] if pool in self.dense else [d[:pool] for d in self.dense[max(self.dense)]]


def load_dataset(path: Path) -> Dataset:
    needed = ("queries.jsonl", "corpus.jsonl", "qrels/train.tsv", "qrels/test.tsv")
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        raise BenchError(f"{path} is not a BEIR folder with train and test qrels: missing {', '.join(missing)}")
    queries: dict[str, str] = {}
    with (path / "queries.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                queries[str(record["_id"])] = str(record["text"])  # only _id and text: metadata may leak labels
    qrels = {split: read_qrels(path / "qrels" / f"{split}.tsv") for split in ("train", "test")}
    return Dataset(path.name, path / "corpus.jsonl", queries, qrels["train"], qrels["test"])


def quick_dataset(source: Dataset, work: Path, seed: int = 13) -> Dataset:
    """A small, fixed subset: 60 train and 60 test queries, their relevant documents, and 400 random others."""
    rng = random.Random(seed)
    train = dict(sorted(source.train.items())[:QUICK_QUERIES])
    test = dict(sorted(source.test.items())[:QUICK_QUERIES])
    records = [json.loads(line) for line in source.corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    wanted = {d for qrels in (train, test) for grades in qrels.values() for d in grades}
    others = [r for r in records if str(r["_id"]) not in wanted]
    keep = wanted | {str(r["_id"]) for r in rng.sample(others, min(400, len(others)))}
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records if str(r["_id"]) in keep)
    if not corpus.exists() or corpus.read_text(encoding="utf-8") != text:
        corpus.write_text(text, encoding="utf-8")
    return Dataset(f"{source.name}-quick", corpus, source.queries, train, test)


def corpus_copy(dataset: Dataset, work: Path) -> Path:
    """The corpus at a stable path (the ingest benchmark's copy for SciFact), restored if its records differ."""
    target = work / "corpus.jsonl"

    def records(path: Path) -> list[tuple[str, str, str]]:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [(str(r["_id"]), str(r.get("title") or ""), str(r.get("text") or "")) for r in rows]

    if not target.exists() or records(target) != records(dataset.corpus):
        work.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dataset.corpus.read_bytes())
    return target


def ensure_index(
    corpus: Path, data_dir: Path, backend: str, shared_models: Path, embedder: Any = None
) -> dict[str, Any]:
    """Ingest ``corpus`` into ``data_dir`` (a no-op when it is already there: unchanged documents are skipped)."""
    from ingest.pipeline import IngestionPipeline

    if not data_dir.exists():
        data_dir.mkdir(parents=True)
        shared_models.mkdir(parents=True, exist_ok=True)
        (data_dir / "models").symlink_to(shared_models.resolve(), target_is_directory=True)
        print(f"[bench quality] building the {backend} index in {data_dir} (minutes on a CPU)", flush=True)
    settings = Settings(data_dir=data_dir, **embedder_overrides(backend))
    summary = IngestionPipeline(settings, embedder=embedder, progress=False).run([corpus])
    return {
        "index_version": summary.index_version,
        "chunks": summary.total_chunks,
        "embedded_now": summary.chunks_embedded,
    }


def gather(
    settings: Settings,
    embedder: Any,
    query_ids: Sequence[str],
    queries: dict[str, str],
    *,
    with_title: bool = True,
    dense_too: bool = True,
    pools: Sequence[int] = (),
) -> Candidates:
    """Dense and BM25 candidates of every query from the product's store and BM25 index."""
    from rag.indexing.sparse import SparseIndex
    from rag.indexing.store import VectorStore

    store = VectorStore(settings)
    directory = SparseIndex.directory(settings.bm25_dir, store.name)
    tmp: Path | None = None
    if with_title == settings.embed_titles:
        index = SparseIndex.load(directory)
    else:  # the same chunks indexed the other way (diagnostic only)
        tmp = Path(tempfile.mkdtemp(prefix="bench-bm25-"))
        index = SparseIndex.build(store.iter_chunks(), tmp / "bm25", "variant", with_title=with_title)
    if index is None:
        raise BenchError(f"no BM25 index under {directory}")
    texts = [queries[q] for q in query_ids]
    pools = sorted({*pools, DEEP_POOL}) if dense_too else []
    dense: dict[int, list[list[Hit]]] = {pool: [] for pool in pools}
    bm25: list[list[Hit]] = []
    # questions as the product embeds them (embed_query: with the model's query prefix, bge's instruction)
    vectors = [embedder.embed_query(t) for t in texts] if pools else [None] * len(texts)
    for text, vector in zip(texts, vectors, strict=True):
        if pools:
            for pool in pools:
                dense[pool].append(
                    [(c.chunk_id, str(c.metadata.get("doc_id")), c.score) for c in store.query(vector, pool)]
                )
        bm25.append([(h.chunk_id, str(h.metadata.get("doc_id")), h.score) for h in index.search(text, DEEP_POOL)])
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    return Candidates(dense, bm25)


def rank_docs(
    dense: Sequence[Hit],
    bm25: Sequence[Hit],
    *,
    mode: str,
    pool: int,
    fusion: str = "convex",
    rrf_k: int = 60,
    dense_weight: float = 1.0,
    bm25_weight: float = 1.0,
) -> list[str]:
    """Documents best first, fused by the product's own ``rag.answering.retrieval.fuse`` (ties broken by chunk id)."""
    from rag.answering.retrieval import fuse

    dense, bm25 = dense[:pool], bm25[:pool]
    doc_of = {cid: doc for cid, doc, _ in [*dense, *bm25]}
    if mode == "dense":
        fused = {cid: score for cid, _, score in dense}
    elif mode == "bm25":
        fused = {cid: score for cid, _, score in bm25}
    else:
        fused = fuse(
            [(cid, score) for cid, _, score in dense],
            [(cid, score) for cid, _, score in bm25],
            method=fusion,  # type: ignore[arg-type]
            rrf_k=rrf_k,
            dense_weight=dense_weight,
            bm25_weight=bm25_weight,
        )
    ordered = sorted(fused, key=lambda cid: (-fused[cid], cid))
    return ranked_documents(doc_of[cid] for cid in ordered)


def score(
    cands: Candidates, qrels: Sequence[dict[str, int]], *, mode: str, candidate_k: int, **fusion: Any
) -> dict[str, np.ndarray]:
    """Per-query nDCG@10 (at the product's candidate_k) and recall@100 (with the deep pool)."""
    ndcg, recall = [], []
    deep_pool = max(DEEP_POOL, candidate_k)
    rows = zip(cands.dense_for(candidate_k), cands.dense_for(deep_pool), cands.bm25, qrels, strict=True)
    for dense, deep_dense, bm25, grades in rows:
        ndcg.append(ndcg_at_k(rank_docs(dense, bm25, mode=mode, pool=candidate_k, **fusion), grades, 10))
        recall.append(recall_at_k(rank_docs(deep_dense, bm25, mode=mode, pool=deep_pool, **fusion), grades, 100))
    return {"ndcg_at_10": np.asarray(ndcg), "recall_at_100": np.asarray(recall)}


def summarise(values: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric, per_query in values.items():
        low, high = bootstrap_ci(per_query, n_resamples=1000, seed=seed)
        out[metric] = round(float(np.nanmean(per_query)), 4)
        out[f"{metric}_ci95"] = [round(low, 4), round(high, 4)]
    return out


def grid() -> list[dict[str, Any]]:
    """Every fusion configuration tried: RRF over rrf_k x weight x candidate_k, convex over weight x candidate_k
    (the BM25 weight stays 1: only the ratio matters)."""
    configs = [
        {"fusion": "rrf", "rrf_k": k, "dense_weight": w, "bm25_weight": 1.0, "candidate_k": c}
        for k, w, c in itertools.product(GRID["rrf_k"], GRID["dense_weight"], GRID["candidate_k"])
    ]
    configs += [
        {"fusion": "convex", "rrf_k": 60, "dense_weight": w, "bm25_weight": 1.0, "candidate_k": c}
        for w, c in itertools.product(GRID["dense_weight"], GRID["candidate_k"])
    ]
    return configs


def fusion_args(config: dict[str, Any]) -> dict[str, Any]:
    return {k: config[k] for k in ("fusion", "rrf_k", "dense_weight", "bm25_weight")}


def tune(
    cands: Candidates, qrels: Sequence[dict[str, int]]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray]]:
    """Grid search on the TRAIN split: best mean nDCG@10 (ties → the configuration listed first).

    Also returns each configuration's per-query values (keyed by ``config_key``) for paired comparisons.
    """
    trials = []
    per_query: dict[str, np.ndarray] = {}
    for config in grid():
        rows = zip(cands.dense_for(config["candidate_k"]), cands.bm25, qrels, strict=True)
        ndcg = [
            ndcg_at_k(
                rank_docs(dense, bm25, mode="hybrid", pool=config["candidate_k"], **fusion_args(config)), grades, 10
            )
            for dense, bm25, grades in rows
        ]
        per_query[config_key(config)] = np.asarray(ndcg)
        trials.append({**config, "train_ndcg_at_10": round(float(np.nanmean(ndcg)), 4)})
    best = max(trials, key=lambda t: t["train_ndcg_at_10"])
    return best, trials, per_query


def config_key(config: dict[str, Any]) -> str:
    rrf = f",k={config['rrf_k']}" if config["fusion"] == "rrf" else ""
    return f"{config['fusion']}{rrf},w={config['dense_weight']}/{config['bm25_weight']},cand={config['candidate_k']}"


def paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean of a - b over the same queries, with a bootstrap 95% interval."""
    diff = a - b
    low, high = bootstrap_ci(diff, n_resamples=1000, seed=seed)
    return {"mean": round(float(np.nanmean(diff)), 4), "ci95": [round(low, 4), round(high, 4)]}


def check_against_retriever(
    settings: Settings, embedder: Any, query_ids: Sequence[str], queries: dict[str, str], cands: Candidates
) -> dict[str, Any]:
    """The offline fusion must rank like the product: compare top-10 documents with ``Retriever.retrieve``."""
    from bench.retrieval_study import NullScorer
    from rag.answering.rerank import Reranker
    from rag.answering.retrieval import Retriever

    # fusion only: the cross-encoder's scores do not change the fused order (reranking is off here)
    null = Reranker(settings.with_overrides(rerank=False), encoder=NullScorer())  # type: ignore[arg-type]
    retriever = Retriever(settings, embedder=embedder, reranker=null)
    same = 0
    checked = min(25, len(query_ids))
    dense = cands.dense_for(settings.candidate_k)
    for i in range(checked):
        result = retriever.retrieve(queries[query_ids[i]], k=settings.candidate_k, mode="hybrid")
        product = ranked_documents(c.doc_id for c in result.chunks)[:10]
        offline = rank_docs(
            dense[i],
            cands.bm25[i],
            mode="hybrid",
            pool=settings.candidate_k,
            fusion=settings.fusion,
            rrf_k=settings.rrf_k,
            dense_weight=settings.dense_weight,
            bm25_weight=settings.bm25_weight,
        )[:10]
        # The product returns its top candidate_k chunks only: compare the documents they cover.
        same += product == offline[: len(product)]
    return {"queries_checked": checked, "identical_top10": same}


def run(
    *,
    quick: bool = False,
    dataset_dir: Path | None = None,
    backends: Sequence[str] = ("bge-small-int8", "onnx-int8"),
    seed: int = 0,
    work_root: Path = WORK_DIR,
    embedders: dict[str, Any] | None = None,
    rerank: bool = False,
    train_limit: int | None = None,
    labelled: Sequence[Path] = (),
    labelled_limit: int | None = None,
    test_limit: int | None = None,
) -> dict[str, Any]:
    """``embedders`` (backend → loaded ``Embedder``) lets a caller share models it already holds.

    ``backends`` name embedder configurations (``bench.retrieval_study.EMBEDDERS``; ``torch``/``onnx-int8`` are
    all-MiniLM-L6-v2). ``rerank``: the reranker study on the first backend (grid tuned on ``train_limit`` train
    queries, scored on the first ``test_limit`` test queries). ``labelled``: JSONL labelled sets or PubMedQA
    folders, scored for every backend (and reranked).
    """
    from rag.indexing.embedding import Embedder

    machine = machine_info()
    started = time.perf_counter()
    source = load_dataset(dataset_dir or require_scifact())
    is_scifact = dataset_dir is None or dataset_dir.resolve() == SCIFACT.resolve()
    if quick and is_scifact:
        work = work_root / "quality-quick"
        dataset = quick_dataset(source, work)
        corpus = dataset.corpus
    elif is_scifact:
        work = work_root / "ingest-scifact-full"  # share the index built by `python -m bench ingest`
        dataset = source
        corpus = corpus_copy(dataset, work)
    else:
        work = work_root / f"quality-{source.name}"
        dataset = source
        corpus = corpus_copy(dataset, work)
    splits = {name: dict(sorted(q.items())) for name, q in (("train", dataset.train), ("test", dataset.test))}
    defaults = Settings()

    per_backend: dict[str, Any] = {}
    per_query: dict[str, dict[str, np.ndarray]] = {}
    for backend in backends:
        data_dir = work / f"ours-{backend}"
        settings = Settings(data_dir=data_dir, **embedder_overrides(backend))
        embedder = (embedders or {}).get(backend) or Embedder(settings)
        (embedders := embedders or {}).setdefault(backend, embedder)
        index_info = ensure_index(corpus, data_dir, backend, work_root / "shared" / "models", embedder)
        pools = GRID["candidate_k"]
        cands = {name: gather(settings, embedder, list(q), dataset.queries, pools=pools) for name, q in splits.items()}
        test_qrels = list(splits["test"].values())
        rows: dict[str, Any] = {}
        default_config = {
            "fusion": defaults.fusion,
            "rrf_k": defaults.rrf_k,
            "dense_weight": defaults.dense_weight,
            "bm25_weight": defaults.bm25_weight,
            "candidate_k": defaults.candidate_k,
        }
        baseline_rrf = {**default_config, "fusion": "rrf", "rrf_k": 60, "dense_weight": 1.0, "bm25_weight": 1.0}
        for mode in get_args(RetrievalMode):
            values = score(
                cands["test"], test_qrels, mode=mode, candidate_k=defaults.candidate_k, **fusion_args(default_config)
            )
            rows[mode] = summarise(values, seed)
            per_query[f"{backend}/{mode}"] = values
        values = score(
            cands["test"], test_qrels, mode="hybrid", candidate_k=defaults.candidate_k, **fusion_args(baseline_rrf)
        )
        rows["hybrid-rrf60"] = summarise(values, seed)
        per_query[f"{backend}/hybrid-rrf60"] = values
        best, trials, train_values = tune(cands["train"], list(splits["train"].values()))
        values = score(cands["test"], test_qrels, mode="hybrid", candidate_k=best["candidate_k"], **fusion_args(best))
        rows["hybrid-tuned"] = summarise(values, seed)
        per_query[f"{backend}/hybrid-tuned"] = values
        test_ndcg = {k: per_query[f"{backend}/{k}"]["ndcg_at_10"] for k in ("hybrid", "hybrid-rrf60", "hybrid-tuned")}
        default_key, rrf60_key = config_key(default_config), config_key(baseline_rrf)
        diffs = {
            "default_minus_rrf60_test_ndcg_at_10": paired(test_ndcg["hybrid"], test_ndcg["hybrid-rrf60"], seed),
            "tuned_minus_default_test_ndcg_at_10": paired(test_ndcg["hybrid-tuned"], test_ndcg["hybrid"], seed),
        }
        if default_key in train_values and rrf60_key in train_values:
            diffs["default_minus_rrf60_train_ndcg_at_10"] = paired(
                train_values[default_key], train_values[rrf60_key], seed
            )
            diffs["tuned_minus_default_train_ndcg_at_10"] = paired(
                train_values[config_key(best)], train_values[default_key], seed
            )
        default_train = next((t for t in trials if config_key(t) == default_key), None)
        rrf60_train = next((t for t in trials if config_key(t) == rrf60_key), None)
        bm25_no_title = score(
            gather(settings, embedder, list(splits["test"]), dataset.queries, with_title=False, dense_too=False),
            test_qrels,
            mode="bm25",
            candidate_k=defaults.candidate_k,
        )
        per_backend[backend] = {
            "index": index_info,
            "test": rows,
            "bm25_without_title_test": summarise(bm25_no_title, seed),
            "tuned_on_train": best,
            "default_on_train": default_train,
            "rrf60_on_train": rrf60_train,
            **diffs,
            "grid_size": len(trials),
            "top_trials": sorted(trials, key=lambda t: -t["train_ndcg_at_10"])[:10],
            "retriever_check": check_against_retriever(
                settings, embedder, list(splits["test"]), dataset.queries, cands["test"]
            ),
        }

    guard = None
    if "onnx-int8" in backends and "torch" in backends:
        guard = {}
        for mode in ("dense", "hybrid"):
            diff = per_query[f"onnx-int8/{mode}"]["ndcg_at_10"] - per_query[f"torch/{mode}"]["ndcg_at_10"]
            low, high = bootstrap_ci(diff, n_resamples=1000, seed=seed)
            guard[f"{mode}_ndcg_at_10_int8_minus_fp32"] = {
                "mean": round(float(np.nanmean(diff)), 4),
                "ci95": [round(low, 4), round(high, 4)],
                "within_0.005": bool(abs(float(np.nanmean(diff))) <= 0.005),
            }
    studies = extra_studies(
        work,
        work_root,
        dataset,
        splits,
        backends,
        embedders or {},
        rerank,
        (train_limit, test_limit),
        labelled,
        labelled_limit,
        seed,
    )
    return {
        "benchmark": "quality",
        "machine": machine,
        **studies,
        "config": {
            "dataset": dataset.name,
            "quick": quick,
            "train_queries": len(splits["train"]),
            "test_queries": len(splits["test"]),
            "defaults": {
                "fusion": defaults.fusion,
                "rrf_k": defaults.rrf_k,
                "dense_weight": defaults.dense_weight,
                "bm25_weight": defaults.bm25_weight,
                "candidate_k": defaults.candidate_k,
                "chunk_size": defaults.chunk_size,
                "chunk_overlap": defaults.chunk_overlap,
                "embed_titles": defaults.embed_titles,
            },
            "deep_pool": DEEP_POOL,
            "grid": GRID,
            "seed": seed,
        },
        "published_ndcg_at_10": PUBLISHED_NDCG10 if is_scifact else {},
        "backends": per_backend,
        "int8_quality_guard": guard,
        "seconds": round(time.perf_counter() - started, 1),
    }


def extra_studies(
    work: Path,
    work_root: Path,
    dataset: Dataset,
    splits: dict[str, dict[str, dict[str, int]]],
    backends: Sequence[str],
    embedders: dict[str, Any],
    rerank: bool,
    limits: tuple[int | None, int | None],
    labelled: Sequence[Path],
    labelled_limit: int | None,
    seed: int,
) -> dict[str, Any]:
    """Labelled sets for every embedder side by side, and the reranker study (tuned on train) on the first one."""
    from bench import retrieval_study as rs

    out: dict[str, Any] = {}
    sets: dict[str, tuple[list[Path], list[rs.Question]]] = {}
    for path in labelled:
        questions = rs.labelled_questions(path)[:labelled_limit]
        sources = [REPO_ROOT_SAMPLES] if path.suffix == ".jsonl" else _pubmed_corpus(path)
        sets[path.stem if path.suffix else path.name] = (sources, questions)
    if sets:
        out["labelled_sets"] = rs.compare_embedders(sets, backends, work_root / "labelled", seed)
    if rerank:
        first = backends[0]
        settings = Settings(data_dir=work / f"ours-{first}", **embedder_overrides(first))
        others: dict[str, Any] = {}
        for name, (sources, questions) in sets.items():
            own_dir = work_root / "labelled" / name / f"ours-{first}"
            own = rs.ensure_ingested(sources, own_dir, embedder_overrides(first), work_root / "models")
            others[name] = (own, questions)
        out["rerank"] = rs.rerank_study(
            settings,
            embedders.get(first),
            rs.beir_questions(dataset.queries, splits["train"], limits[0]),
            rs.beir_questions(dataset.queries, splits["test"], limits[1]),
            others,
            work_root / "rerank-cache.sqlite",
            seed,
        )
        out["rerank"]["embedder"] = first
    return out


REPO_ROOT_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "corpus"


def _pubmed_corpus(path: Path) -> list[Path]:
    from eval.datasets import load_dataset as load_eval_dataset

    return list(load_eval_dataset(path, work_dir=Path("/tmp") / "ragkit-bench-corpora").corpus)


LABELS = {
    "dense": "dense",
    "bm25": "BM25",
    "hybrid-rrf60": "hybrid, RRF k=60 (previous default)",
    "hybrid": "hybrid, default settings",
    "hybrid-tuned": "hybrid, best on train",
}


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = []
    for backend, info in result["backends"].items():
        for mode in LABELS:
            values = info["test"][mode]
            rows.append(
                {
                    "system": f"ours: {LABELS[mode]} ({backend})",
                    "ndcg": values["ndcg_at_10"],
                    "ndcg_ci": "{:.3f}-{:.3f}".format(*values["ndcg_at_10_ci95"]),
                    "recall": values["recall_at_100"],
                    "recall_ci": "{:.3f}-{:.3f}".format(*values["recall_at_100_ci95"]),
                }
            )
    for label, value in result["published_ndcg_at_10"].items():
        rows.append({"system": f"published: {label}", "ndcg": value})
    columns = [
        ("system", "system"),
        ("ndcg", "nDCG@10", 3),
        ("ndcg_ci", "95% CI"),
        ("recall", "recall@100", 3),
        ("recall_ci", "95% CI"),
    ]
    defaults = cfg["defaults"]
    title = (
        f"Retrieval quality: {cfg['dataset']} test ({cfg['test_queries']} queries); defaults: fusion="
        f"{defaults['fusion']}, weights {defaults['dense_weight']}/{defaults['bm25_weight']}, "
        f"candidate_k={defaults['candidate_k']}"
    )
    lines = [table(rows, columns, title), ""]
    for backend, info in result["backends"].items():
        best = {k: v for k, v in info["tuned_on_train"].items() if k != "train_ndcg_at_10"}
        lines += [
            f"- {backend}: best on train ({cfg['train_queries']} queries, {info['grid_size']} configs): {best}, "
            f"train nDCG@10 {info['tuned_on_train']['train_ndcg_at_10']} (defaults: "
            f"{(info['default_on_train'] or {}).get('train_ndcg_at_10')}, RRF k=60: "
            f"{(info['rrf60_on_train'] or {}).get('train_ndcg_at_10')})",
            f"- {backend}: paired differences in nDCG@10, train: default - RRF k=60 "
            f"{info.get('default_minus_rrf60_train_ndcg_at_10')}, best - default "
            f"{info.get('tuned_minus_default_train_ndcg_at_10')}; test: default - RRF k=60 "
            f"{info['default_minus_rrf60_test_ndcg_at_10']}, best-on-train - default "
            f"{info['tuned_minus_default_test_ndcg_at_10']}",
            f"- {backend}: BM25 without titles {info['bm25_without_title_test']['ndcg_at_10']}; offline fusion = "
            f"Retriever on {info['retriever_check']['identical_top10']}/{info['retriever_check']['queries_checked']}"
            " queries",
        ]
    if result["int8_quality_guard"]:
        lines.append(f"- int8 minus fp32 nDCG@10 (paired, test): {result['int8_quality_guard']}")
    lines += render_studies(result)
    return "\n".join(lines)


def _cell(values: dict[str, Any]) -> str:
    return "{:.3f} [{:.3f}, {:.3f}]".format(values["mean"], *values["ci95"])


def render_studies(result: dict[str, Any]) -> list[str]:
    """The labelled sets per embedder, and the reranker grid per set (paired differences to reranking off)."""
    lines: list[str] = []
    for set_name, per in (result.get("labelled_sets") or {}).items():
        rows = [
            {"system": name, "ndcg": _cell(v["ndcg_at_10"]), "hit3": _cell(v["hit_at_3"])} for name, v in per.items()
        ]
        columns = [("system", "embedder (hybrid)"), ("ndcg", "nDCG@10 [95% CI]"), ("hit3", "gold in top 3 chunks")]
        lines += ["", table(rows, columns, f"Labelled set {set_name} ({len(rows)} embedders)")]
    study = result.get("rerank")
    if not study:
        return lines
    lines += [
        "",
        f"Reranker ({study['embedder']}): best on {study['train_questions']} train queries: "
        f"{study['tuned_on_train']}; latency {study['latency']}",
    ]
    for part in [k for k, v in study.items() if isinstance(v, dict) and "off" in v]:
        rows = []
        for name, v in study[part].items():
            diff = v.get("minus_off", {})
            rows.append(
                {
                    "config": name,
                    "ndcg": _cell(v["ndcg_at_10"]),
                    "dndcg": _cell(diff["ndcg_at_10"]) if diff else "",
                    "hit3": _cell(v["hit_at_3"]),
                    "dhit3": _cell(diff["hit_at_3"]) if diff else "",
                }
            )
        columns = [
            ("config", "rerank"),
            ("ndcg", "nDCG@10"),
            ("dndcg", "minus off"),
            ("hit3", "gold in top 3"),
            ("dhit3", "minus off"),
        ]
        lines += ["", table(rows, columns, f"Reranking on {part}")]
    return lines
