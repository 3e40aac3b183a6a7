"""Smoke test of ``python -m bench ingest``: real subprocess steps on a few sample documents; structure only."""

from __future__ import annotations

import json
from pathlib import Path

from bench import ingest as bench_ingest
from bench.common import write_result

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_ingest_benchmark_runs_each_step_and_reports_same_run_ratios(tmp_path: Path) -> None:
    steps = ("langchain", "langchain-rerun", "ours-torch", "ours-rerun")
    result = bench_ingest.run(
        corpus=SAMPLES / "corpus", limit=3, systems=steps, threads=1, backend="torch", work_root=tmp_path
    )

    rows = {row["name"]: row for row in result["steps"]}
    assert list(rows) == list(steps)
    first, rerun = rows["langchain"], rows["langchain-rerun"]
    assert first["chunks_written"] > 0 and first["duplicate_chunks_in_store"] == 0
    # LangChain's rerun stores every chunk a second time; ours skips every unchanged document.
    assert rerun["chunks_in_store"] == 2 * first["chunks_written"]
    assert rerun["duplicate_chunks_in_store"] == first["chunks_written"]
    ours, ours_rerun = rows["ours-torch"], rows["ours-rerun"]
    assert ours["chunks_embedded"] == ours["chunks_written"] > 0
    assert ours_rerun["chunks_embedded"] == 0 and ours_rerun["documents_unchanged"] == 3
    assert ours_rerun["chunks_in_store"] == ours["chunks_written"]
    for row in rows.values():
        assert row["seconds"] > 0 and row["process_wall_s"] >= row["seconds"] and row["peak_rss_mib"] > 50

    ratios = result["ratios"]
    assert ratios["langchain_duplicates_after_rerun"] == first["chunks_written"]
    assert ratios["ours_extra_chunks_in_store_after_rerun"] == 0
    assert ratios["unchanged_reingest_speedup_vs_langchain_rerun"] > 0
    assert result["config"]["corpus"]["documents"] == 3 and result["config"]["threads"] == 1

    text = bench_ingest.render(result)
    assert "| step" in text and "langchain-rerun" in text and "Same-run ratios" in text
    saved = json.loads(write_result("ingest", result, tmp_path / "out.json").read_text())
    assert saved["machine"]["cpu_count"] >= 1 and "torch" in saved["machine"]["versions"]
    assert "commit" in saved["machine"]["git"]
