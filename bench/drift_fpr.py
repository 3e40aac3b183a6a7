"""False-positive rate of each drift test over random splits of data that did not drift.

Tabular: German Credit (samples/german_credit/german.csv) randomly halved ``--splits`` times; every
halving is "no drift", so each test family should fire about alpha of the time or less.
Query log (``--query-log``): a pool of real all-MiniLM-L6-v2 embeddings of template questions on one
topic (cooking) is randomly split into reference and current windows ``--query-splits`` times.

    .venv/bin/python bench/drift_fpr.py --splits 500 --query-log --query-splits 200

Prints one line per test family (the dataset-level decision each family contributes), the Bonferroni
p-value family, the overall verdict, the uncorrected "any p < 0.05" rate the correction protects against,
and per-feature raw rejection rates at p < 0.05 (calibration of the single tests).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rag.ml.drift import DriftReport, compare_frames  # noqa: E402

GERMAN = REPO / "samples" / "german_credit" / "german.csv"
COOKING = {
    "t": [
        "How long should I {v} {f} at {n} degrees?",
        "What can I use instead of {i} in {d}?",
        "Why did my {d} turn out {p}?",
        "How do I keep {f} fresh for {w}?",
        "Is it safe to {v} frozen {f} without thawing it first?",
        "What spices go well with {f} in a {d}?",
        "Can I prepare the {d} a day ahead and {v} the {f} just before serving?",
    ],
    "v": ["bake", "roast", "grill", "steam", "fry", "braise", "poach"],
    "f": [
        "chicken thighs",
        "salmon",
        "potatoes",
        "carrots",
        "pork shoulder",
        "tofu",
        "broccoli",
        "mushrooms",
        "lamb chops",
        "eggplant",
        "shrimp",
        "cauliflower",
    ],
    "n": ["160", "180", "200", "220", "250"],
    "i": ["butter", "eggs", "buttermilk", "heavy cream", "baking soda", "yeast", "honey", "sour cream"],
    "d": [
        "banana bread",
        "pancakes",
        "lasagna",
        "risotto",
        "sourdough loaf",
        "curry",
        "stew",
        "pie crust",
        "omelette",
        "paella",
    ],
    "p": ["too dry", "gummy", "flat", "burnt on the bottom", "bland", "soggy", "too salty"],
    "w": ["a week", "two days", "a month", "overnight"],
}


def rate_table(counts: Counter[str], n: int) -> list[str]:
    return [f"  {name:<34} {count / n:6.3f}  ({count}/{n})" for name, count in sorted(counts.items())]


def tally(report: DriftReport, families: Counter[str], raw: dict[str, list[bool]]) -> None:
    for family, fired in report.families.items():
        families[f"family {family}"] += fired
    p_tests = [r for r in report.results if r.uses_p_value and r.skipped is None]
    families["p-value tests, Bonferroni (any)"] += any(r.drift for r in p_tests)
    families["p-value tests, uncorrected any p<alpha"] += any(
        r.p_value is not None and r.p_value < report.alpha for r in p_tests
    )
    families["OVERALL verdict"] += report.drift
    for r in p_tests:
        raw[f"{r.test}:{r.feature}"].append(r.p_value is not None and r.p_value < report.alpha)
    for r in report.results:
        if not r.uses_p_value and r.skipped is None:
            raw[f"{r.test}:{r.feature} > threshold"].append(bool(r.drift))


def tabular(splits: int, seed: int) -> None:
    frame = pd.read_csv(GERMAN)
    rng = np.random.default_rng(seed)
    families: Counter[str] = Counter()
    raw: dict[str, list[bool]] = defaultdict(list)
    started = time.perf_counter()
    for _ in range(splits):
        order = rng.permutation(len(frame))
        half = len(frame) // 2
        tally(compare_frames(frame.iloc[order[:half]], frame.iloc[order[half:]], with_histograms=False), families, raw)
    print(f"German Credit, {splits} random 500/500 splits ({time.perf_counter() - started:.1f}s), alpha 0.05:")
    print("\n".join(rate_table(families, splits)))
    print("  per feature (uncorrected p<0.05, or effect size above its threshold):")
    for name, hits in sorted(raw.items()):
        print(f"    {name:<40} {np.mean(hits):6.3f}")
    age = compare_frames(frame[frame.age < 35], frame[frame.age >= 35], with_histograms=False)
    print(f"  power check, split by age <35 / >=35: drift={age.drift} drifted={age.drifted_features}")


def query_pool(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        template = rng.choice(COOKING["t"])
        out.add(template.format(**{k: rng.choice(v) for k, v in COOKING.items() if k != "t"}))
    return sorted(out)


def query_log(splits: int, seed: int, reference_size: int, current_size: int) -> None:
    from rag.indexing.embedding import Embedder
    from rag.ml.query_drift import compare_query_windows
    from rag.ml.query_log import QueryLogRecord
    from rag.settings import Settings

    pool_size = reference_size + current_size + 100
    texts = query_pool(pool_size, seed)
    started = time.perf_counter()
    embedder = Embedder(Settings(data_dir=Path(tempfile.mkdtemp(prefix="rag-bench-drift-"))))
    vectors = embedder.embed(texts)
    corpus = vectors[rng_indices(len(texts), 30, seed)]
    print(f"\nQuery log: embedded {len(texts)} questions in {time.perf_counter() - started:.1f}s")
    start = datetime(2025, 1, 1, tzinfo=UTC)
    records = []
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        top = float(np.max(corpus @ vector))
        records.append(
            QueryLogRecord(
                ts=start + timedelta(minutes=i),
                request_id=str(i),
                question_hash=str(i),
                question_chars=len(text),
                mode="hybrid",
                top_score=top,
                abstained=top < 0.5,
                confidence=top,
                versions={"embedding_model": "all-MiniLM-L6-v2"},
                query_embedding=vector.tolist(),
            )
        )
    rng = np.random.default_rng(seed)
    families: Counter[str] = Counter()
    raw: dict[str, list[bool]] = defaultdict(list)
    started = time.perf_counter()
    for i in range(splits):
        order = rng.permutation(len(records))
        reference = [records[j] for j in order[:reference_size]]
        current = [records[j] for j in order[reference_size : reference_size + current_size]]
        tally(compare_query_windows(reference, current, seed=i, with_histograms=False), families, raw)
    print(
        f"Query log, {splits} random {reference_size}/{current_size} splits of one topic "
        f"({time.perf_counter() - started:.1f}s), alpha 0.05:"
    )
    print("\n".join(rate_table(families, splits)))
    print("  per feature (uncorrected p<0.05, or effect size above its threshold):")
    for name, hits in sorted(raw.items()):
        print(f"    {name:<40} {np.mean(hits):6.3f}")


def rng_indices(n: int, k: int, seed: int) -> Any:
    return np.random.default_rng(seed + 1).choice(n, size=k, replace=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splits", type=int, default=500, help="random tabular splits (>= 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query-log", action="store_true", help="also measure the query-log tests (embeds)")
    parser.add_argument("--query-splits", type=int, default=200)
    parser.add_argument("--reference-size", type=int, default=200)
    parser.add_argument("--current-size", type=int, default=100)
    args = parser.parse_args()
    tabular(args.splits, args.seed)
    if args.query_log:
        query_log(args.query_splits, args.seed, args.reference_size, args.current_size)


if __name__ == "__main__":
    main()
