"""Smoke test of ``python -m bench query``: in-process latency and a real uvicorn under locust; structure only."""

from __future__ import annotations

import json
from pathlib import Path

from bench import query as bench_query
from ingest.pipeline import IngestionPipeline
from rag.indexing.embedding import Embedder
from rag.settings import Settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_query_benchmark_measures_latency_and_load_without_errors(embedder: Embedder, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    IngestionPipeline(Settings(data_dir=data_dir), embedder=embedder, progress=False).run([SAMPLES / "corpus"])
    rows = [json.loads(line) for line in (SAMPLES / "qa" / "sample_qa.jsonl").read_text().splitlines() if line]
    questions = [r["question"] for r in rows[:20]]

    result = bench_query.run(
        data_dir=data_dir,
        backend="bge-small-int8",  # what the embedder fixture (the default) indexed with
        skip_generation=True,
        users=(1, 4),
        questions=questions,
        seconds=3,
        work_root=tmp_path / "work",
    )

    modes = result["inprocess"]["modes"]
    assert {"dense", "bm25", "hybrid", "hybrid (query embedding cached)"} <= set(modes)
    for values in modes.values():
        assert values["n"] == len(questions) - 6 and 0 < values["p50"] <= values["p95"] <= values["p99"]
    assert result["inprocess"]["bm25_load_ms"] > 0 and result["inprocess"]["bm25_rebuild_ms"] > 0
    components = set(result["inprocess"]["component_p50_ms"])
    assert components == {"embed_query", "chroma_query", "bm25_search", "manifest_load"}

    http = result["http"]["extractive"]
    assert [run["users"] for run in http["runs"]] == [1, 4]
    for run in http["runs"]:
        assert run["requests"] > 0 and run["ok"] == run["requests"]
        assert run["http_429"] == run["http_503"] == run["other_errors"] == 0
        assert run["answered"] + run["abstained"] == run["ok"]
        assert run["p50_ms"] <= run["p99_ms"]
    stream = http["streaming"]
    assert stream["requests"] == 5 and stream["errors"] == 0
    assert stream["generated"] + stream["abstained"] == 5
    assert "local" not in result["http"]
    text = bench_query.render(result)
    assert "In-process retrieval" in text and "HTTP /v1/query under load" in text
