"""``rag.answering.production``: the promoted baseline as the serving side reads it (written by ``rag promote``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.answering.production import (
    ProductionBaseline,
    production_path,
    production_status,
    read_production,
    write_production,
)
from rag.errors import ConfigError
from rag.settings import Settings


def test_roundtrip_status_and_invalid_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert read_production(settings) is None
    assert production_status(settings, "abc")["is_production"] is False
    baseline = ProductionBaseline(
        config_version="abc123", run_id="r1", dataset_name="sample_qa", dataset_hash="f" * 64,
        promoted_at="2026-01-01T00:00:00+00:00", metrics={"ndcg_at_10": 0.9}, pipeline_config={"retrieval": {}},
    )
    path = write_production(settings, baseline)
    assert path == production_path(settings) and read_production(settings) == baseline
    assert not list(tmp_path.glob(".production.*"))  # the temporary file was renamed, not left behind
    status = production_status(settings, "abc123")
    assert status == {
        "served_config": "abc123", "production_config": "abc123", "production_run_id": "r1",
        "promoted_at": "2026-01-01T00:00:00+00:00", "is_production": True,
    }
    assert production_status(settings, "other")["is_production"] is False
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="rag promote"):
        read_production(settings)
