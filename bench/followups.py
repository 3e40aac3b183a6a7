"""Follow-up questions: retrieval hit@3 after rewriting vs the same questions asked standalone.

``python -m bench.followups [--rewriter model|concat] [--data-dir DIR]`` ingests the sample corpus into DIR (an
incremental sync: cheap on a rerun), then for each row of samples/qa/followups.jsonl retrieves for (a) the labelled
standalone question, (b) the raw follow-up, (c) the follow-up after ``ConversationRewriter`` (history + cheap check
+ rewrite). A hit is a reference document among the top-3 retrieved chunks' documents. Rewrites are cached in DIR
(keyed by method, model and question) so a rerun does not call the model again. The target (issue 15): hit@3 of (c)
within 0.05 of (a); the paired difference carries a 95% bootstrap interval.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import table, write_result
from ingest.pipeline import IngestionPipeline
from rag.answering.conversation import ChatTurn, ConversationRewriter
from rag.answering.generation.backends import LocalBackend
from rag.answering.retrieval import Retriever
from rag.ml.slices import bootstrap_ci
from rag.runtime import configure_runtime
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FOLLOWUPS = ROOT / "samples" / "qa" / "followups.jsonl"
CORPUS = ROOT / "samples" / "corpus"
K = 3


def hit(retriever: Retriever, question: str, docs: list[str]) -> float:
    found = {c.doc_id for c in retriever.retrieve(question, K).chunks}
    return float(bool(found & set(docs)))


def run(data_dir: Path, rewriter: str = "model", model_path: Path | None = None) -> dict[str, Any]:
    overrides: dict[str, Any] = {"data_dir": data_dir, "chat_rewriter": rewriter, "generator": "local"}
    if model_path is not None:
        overrides["generator_model_path"] = model_path
    settings = Settings(**overrides)
    IngestionPipeline(settings, progress=False).run([CORPUS])
    retriever = Retriever(settings)
    backend = LocalBackend.from_settings(settings) if rewriter == "model" else None
    conversation = ConversationRewriter(settings, backend)
    cache_path = data_dir / f"rewrites-{rewriter}.json"
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    rows = [json.loads(line) for line in FOLLOWUPS.read_text().splitlines() if line.strip()]
    records = []
    for row in rows:
        history = [ChatTurn(t["role"], t["content"]) for t in row["history"]]
        if row["id"] not in cache:
            probe = lambda q: retriever.retrieve(q, K).top_dense  # noqa: E731
            cache[row["id"]] = conversation.rewrite(row["question"], history, probe).to_dict()
            cache_path.write_text(json.dumps(cache, indent=1))
        rewrite = cache[row["id"]]
        docs = row["reference_doc_ids"]
        records.append(
            {
                "id": row["id"],
                "kind": row["tags"]["kind"],
                "standalone": hit(retriever, row["standalone"], docs),
                "raw": hit(retriever, row["question"], docs),
                "rewritten": hit(retriever, rewrite["standalone_question"], docs),
                "rewrite": rewrite,
            }
        )
    return summarise(records, conversation.to_dict())


def summarise(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(records), "k": K, "rewriter": config, "records": records}
    for name in ("standalone", "raw", "rewritten"):
        values = np.array([r[name] for r in records])
        out[name] = {"hit_at_3": float(values.mean()), "ci95": list(bootstrap_ci(values))}
    gap = np.array([r["standalone"] - r["rewritten"] for r in records])
    out["gap_standalone_minus_rewritten"] = {"mean": float(gap.mean()), "ci95": list(bootstrap_ci(gap))}
    out["within_0_05"] = bool(gap.mean() <= 0.05)
    out["rewrite_seconds_mean"] = float(np.mean([r["rewrite"]["seconds"] for r in records]))
    out["rewritten_count"] = sum(r["rewrite"]["rewritten"] for r in records)
    out["fallbacks"] = sum(r["rewrite"]["fallback"] for r in records)
    return out


def render(result: dict[str, Any]) -> str:
    rows = [
        {"questions": name, "hit": result[name]["hit_at_3"], "ci": "[{:.3f}, {:.3f}]".format(*result[name]["ci95"])}
        for name in ("standalone", "raw", "rewritten")
    ]
    gap = result["gap_standalone_minus_rewritten"]
    return (
        table(rows, [("questions", "questions"), ("hit", f"hit@{K}", 3), ("ci", "95% CI")])
        + f"\nn={result['n']}, rewriter={result['rewriter']['method']}, rewritten={result['rewritten_count']}, "
        f"fallbacks={result['fallbacks']}, mean rewrite time={result['rewrite_seconds_mean']:.2f}s"
        + f"\nstandalone - rewritten = {gap['mean']:.3f} (95% CI [{gap['ci95'][0]:.3f}, {gap['ci95'][1]:.3f}]);"
        + f" within 0.05: {result['within_0_05']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/ragkit-bench-followups"))
    parser.add_argument("--rewriter", choices=["model", "concat", "none"], default="model")
    parser.add_argument("--model-path", type=Path, default=None, help="GGUF for the model rewriter.")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    configure_runtime()
    result = run(args.data_dir, args.rewriter, args.model_path)
    path = write_result("followups", result, args.out)
    print(render(result))
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
