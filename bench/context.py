"""Context budget trade-off (``RAG_CONTEXT_CHARS``) with the default local model on the labelled sample QA set.

For each budget the same questions go through the real ``QueryPipeline`` (hybrid retrieval, sentence selection
within the budget, the local GGUF model, citation checks), one at a time, with one loaded model shared by all
budgets and the prompt cache off. Measured per budget: time to first token, full answer time, prompt tokens,
and correctness against the labels: token F1 to the reference answer (answerable questions), whether a cited
source is a reference document, and whether the pipeline abstained exactly on the unanswerable questions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, WORK_DIR, machine_info, percentiles, table
from eval.metrics import abstention_correct, token_f1
from rag.ml.slices import bootstrap_ci
from rag.settings import Settings

SAMPLES = REPO_ROOT / "samples"
BUDGETS = (600, 1000, 1500, 2500, 4000)


def pick_questions(n: int) -> list[dict[str, Any]]:
    """Every k-th labelled question, so topics, types and unanswerable ones are all represented."""
    rows = [json.loads(line) for line in (SAMPLES / "qa" / "sample_qa.jsonl").read_text().splitlines() if line]
    step = max(1, len(rows) // n)
    return rows[::step][:n]


def run(
    *,
    quick: bool = False,
    budgets: Sequence[int] = BUDGETS,
    n_questions: int | None = None,
    backend: str = "onnx-int8",
    work_root: Path = WORK_DIR,
) -> dict[str, Any]:
    from ingest.pipeline import IngestionPipeline
    from rag.answering.generation.answerer import make_answerer
    from rag.answering.generation.backends import make_backend
    from rag.answering.pipeline import QueryPipeline, ResultEvent, TokenEvent
    from rag.indexing.embedding import Embedder
    from rag.indexing.store import VectorStore

    machine = machine_info()
    questions = pick_questions(n_questions or (4 if quick else 32))
    budgets = budgets[:2] if quick else budgets
    data_dir = work_root / "context" / f"data-{backend}"
    shared_models = work_root / "shared" / "models"
    shared_models.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(shared_models.resolve(), target_is_directory=True)
    base = Settings(data_dir=data_dir, embedding_backend=backend, generator="local")  # type: ignore[arg-type]
    embedder = Embedder(base)
    IngestionPipeline(base, embedder=embedder, progress=False).run([SAMPLES / "corpus"])
    store = VectorStore(base)
    llm = make_backend(base)
    tick = time.perf_counter()
    llm.load()  # type: ignore[attr-defined]
    load_s = time.perf_counter() - tick

    rows = []
    per_budget: dict[int, list[dict[str, Any]]] = {}
    for budget in budgets:
        settings = base.with_overrides(context_chars=budget)
        pipeline = QueryPipeline(
            settings,
            embedder=embedder,
            store=store,
            answerer=make_answerer(settings, embed=embedder.embed, backend=llm),
        )
        records = []
        for row in questions:
            started = time.perf_counter()
            first: float | None = None
            response = None
            for event in pipeline.stream(row["question"]):
                if isinstance(event, TokenEvent) and first is None:
                    first = time.perf_counter() - started
                elif isinstance(event, ResultEvent):
                    response = event.response
            assert response is not None
            total = time.perf_counter() - started
            cited_docs = {c.doc_id for c in response.citations if c.cited_in_answer}
            records.append(
                {
                    "id": row["id"],
                    "answerable": row["answerable"],
                    "ttft_s": first,
                    "total_s": total,
                    "generated": response.usage.get("prompt_tokens") is not None,
                    "prompt_tokens": response.usage.get("prompt_tokens"),
                    "abstained": response.abstained,
                    "f1": token_f1(response.answer, row["reference"]) if row["answerable"] else float("nan"),
                    "cited_reference_doc": (
                        float(bool(cited_docs & set(row["reference_doc_ids"]))) if row["answerable"] else float("nan")
                    ),
                    "abstention_correct": abstention_correct(response.abstained, row["answerable"]),
                    "answer": response.answer[:300],
                }
            )
        per_budget[budget] = records
        rows.append(summarise(budget, records))
        print(f"[bench context] {budget} chars: {rows[-1]}", flush=True)
    return {
        "benchmark": "context",
        "machine": machine,
        "config": {
            "quick": quick,
            "questions": len(questions),
            "answerable": sum(1 for q in questions if q["answerable"]),
            "budgets": list(budgets),
            "backend": backend,
            "generator": llm.model_id,
            "generator_load_s": round(load_s, 1),
            "top_k": base.top_k,
            "retrieval_mode": base.retrieval_mode,
            "max_answer_tokens": base.max_answer_tokens,
            "prompt_cache": base.generator_cache_prompt,
        },
        "budgets": rows,
        "paired_vs_default": paired_differences(per_budget, base.context_chars),
        "records": {str(b): r for b, r in per_budget.items()},
    }


def paired_differences(per_budget: dict[int, list[dict[str, Any]]], default: int) -> dict[str, Any]:
    """Each budget minus the default budget, question by question (same questions): mean and bootstrap 95% CI.

    Per-budget intervals overlap at this sample size even when one budget is consistently worse; the paired
    difference is what tells whether a smaller budget loses answer quality.
    """
    if default not in per_budget:
        return {}
    baseline = {r["id"]: r for r in per_budget[default]}
    result: dict[str, Any] = {}
    for budget, records in per_budget.items():
        if budget == default:
            continue
        result[str(budget)] = {}
        for key in ("f1", "cited_reference_doc", "abstention_correct", "total_s"):
            diffs = np.asarray([float(r[key]) - float(baseline[r["id"]][key]) for r in records], dtype=float)
            diffs = diffs[np.isfinite(diffs)]
            if not len(diffs):
                continue
            low, high = bootstrap_ci(diffs, n_resamples=1000, seed=0)
            result[str(budget)][key] = {"mean": round(float(diffs.mean()), 3), "ci95": [round(low, 3), round(high, 3)]}
    return result


def summarise(budget: int, records: list[dict[str, Any]]) -> dict[str, Any]:
    generated = [r for r in records if r["generated"]]

    def mean_ci(key: str) -> tuple[float | None, list[float]]:
        values = np.asarray([r[key] for r in records], dtype=float)
        if np.all(np.isnan(values)):
            return None, []
        low, high = bootstrap_ci(values, n_resamples=1000, seed=0)
        return round(float(np.nanmean(values)), 3), [round(low, 3), round(high, 3)]

    f1, f1_ci = mean_ci("f1")
    cited, cited_ci = mean_ci("cited_reference_doc")
    abstain, abstain_ci = mean_ci("abstention_correct")
    return {
        "context_chars": budget,
        "questions": len(records),
        "generated": len(generated),
        "ttft_p50_s": percentiles([r["ttft_s"] for r in generated if r["ttft_s"] is not None], (50,))["p50"],
        "answer_p50_s": percentiles([r["total_s"] for r in generated], (50,))["p50"],
        "answer_p95_s": percentiles([r["total_s"] for r in generated], (95,))["p95"],
        "prompt_tokens_p50": percentiles([r["prompt_tokens"] for r in generated], (50,))["p50"],
        "token_f1": f1,
        "token_f1_ci95": f1_ci,
        "cited_reference_doc": cited,
        "cited_reference_doc_ci95": cited_ci,
        "abstention_correct": abstain,
        "abstention_correct_ci95": abstain_ci,
    }


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    columns = [
        ("context_chars", "context chars"),
        ("generated", "generated"),
        ("prompt_tokens_p50", "prompt tokens p50"),
        ("ttft_p50_s", "first token p50 s"),
        ("answer_p50_s", "answer p50 s"),
        ("answer_p95_s", "answer p95 s"),
        ("token_f1", "token F1", 3),
        ("cited_reference_doc", "cites a reference doc", 3),
        ("abstention_correct", "abstention correct", 3),
    ]
    title = (
        f"Context budget: {cfg['questions']} labelled sample questions ({cfg['answerable']} answerable), "
        f"{cfg['generator']}, top_k={cfg['top_k']}, {cfg['retrieval_mode']}"
    )
    lines = [table(result["budgets"], columns, title)]
    for budget, diffs in result.get("paired_vs_default", {}).items():
        shown = ", ".join(f"{k} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" for k, v in diffs.items())
        lines.append(f"- {budget} chars minus the default, paired: {shown}")
    return "\n".join(lines)
