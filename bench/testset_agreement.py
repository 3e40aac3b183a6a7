"""Does a generated test set rank pipeline configurations the way a human-written one does?

``python -m bench.testset_agreement [--dataset scifact --dataset pubmedqa] [--n 40] [--distractors 200]
[--style-examples K] [--human-only]``

For each dataset: a seeded sample of N human questions (SciFact test queries, PubMedQA questions); a corpus of
their gold documents plus seeded distractors (PubMedQA: all 500 abstracts), ingested into its own collection; a
generated set written by ``rag eval generate``'s ``QuestionSetGenerator`` from the chunks of the SAME gold
documents (N questions, no near-misses: answerable ones only, as the human sets are). Both sets are then scored,
retrieval only, under five configurations: dense, BM25, hybrid (convex fusion, the default), hybrid with RRF, and
hybrid with the cross-encoder reranking the top candidates. With ``--style-examples K`` the writer is shown K
real questions of the dataset (``rag eval generate --examples``) that are not among the N compared: SciFact
*train* claims, PubMedQA questions outside the sample. The configurations are ranked by mean nDCG@10 on each
set; Kendall's tau-b between the two rankings is the agreement (target >= 0.6), with a 95% bootstrap interval
(questions of both sets resampled, 1,000 times). Because tau cannot tell a real disagreement from noise, every pair
of configurations is also compared on its own: the paired difference of nDCG@10 on each set with its 95% interval,
and a verdict: ``agree`` / ``disagree`` when both sets order the pair with intervals that exclude 0, ``unresolved``
when either set cannot order it. ``--human-only`` scores the human set alone: which pairs can it order at all?
Needs ../shared/data; writes .bench/testset_agreement-*.json and the generated sets in the data dir.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SHARED_DATA, BenchError, table, write_result
from eval.calibration_data import read_corpus, write_corpus
from eval.datasets import Dataset, load_dataset
from eval.runner import EvalOptions, EvalRunner
from eval.testset import GenerationConfig, QuestionSetGenerator, load_style_examples, write_testset
from ingest.pipeline import IngestionPipeline
from rag.answering.generation.backends import make_backend
from rag.hashing import sha256_json
from rag.indexing.embedding import Embedder
from rag.indexing.store import VectorStore
from rag.ml.slices import bootstrap_ci
from rag.runtime import configure_runtime
from rag.settings import Settings

METRIC = "ndcg_at_10"
RESAMPLES = 1000
# name -> (settings overrides, retrieval mode scored)
CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "dense": ({}, "dense"),
    "bm25": ({}, "bm25"),
    "hybrid": ({}, "hybrid"),
    "hybrid-rrf": ({"fusion": "rrf"}, "hybrid"),
    "hybrid+rerank": ({"rerank": True}, "hybrid"),
}


@dataclass
class Prepared:
    name: str
    collection: str
    human: Path
    gold: set[str]
    examples: tuple[str, ...] = ()


def kendall_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b (ties in either ranking count as neither concordant nor discordant)."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    denominator = np.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float((concordant - discordant) / denominator) if denominator else float("nan")


def prepare(name: str, n: int, distractors: int, settings: Settings, embedder: Embedder, style: int = 0) -> Prepared:
    """The human set (JSONL, so both sets go through the same loader), the ingested corpus, and ``style`` real
    questions for the writer that are not in the human set."""
    work = settings.data_dir / "agreement"
    path = SHARED_DATA / name
    if not path.exists():
        raise BenchError(f"{path} is missing: this benchmark needs ../shared/data/{name}")
    dataset: Dataset = load_dataset(path, limit=n, seed=settings.seed, split="test", work_dir=work)
    corpus_file = dataset.corpus[0] if dataset.corpus else path / "corpus.jsonl"
    lines = read_corpus(corpus_file)
    gold = {d for s in dataset.samples for d in s.relevant_doc_ids if d in lines}
    others = sorted(d for d in lines if d not in gold)
    keep = gold | set(random.Random(f"{settings.seed}:{name}:agreement").sample(others, min(distractors, len(others))))
    ids = [d for d in lines if d in keep]
    digest = sha256_json({"ids": ids})[:10]
    corpus = write_corpus(work / f"{name}-{digest}.jsonl", [lines[d] for d in ids])
    collection = f"agree-{name}-{digest}"
    IngestionPipeline(settings.with_overrides(collection=collection), embedder=embedder, progress=True).run([corpus])
    human = work / f"{name}-human.jsonl"
    human.write_text("".join(s.model_dump_json(exclude_defaults=True) + "\n" for s in dataset.samples
                             if s.relevant_doc_ids & gold), encoding="utf-8")  # fmt: skip
    examples: tuple[str, ...] = ()
    if style:
        split = "train" if name == "scifact" else "test"  # PubMedQA has one split: the sample is excluded below
        pool = load_dataset(path, split=split, work_dir=work)
        pool_file = work / f"{name}-style-pool.txt"
        pool_file.write_text("".join(s.question + "\n" for s in pool.samples), encoding="utf-8")
        examples = load_style_examples(pool_file, style, settings.seed, exclude=[s.question for s in dataset.samples])
    return Prepared(name, collection, human, gold, examples)


def generate(prepared: Prepared, n: int, settings: Settings, embedder: Embedder) -> tuple[Path, dict[str, Any]]:
    """N generated questions from the chunks of the human questions' gold documents."""
    s = settings.with_overrides(collection=prepared.collection)
    chunks = [c for c in VectorStore(s).iter_chunks() if str(c.metadata.get("doc_id")) in prepared.gold]
    config = GenerationConfig(n=n, near_miss_share=0.0, seed=settings.seed, examples=prepared.examples)
    generator = QuestionSetGenerator(s, config, make_backend(s), embedder)
    result = generator.run(chunks, collection=prepared.collection, index_version=None)
    styled = f"-styled{len(prepared.examples)}" if prepared.examples else ""
    output = settings.data_dir / "agreement" / f"{prepared.name}-generated{styled}.jsonl"
    write_testset(result, output)
    return output, result.summary()


def score(path: Path, collection: str, settings: Settings, embedder: Embedder) -> dict[str, np.ndarray]:
    """Per-question nDCG@10 of every configuration (retrieval only)."""
    out: dict[str, np.ndarray] = {}
    for config, (overrides, mode) in CONFIGS.items():
        s = settings.with_overrides(collection=collection, retrieval_mode=mode, eval_bootstrap_resamples=100,
                                    eval_retrieval_depth=10, **overrides)  # nDCG@10 needs 10 (each is reranked)
        options = EvalOptions(dataset=path, collection=collection, judge="none", answers=False, modes=[mode],
                              progress=False, log_to_mlflow=False)  # fmt: skip
        _, frame, _ = EvalRunner(s, options, embedder=embedder).run()
        out[config] = frame[METRIC].to_numpy(dtype=float)
    return out


def agreement(human: dict[str, np.ndarray], generated: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    names = list(CONFIGS)
    h = [float(np.nanmean(human[c])) for c in names]
    g = [float(np.nanmean(generated[c])) for c in names]
    rng = np.random.default_rng(seed)
    n_h, n_g = len(human[names[0]]), len(generated[names[0]])
    taus = []
    for _ in range(RESAMPLES):
        ih, ig = rng.integers(0, n_h, n_h), rng.integers(0, n_g, n_g)
        taus.append(kendall_tau_b([float(np.nanmean(human[c][ih])) for c in names],
                                  [float(np.nanmean(generated[c][ig])) for c in names]))  # fmt: skip
    finite = np.array([t for t in taus if np.isfinite(t)])
    return {
        "configs": names,
        "human": dict(zip(names, h, strict=True)),
        "generated": dict(zip(names, g, strict=True)),
        "human_ci": {c: list(bootstrap_ci(human[c])) for c in names},
        "generated_ci": {c: list(bootstrap_ci(generated[c])) for c in names},
        "kendall_tau": kendall_tau_b(h, g),
        "pairs": pairs(human, generated),
        "kendall_tau_ci95": [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))],
        "n_human": n_h,
        "n_generated": n_g,
    }


def paired(scores: dict[str, np.ndarray], a: str, b: str) -> tuple[float, float, float, int]:
    """Mean per-question difference a - b, its 95% interval, and the order it resolves (1, -1, or 0: none)."""
    diff = scores[a] - scores[b]
    low, high = bootstrap_ci(diff)
    return float(np.nanmean(diff)), low, high, 1 if low > 0 else -1 if high < 0 else 0


def pairs(human: dict[str, np.ndarray], generated: dict[str, np.ndarray] | None) -> list[dict[str, Any]]:
    """Each pair of configurations, compared on each set by the paired difference of per-question nDCG@10."""
    out = []
    for a, b in combinations(CONFIGS, 2):
        row: dict[str, Any] = {"pair": f"{a} - {b}"}
        signs = []
        for side, scores in (("human", human), ("generated", generated)):
            if scores is None:
                continue
            row[side], low, high, sign = paired(scores, a, b)
            row[f"{side}_ci"] = [low, high]
            signs.append(sign)
        if generated is None:
            row["verdict"] = "resolved" if signs[0] else "unresolved"
        else:
            row["verdict"] = "unresolved" if 0 in signs else "agree" if signs[0] == signs[1] else "disagree"
        out.append(row)
    return out


def run(
    datasets: list[str], n: int, distractors: int, data_dir: Path, style: int = 0, human_only: bool = False
) -> dict[str, Any]:
    settings = Settings(data_dir=data_dir)
    embedder = Embedder(settings)
    out: dict[str, Any] = {"n": n, "distractors": distractors, "style_examples": style, "metric": METRIC,
                           "human_only": human_only, "datasets": {}}  # fmt: skip
    for name in datasets:
        prepared = prepare(name, n, distractors, settings, embedder, style)
        if human_only:  # can the human set order the configurations at all?
            human = score(prepared.human, prepared.collection, settings, embedder)
            out["datasets"][name] = {"configs": list(CONFIGS), "n_human": len(human["dense"]),
                                     "human": {c: float(np.nanmean(v)) for c, v in human.items()},
                                     "pairs": pairs(human, None)}  # fmt: skip
            continue
        generated_path, summary = generate(prepared, n, settings, embedder)
        human = score(prepared.human, prepared.collection, settings, embedder)
        generated = score(generated_path, prepared.collection, settings, embedder)
        per_question = {side: {c: v.tolist() for c, v in scores.items()}
                        for side, scores in (("human", human), ("generated", generated))}  # fmt: skip
        out["datasets"][name] = {**agreement(human, generated, settings.seed), "generation": summary,
                                 "generated_set": str(generated_path), "examples": list(prepared.examples),
                                 "per_question": per_question}  # fmt: skip
    return out


def _interval(ci: list[float]) -> str:
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def render(result: dict[str, Any]) -> str:
    parts = []
    for name, r in result["datasets"].items():
        if result.get("human_only"):
            rows = [{"config": c, "human": r["human"][c]} for c in r["configs"]]
            pair_rows = [{**p, "human_ci": _interval(p["human_ci"])} for p in r["pairs"]]
            resolved = sum(p["verdict"] == "resolved" for p in r["pairs"])
            parts.append(table(rows, [("config", "config"), ("human", f"human {METRIC}", 3)],
                               title=f"{name}: {r['n_human']} human questions") + "\n\n"
                         + table(pair_rows, [("pair", "pair"), ("human", "human diff", 3), ("human_ci", "95% CI"),
                                             ("verdict", "verdict")],
                                 title=f"{name}: {resolved} of {len(pair_rows)} pairs resolved"))  # fmt: skip
            continue
        rows = [{"config": c, "human": r["human"][c], "generated": r["generated"][c]} for c in r["configs"]]
        gen = r["generation"]
        columns = [("config", "config"), ("human", f"human {METRIC}", 3), ("generated", f"generated {METRIC}", 3)]
        low, high = r["kendall_tau_ci95"]
        pair_rows = [{**p, "human_ci": _interval(p["human_ci"]), "generated_ci": _interval(p["generated_ci"])}
                     for p in r["pairs"]]  # fmt: skip
        pair_columns = [("pair", "pair"), ("human", "human diff", 3), ("human_ci", "95% CI"), ("generated",
                        "generated diff", 3), ("generated_ci", "95% CI"), ("verdict", "verdict")]  # fmt: skip
        verdicts = ", ".join(f"{v} {n}" for v, n in sorted(Counter(p["verdict"] for p in r["pairs"]).items()))
        parts.append(
            table(rows, columns, title=f"{name}: {r['n_human']} human / {r['n_generated']} generated questions")
            + f"\nKendall tau-b = {r['kendall_tau']:.3f} (95% CI [{low:.3f}, {high:.3f}]); generation: "
            f"{gen['attempts']} chunks tried, rejected {gen['rejected']}, {gen['seconds']:.0f}s\n\n"
            + table(pair_rows, pair_columns, title=f"{name}: pairs of configurations ({verdicts})")
        )
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", choices=["scifact", "pubmedqa"], default=None)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--distractors", type=int, default=200)
    parser.add_argument("--style-examples", type=int, default=0, help="real questions shown to the writer (0: none)")
    parser.add_argument("--human-only", action="store_true", help="score only the human set: which pairs it orders")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/ragkit-bench-agreement"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configure_runtime()
    try:
        result = run(args.dataset or ["scifact", "pubmedqa"], args.n, args.distractors, args.data_dir,
                     args.style_examples, args.human_only)
    except BenchError as exc:
        raise SystemExit(f"error: {exc}") from exc
    path = write_result("testset_agreement", result, args.out)
    print(render(result))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
