"""Measure the answer verifier on the labelled sample QA set: citations before/after, wrong answers caught, cost.

Step 1 generates (slow: one local-model answer per question) and caches every answer with its retrieval in
``CACHE/generations.jsonl``; a rerun only generates what is missing. Step 2 runs the verifier, under both policies,
on the cached answers (exactly what the pipeline's verifier sees) and prints a JSON summary.

    RAG_DATA_DIR=/tmp/x/data rag ingest samples/corpus
    RAG_DATA_DIR=/tmp/x/data RAG_GENERATOR_MODEL_PATH=/tmp/ragkit-models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \\
        python scripts/measure_verification.py --cache /tmp/x/verify --limit 40

The subset is every third question of samples/qa/sample_qa.jsonl (first ``--limit``). "Correct" for an answerable
question is a hand judgement of the default model's answers of 2026-11-29 (``WRONG`` below: an answer that is
false, invented or does not answer the question), falling back to token F1 >= 0.4 against the reference for
answers not judged; any answer to an unanswerable question is wrong.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

from rag.answering.generation.answerer import GeneratedAnswer
from rag.answering.generation.prompt import Context
from rag.answering.generation.sentences import terms
from rag.answering.verify import AnswerVerifier
from rag.settings import Settings

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "qa" / "sample_qa.jsonl"
WRONG = {"rosetta_stone-01", "rosetta_stone-07", "telephone-02", "apollo_11-06"}  # judged by hand, see docstring
JUDGED_QUESTIONS = 40  # the first 40 questions of the subset were judged by hand


def generate(rows: list[dict[str, Any]], cache: Path, settings: Settings) -> None:
    from rag.answering.pipeline import QueryPipeline
    from rag.runtime import configure_runtime

    configure_runtime()
    done = {json.loads(line)["id"] for line in cache.open()} if cache.exists() else set()
    pipeline = None
    for row in rows:
        if row["id"] in done:
            continue
        pipeline = pipeline or QueryPipeline(settings)
        started = time.perf_counter()
        result = pipeline.run(row["question"])
        record = {
            **row,
            "seconds": time.perf_counter() - started,
            "generated": result.generated.to_dict() if result.generated else None,
            "chunks": [{"chunk_id": c.chunk_id, "text": c.text} for c in result.retrieval.chunks],
            "pre_verification_reason": result.response.abstain_reason if result.generated is None else None,
        }
        with cache.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(row["id"], round(record["seconds"], 1), flush=True)


def restore(data: dict[str, Any]) -> GeneratedAnswer:
    values = {k: v for k, v in data.items() if k in GeneratedAnswer.__dataclass_fields__}
    values["contexts"] = [Context(**c) for c in data["contexts"]]
    values["logprobs"] = [(str(t), float(lp)) for t, lp in data["logprobs"]] if data.get("logprobs") else None
    return GeneratedAnswer(**values)


def correct(record: dict[str, Any], text: str, judged: set[str]) -> bool:
    """Hand judgement for the judged questions, token F1 >= 0.4 against the reference for the others."""
    if not record["answerable"]:
        return False
    if record["id"] in judged:
        return record["id"] not in WRONG
    answer, reference = terms(re.sub(r"\[\d+\]", " ", text)), terms(record["reference"])
    common = len(answer & reference)
    return common > 0 and 2 * common / (len(answer) + len(reference)) >= 0.4


def measure(records: list[dict[str, Any]], verifier: AnswerVerifier, judged: set[str]) -> dict[str, Any]:
    answered = []
    for record in records:
        if not record["generated"]:
            continue
        generated = restore(record["generated"])
        if generated.model_said_unknown:
            continue
        started = time.perf_counter()
        report = verifier.run(generated, {c["chunk_id"]: c["text"] for c in record["chunks"]})
        answered.append(
            {
                "id": record["id"],
                "valid_citation_before": bool(generated.cited) and not generated.invalid_citations,
                "kept": report.final_text is not None,
                "reason": report.abstain_reason,
                "repaired": report.features["n_repaired"] > 0,
                "correct": correct(record, generated.text, judged),
                "verify_s": time.perf_counter() - started,
                "answer_s": record["seconds"],
            }
        )
    kept = [a for a in answered if a["kept"]]
    return {
        "answered_before": len(answered),
        "no_valid_citation_before": sum(not a["valid_citation_before"] for a in answered),
        "wrong_before": sum(not a["correct"] for a in answered),
        "answered_after": len(kept),
        "no_valid_citation_after": 0,  # by construction; the pipeline's invariant check enforces it again
        "repaired": sum(a["repaired"] for a in kept),
        "wrong_after": sum(not a["correct"] for a in kept),
        "wrong_caught": sum(not a["correct"] and not a["kept"] for a in answered),
        "right_lost": sum(a["correct"] and not a["kept"] for a in answered),
        "abstained": {r: sum(a["reason"] == r for a in answered) for r in ("uncited", "unsupported")},
        "verify_ms_median": round(1000 * statistics.median(a["verify_s"] for a in answered), 1),
        "answer_s_median": round(statistics.median(a["answer_s"] for a in answered), 1),
        "verify_share_of_answer_time_median": round(
            statistics.median(a["verify_s"] / a["answer_s"] for a in answered), 5
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--no-generate", action="store_true", help="only measure what is cached")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    cache = args.cache / "generations.jsonl"
    rows = [json.loads(line) for line in SAMPLE.open()][::3][: args.limit]
    settings = Settings()
    if not args.no_generate:
        generate(rows, cache, settings)
    judged = {row["id"] for row in rows[:JUDGED_QUESTIONS]}
    wanted = {row["id"] for row in rows}
    records = [r for r in map(json.loads, cache.open()) if r["id"] in wanted]
    from rag.answering.rerank import CrossEncoder

    encoder = CrossEncoder(settings)
    summary = {
        policy: measure(
            records,
            AnswerVerifier.from_settings(settings.model_copy(update={"unsupported_policy": policy}), encoder),
            judged,
        )
        for policy in ("abstain", "cut")
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
