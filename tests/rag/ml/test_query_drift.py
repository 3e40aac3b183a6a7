"""Query-log drift on real all-MiniLM-L6-v2 embeddings: another topic is drift, more of the same is not."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import binom
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import InvalidInputError
from rag.ml.drift_report import latest_drift_status
from rag.ml.query_drift import (
    compare_query_windows,
    domain_classifier_test,
    parse_interval,
    query_log_drift,
    select_count_windows,
)
from rag.ml.query_log import QueryLogRecord, read_query_log
from rag.settings import Settings

START = datetime(2025, 3, 1, tzinfo=UTC)  # the first record's time in the ``query_logs`` fixture


@pytest.fixture(scope="module")
def logs(query_logs: dict[str, Any]) -> dict[str, Any]:
    assert query_logs["start"] == START
    return query_logs


def _records(lines: list[dict[str, Any]]) -> list[QueryLogRecord]:
    return [QueryLogRecord.model_validate(line) for line in lines]


def test_another_topic_is_drift(logs: dict[str, list[dict[str, Any]]]) -> None:
    report = compare_query_windows(_records(logs["cooking"][:200]), _records(logs["networking"]))
    assert report.drift
    assert report.families["domain_classifier"]
    classifier = next(r for r in report.results if r.test == "domain_classifier")
    assert classifier.statistic is not None and classifier.statistic > 0.95
    assert classifier.p_value == pytest.approx(1 / 1001)  # none of the 1000 permutations comes close
    assert classifier.details["null_auc_95th"] < 0.65
    # networking questions retrieve worse from a cooking corpus and abstain more often
    assert next(r for r in report.results if r.feature == "top_score" and r.test == "ks").drift
    assert next(r for r in report.results if r.feature == "abstained").drift
    assert any(r.feature.startswith("query_embedding.pc") and r.drift for r in report.results)
    assert set(report.histograms) >= {"question_chars", "top_score", "abstained", "query_embedding.pc1"}


def test_more_of_the_same_topic_is_not_drift(logs: dict[str, list[dict[str, Any]]]) -> None:
    report = compare_query_windows(_records(logs["cooking"][:200]), _records(logs["cooking"][200:]))
    assert not report.drift, report.summary()
    classifier = next(r for r in report.results if r.test == "domain_classifier")
    assert classifier.statistic is not None and classifier.statistic < 0.6
    assert report.p_value_tests == 4  # question length KS, top score KS, abstention, domain classifier
    # windows of 200/100 rows: each PSI is decided by its noise bar and joins the Bonferroni family
    assert report.bonferroni_m == 4 + 7
    assert all(r.threshold is not None and r.threshold > 0.2 for r in report.results if r.test == "psi")


def test_domain_classifier_permutation_p_values_hold_their_level(topic_embeddings: dict[str, Any]) -> None:
    """Template questions form clusters of near-duplicates: the permutation test still fires about alpha."""
    _, vectors = topic_embeddings["cooking"]
    rng = np.random.default_rng(7)
    p_values = []
    for i in range(30):
        order = rng.permutation(len(vectors))
        outcome = domain_classifier_test(vectors[order[:150]], vectors[order[150:250]], seed=i, permutations=100)
        p_values.append(outcome.p_value)
    # A valid level-0.05 test rejects Binomial(30, 0.05) times: fail only past that distribution's 99.9th
    # percentile (6 of 30), so the check is about the test's level, not about one seed's luck.
    rejections = int(np.sum(np.asarray(p_values) < 0.05))
    assert rejections <= binom.ppf(0.999, len(p_values), 0.05), p_values
    assert 0.2 < float(np.median(p_values)) < 0.8  # roughly uniform, not piled up near 0


def test_domain_classifier_is_reproducible_and_needs_enough_rows(topic_embeddings: dict[str, Any]) -> None:
    _, vectors = topic_embeddings["cooking"]
    first = domain_classifier_test(vectors[:100], vectors[100:200], seed=3)
    assert first == domain_classifier_test(vectors[:100], vectors[100:200], seed=3)
    assert domain_classifier_test(vectors[:5], vectors[5:10]).skipped


def test_embedding_model_change_skips_embedding_tests(logs: dict[str, list[dict[str, Any]]]) -> None:
    current = [dict(line, versions={**line["versions"], "embedding_model": "other"}) for line in logs["cooking"][200:]]
    report = compare_query_windows(_records(logs["cooking"][:200]), _records(current))
    classifier = next(r for r in report.results if r.test == "domain_classifier")
    assert classifier.skipped and "not comparable" in classifier.skipped and not classifier.drift
    assert any("embedding_model" in w for w in report.warnings)


def test_read_query_log_skips_malformed_lines(
    logs: dict[str, list[dict[str, Any]]], tmp_path: Path, jsonl_writer: Callable[..., Path]
) -> None:
    path = jsonl_writer(tmp_path / "q.jsonl", logs["cooking"][:20])
    with path.open("a") as handle:
        handle.write("{not json\n")
        handle.write(json.dumps({"ts": "2025-01-01T00:00:00Z"}) + "\n")
    log = read_query_log(path)
    assert len(log.records) == 20 and log.malformed == 2
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_query_log(tmp_path / "missing.jsonl")


def test_windows(logs: dict[str, list[dict[str, Any]]]) -> None:
    records = _records(logs["cooking"][:30])
    reference, current = select_count_windows(records, 20, 10)
    assert reference == records[:20] and current == records[20:]
    with pytest.raises(InvalidInputError, match="need 40"):
        select_count_windows(records, 30, 10)
    start, end = parse_interval("2025-03-01T00:00:00Z/2025-03-01T01:00:00")
    assert end - start == timedelta(hours=1) and end.tzinfo is not None
    with pytest.raises(InvalidInputError, match="ends before"):
        parse_interval("2025-03-02/2025-03-01")


def test_cli_on_one_query_log_with_count_and_time_windows(
    logs: dict[str, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    jsonl_writer: Callable[..., Path],
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    settings = Settings(data_dir=data_dir)
    # the API's log: 200 cooking questions, then the users start asking about networking
    jsonl_writer(settings.query_log_path, logs["cooking"][:200] + logs["networking"])
    runner = CliRunner()
    drifted = runner.invoke(app, ["drift", "--reference-size", "200", "--current-size", "100", "--json"])
    assert drifted.exit_code == 3, drifted.output
    payload = json.loads(drifted.stdout)
    assert payload["kind"] == "query_log" and "query_embedding" in payload["drifted_features"]
    assert payload["current"]["records"] == 100 and payload["reference"]["records"] == 200
    assert Path(payload["report"]["html"]).read_text().count("data:image/png;base64,") >= 4
    status = latest_drift_status(settings, kind="query_log")
    assert status["available"] and status["drift"] and status["kind"] == "query_log"
    assert set(status["signals"]) == {"question_chars", "top_score", "abstained", "query_embedding"}
    assert status["signals"]["query_embedding"] is True
    newest = latest_drift_status(settings)
    assert newest["report"] == status["report"] and newest["kind"] == "query_log"

    t = [START + timedelta(minutes=m) for m in (0, 120, 200)]
    calm = runner.invoke(
        app,
        [
            "drift",
            "--reference",
            str(settings.query_log_path),
            "--window-by",
            "time",
            "--reference-window",
            f"{t[0].isoformat()}/{t[1].isoformat()}",
            "--current-window",
            f"{t[1].isoformat()}/{t[2].isoformat()}",
        ],
    )
    assert calm.exit_code == 0, calm.output
    assert "no drift" in calm.stdout
    assert latest_drift_status(settings)["drift"] is False

    too_big = runner.invoke(app, ["drift", "--reference-size", "1000"])
    assert too_big.exit_code == 2 and "holds 300 records" in too_big.output


def test_two_log_files(
    logs: dict[str, list[dict[str, Any]]], tmp_path: Path, jsonl_writer: Callable[..., Path]
) -> None:
    reference = jsonl_writer(tmp_path / "ref.jsonl", logs["cooking"][:200])
    current = jsonl_writer(tmp_path / "cur.jsonl", logs["networking"])
    report = query_log_drift(reference, current)
    assert report.drift and report.current["records"] == len(logs["networking"])
    assert report.reference["versions"]["embedding_model"] == {"all-MiniLM-L6-v2": 200}
    assert np.isclose(report.alpha, 0.05)
