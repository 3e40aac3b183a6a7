"""Measure abstention and calibrate ``confidence`` against answer correctness on a labelled QA set.

    python scripts/calibrate_confidence.py [--qa samples/qa/sample_qa.jsonl] [--corpus samples/corpus]
                                           [--data-dir DIR] [--out calibration.json] [--answerable-sample N]

Correctness (a simple, checkable rule): an answerable question is answered correctly when the pipeline does not
abstain, cites (or, uncited, is inferred from) a reference document, and the answer (citations removed) has token
F1 >= 0.5 against the reference, or contains it, or consists only of reference tokens; an unanswerable question is
handled correctly when the pipeline abstains. The logistic fit of correctness on the top cosine similarity
(answered questions only) gives RAG_CONFIDENCE_SLOPE and RAG_CONFIDENCE_CENTER.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ingest.pipeline import IngestionPipeline
from rag.answering.pipeline import QueryPipeline, confidence_score
from rag.settings import Settings


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", re.sub(r"\[[\d,\s-]+\]", " ", text).lower())


def precision(answer: str, reference: str) -> float:
    """Share of the answer's tokens found in the reference: a terse but right answer ("Mainz") scores 1."""
    a, r = Counter(tokens(answer)), Counter(tokens(reference))
    return sum((a & r).values()) / sum(a.values()) if a else 0.0


def token_f1(answer: str, reference: str) -> float:
    a, r = Counter(tokens(answer)), Counter(tokens(reference))
    common = sum((a & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def contains_reference(answer: str, reference: str) -> bool:
    ref = " ".join(tokens(reference))
    return bool(ref) and ref in " ".join(tokens(answer))


def fit_logistic(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and center of P(correct) = sigmoid(slope * (x - center)), by scikit-learn's logistic regression."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0).fit(x.reshape(-1, 1), y)
    slope = float(model.coef_[0][0])
    return slope, float(-model.intercept_[0] / slope)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qa", type=Path, default=Path("samples/qa/sample_qa.jsonl"))
    parser.add_argument("--corpus", type=Path, default=Path("samples/corpus"))
    parser.add_argument("--data-dir", type=Path, default=Path("rag-data"))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--answerable-sample",
        type=int,
        default=None,
        help="Seeded sample of N answerable questions (all unanswerable).",
    )
    args = parser.parse_args()

    settings = Settings(data_dir=args.data_dir)
    IngestionPipeline(settings, progress=False).run([args.corpus])
    pipeline = QueryPipeline(settings)
    rows = [json.loads(line) for line in args.qa.read_text().splitlines() if line.strip()]
    if args.answerable_sample is not None:
        answerable_rows = [r for r in rows if r["answerable"]]
        keep = {r["id"] for r in random.Random(settings.seed).sample(answerable_rows, args.answerable_sample)}
        rows = [r for r in rows if not r["answerable"] or r["id"] in keep]
    results = []
    for row in rows:
        started = time.perf_counter()
        response = pipeline.run(row["question"]).response
        seconds = time.perf_counter() - started
        cited_docs = {c.doc_id for c in response.citations}  # cited, or inferred from an uncited answer
        f1 = token_f1(response.answer, row.get("reference") or "")
        if row["answerable"]:
            correct = (
                not response.abstained
                and bool(cited_docs & set(row["reference_doc_ids"]))
                and (
                    f1 >= 0.5
                    or precision(response.answer, row["reference"]) == 1.0
                    or contains_reference(response.answer, row["reference"])
                )
            )
        else:
            correct = response.abstained
        top = max((c.score for c in response.citations), default=None)
        results.append(
            {
                "id": row["id"],
                "answerable": row["answerable"],
                "type": row["tags"].get("type"),
                "abstained": response.abstained,
                "reason": response.abstain_reason,
                "correct": correct,
                "f1": f1,
                "cited": bool(cited_docs),
                "top_cosine": top,
                "confidence": response.confidence,
                "seconds": seconds,
                "answer": response.answer,
            }
        )
        print(
            f"{row['id']:>12} {'ok ' if correct else 'BAD'} abst={response.abstained!s:5} {seconds:5.1f}s "
            f"{response.answer[:70]!r}"
        )

    answerable = [r for r in results if r["answerable"]]
    unanswerable = [r for r in results if not r["answerable"]]
    answered = [r for r in results if not r["abstained"] and r["top_cosine"] is not None]
    summary = {
        "generator": pipeline.answerer.generator_id,
        "questions": len(results),
        "abstention_rate_answerable": statistics.mean(r["abstained"] for r in answerable),
        "abstention_rate_unanswerable": statistics.mean(r["abstained"] for r in unanswerable),
        "accuracy_answerable": statistics.mean(r["correct"] for r in answerable),
        "accuracy_unanswerable": statistics.mean(r["correct"] for r in unanswerable),
        "seconds_p50": float(np.percentile([r["seconds"] for r in results], 50)),
        "seconds_p95": float(np.percentile([r["seconds"] for r in results], 95)),
    }
    x = np.array([r["top_cosine"] for r in answered], dtype=float)
    y = np.array([r["correct"] for r in answered], dtype=int)
    if len(set(y)) == 2:
        slope, center = fit_logistic(x, y)
        summary["fitted"] = {"confidence_slope": round(slope, 2), "confidence_center": round(center, 3)}
    conf = np.array([r["confidence"] for r in answered])
    summary["brier_current"] = float(np.mean((conf - y) ** 2)) if len(y) else None
    bins = []
    for low in np.arange(0.0, 1.0, 0.2):
        mask = (conf >= low) & (conf < low + 0.2 + (1e-9 if low >= 0.8 else 0))
        if mask.any():
            bins.append({"bin": f"{low:.1f}-{low + 0.2:.1f}", "n": int(mask.sum()), "accuracy": float(y[mask].mean())})
    summary["reliability"] = bins
    summary["confidence_example"] = confidence_score(0.6, True, settings)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "samples": results}, indent=2))


if __name__ == "__main__":
    main()
