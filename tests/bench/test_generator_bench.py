"""``python -m bench generator --quick``: the table's shape with SmolLM2 (not its speed), configuration merging and
the paired comparison against today's configuration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.common import BenchError
from bench.generator import TODAY, config_overrides, paired_differences, render, run
from rag.settings import Settings


def test_configurations_merge_over_todays_default() -> None:
    assert config_overrides("today", Settings()) == TODAY
    merged = config_overrides("q4_0+ctx600", Settings())
    assert merged == {**TODAY, "generator_quant": "q4_0", "context_chars": 600}
    current = config_overrides("default", Settings(generator_ubatch=128))
    assert current["generator_ubatch"] == 128 and current["generator_threads"] == Settings().generator_threads
    with pytest.raises(BenchError, match="unknown generator configuration 'q9'"):
        config_overrides("today+q9", Settings())


def rec(qid: str, f1: float, total: float) -> dict:
    return {
        "id": qid,
        "f1": f1,
        "cited_reference_doc": 1.0,
        "abstention_correct": 1.0,
        "ttft_s": total / 2,
        "total_s": total,
    }


def test_paired_differences_match_questions_by_id() -> None:
    today = [rec("a", 0.5, 4.0), rec("b", 0.7, 8.0), {**rec("c", math.nan, 2.0)}]
    fast = [rec("b", 0.7, 4.0), rec("a", 0.4, 2.0), {**rec("c", math.nan, 1.0)}]
    result = paired_differences({"today": today, "fast": fast}, "today")
    assert set(result) == {"fast"}
    assert result["fast"]["f1"]["mean"] == -0.05  # (0.4 - 0.5 + 0.7 - 0.7) / 2, the NaN one left out
    assert result["fast"]["total_s_ratio"]["geo_mean"] == 0.5  # every question took half the time
    assert result["fast"]["total_s_ratio"]["ci95"] == [0.5, 0.5]


def test_quick_run_reports_every_configuration_against_today(tmp_path: Path) -> None:
    result = run(quick=True, work_root=tmp_path)
    rows = {row["config"]: row for row in result["configs"]}
    assert list(rows) == ["today", "ubatch128", "threads1", "ctx600"]
    for row in rows.values():
        assert row["generated"] == 2
        assert row["prompt_tps"] > 0 and row["gen_tps"] > 0 and row["answer_p50_s"] > 0
        assert row["token_f1"] is not None and 0 <= row["abstention_correct"] <= 1
    assert rows["today"]["prompt_tps_ratio"] == rows["today"]["answer_p50_s_ratio"] == 1.0
    assert rows["ctx600"]["prompt_tokens_p50"] < rows["today"]["prompt_tokens_p50"]  # a shorter prompt
    assert set(result["paired_vs_today"]) == {"ubatch128", "threads1", "ctx600"}
    assert len(result["records"]["ctx600"]) == 2
    machine = result["machine"]
    assert "avx2" in machine["cpu_flags"] and "REPACK" in machine["runtime"]["system_info"]
    assert set(machine["runtime"]["compiled_for"]) >= {"avx2", "avx512", "amx_int8"}
    text = render(result)
    assert sum(line.startswith("|") for line in text.splitlines()) == 2 + 4  # header, rule, one row each
    assert "llama.cpp system info" in text and "ctx600 vs today, paired" in text


def test_quick_refuses_configurations_that_need_the_bundled_model(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="needs the bundled Qwen model"):
        run(quick=True, configs=("today", "q4_0"), work_root=tmp_path)
