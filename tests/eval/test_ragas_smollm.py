"""A tiny real RAGAS run: SmolLM2-135M answers AND judges (quality irrelevant, the plumbing must work),
then the same run again: identical answers and retrieval metrics, every verdict from the judge cache."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from eval.judge import JUDGE_METRICS
from eval.runner import EvalOptions, EvalRunner
from rag.answering.generation.backends import LocalBackend, smollm2_path
from rag.indexing.embedding import Embedder
from rag.settings import Settings


@pytest.mark.slow
def test_smollm_answers_and_judges_reproducibly(tiny_pubmedqa: Path, embedder: Embedder, tmp_path: Path) -> None:
    model = LocalBackend(smollm2_path(), threads=2, max_tokens=32)
    settings = Settings(
        data_dir=tmp_path / "data",
        generator="local",
        generator_model_path=smollm2_path(),
        top_k=1,
        max_answer_tokens=32,
        min_relevance=-1.0,  # never abstain on weak retrieval: the judge must see answers
        judge_max_tokens=160,
        judge_timeout_s=120,
        eval_bootstrap_resamples=200,
    )
    options = EvalOptions(dataset=tiny_pubmedqa, limit=2, judge="local", progress=False, log_to_mlflow=False)
    result, frame, _ = EvalRunner(settings, options, embedder=embedder, generator_backend=model).run()

    assert result.answers_generated and result.generator_id.startswith("local:SmolLM2")
    assert result.judge is not None and "SmolLM2" in result.judge["judge_id"]
    assert frame["answer"].map(lambda a: isinstance(a, str) and a.strip() != "").all()
    assert frame["decision_accuracy"].isin([0.0, 1.0]).all()  # every question has a gold decision
    statuses = [s for m in JUDGE_METRICS for s in frame[f"judge_status.{m}"]]
    assert set(statuses) <= {"ok", "nan", "error", "n/a"} and statuses.count("ok") >= 1
    for metric in JUDGE_METRICS:
        usage = result.judge_usage[metric]
        assert usage["attempted"] + usage["not_applicable"] == 2
        errors = frame[f"judge_error.{metric}"]
        values = frame[metric]
        # a value exists exactly when the verdict is ok; the error column explains every other attempt
        assert ((frame[f"judge_status.{metric}"] == "ok") == values.notna()).all()
        assert all(isinstance(e, str) for e, s in zip(errors, frame[f"judge_status.{metric}"], strict=True)
                   if s in ("error", "nan"))
        summary = result.metrics.get(metric)
        if summary is not None:  # the mean ignores NaN; it never becomes NaN itself
            assert summary.n + summary.n_missing == 2 and not math.isnan(summary.value or 0.0)
    # every metric the judge was asked for counts its tokens (SmolLM2's answers may all be abstentions after
    # verification, which makes faithfulness not applicable; the context metrics are judged either way)
    attempted = [m for m in JUDGE_METRICS if result.judge_usage[m]["attempted"]]
    assert attempted
    assert all(result.cost[m]["prompt_tokens"] > 0 for m in attempted)

    again, frame2, _ = EvalRunner(settings, options, embedder=embedder, generator_backend=model).run()
    assert frame2["answer"].tolist() == frame["answer"].tolist()
    assert frame2["ndcg_at_10"].tolist() == frame["ndcg_at_10"].tolist()
    assert again.config_version == result.config_version and again.index_version == result.index_version
    for metric in JUDGE_METRICS:  # paid once: every verdict comes from the cache; only errors are tried again
        first = result.judge_usage[metric]
        assert again.judge_usage[metric]["cached"] == first["ok"] + first["nan"]
        assert again.judge_usage[metric]["scored"] == first["errors"]
        had_verdict = frame[f"judge_status.{metric}"].isin(["ok", "nan"])
        assert frame2.loc[had_verdict, metric].fillna(-1).tolist() == frame.loc[had_verdict, metric].fillna(-1).tolist()
