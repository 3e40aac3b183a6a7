"""`rag report`: the static dashboard over real eval runs, drift reports and feedback, checked in headless Chromium.

The screenshot is saved under the test's ``tmp_path`` and copied to ``.bench/screenshots/dashboard.png``.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from typer.testing import CliRunner

from eval.dashboard import DashboardData, render_dashboard
from eval.runner import EvalOptions
from eval.workflow import run_eval
from rag.answering.production import ProductionBaseline, write_production
from rag.cli import app as rag_app
from rag.indexing.embedding import Embedder
from rag.ml.drift_report import drift_dir, write_report
from rag.ml.query_drift import query_log_drift
from rag.ml.query_log import FeedbackLog, FeedbackRecord, QueryLogRecord, feedback_log_path
from rag.settings import Settings
from tests.conftest import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
PANELS = ("eval", "slices", "calibration", "drift", "feedback")


def calibration_summary() -> dict:
    """The shape `rag calibrate` writes to ``calibration/<version>-summary.json`` (main.test)."""
    bins = [{"low": i / 10, "high": (i + 1) / 10, "n": 10, "correct": i, "mean_confidence": i / 10 + 0.05,
             "accuracy": i / 10} for i in range(10)]  # fmt: skip
    curve = [{"threshold": t, "error_rate": 0.4 * (1 - t), "answered": 10, "coverage_answerable": 1 - t * 0.9}
             for t in (0.0, 0.25, 0.5, 0.75, 0.9)]  # fmt: skip
    return {"main": {"test": {"reliability": bins, "risk_coverage": curve, "ece": 0.05, "brier": 0.2}}}


def write_logs(settings: Settings) -> None:
    """A query log with rising negative feedback over four days, and two drift reports over it."""
    query_log = settings.query_log_path
    query_log.parent.mkdir(parents=True)
    feedback = FeedbackLog(feedback_log_path(query_log))
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with query_log.open("w") as handle:
        for i in range(120):
            ts = start + timedelta(hours=0.8 * i)
            handle.write(QueryLogRecord(ts=ts, request_id=f"q{i}", question_hash=f"{i:064x}", question_chars=30 + i % 9,
                                        mode="hybrid", top_score=0.6 + (i % 5) / 50, abstained=False).model_dump_json()
                         + "\n")  # fmt: skip
            down = i % 10 == 0 if i < 60 else i % 3 != 0
            feedback.append(FeedbackRecord(ts=ts, request_id=f"q{i}", rating="down" if down else "up"))
    write_report(query_log_drift(query_log, reference_size=30, current_size=30), drift_dir(settings))
    write_report(query_log_drift(query_log, reference_size=60, current_size=60), drift_dir(settings))


@pytest.fixture(scope="module")
def dashboard_dir(
    tiny_qa: tuple[Path, Path, Path], embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two real retrieval-only eval runs (full and partial corpus), a production baseline, logs and drift."""
    dataset, full, partial = tiny_qa
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    settings = Settings(data_dir=data_dir, generator="extractive", eval_min_slice_size=2)  # tiny set: 2-3 per topic
    outcomes = []
    for corpus, collection in ((full, "eval-full"), (partial, "eval-partial")):
        options = EvalOptions(dataset=dataset, corpus=corpus, collection=collection, judge="none", answers=False,
                              modes=["hybrid"], log_to_mlflow=False, progress=False)  # fmt: skip
        outcomes.append(run_eval(settings, options, embedder=embedder))
    best = outcomes[0].result
    write_production(settings, ProductionBaseline(
        config_version=best.config_version, run_id=best.run_name, dataset_name=best.dataset["name"],
        dataset_hash=best.dataset["sha256"], promoted_at=datetime.now(UTC).isoformat(),
        metrics={k: v.value for k, v in best.metrics.items() if v.value is not None},
    ))  # fmt: skip
    write_logs(settings)
    return data_dir


def test_dashboard_renders_every_panel_in_chromium(dashboard_dir: Path, tmp_path: Path) -> None:
    calibration = dashboard_dir / "calibration"
    calibration.mkdir(exist_ok=True)
    (calibration / "abc123-summary.json").write_text(json.dumps(calibration_summary()))
    output = tmp_path / "dashboard.html"
    result = CliRunner().invoke(rag_app, ["report", "--output", str(output)], env={"RAG_DATA_DIR": str(dashboard_dir)})
    assert result.exit_code == 0, result.output
    page_html = output.read_text()
    for external in ('src="http', "src='http", 'href="http', "<link", "<script", "url(http", "@import"):
        assert external not in page_html  # one self-contained file, no assets to fetch
    data = DashboardData.load(Settings(data_dir=dashboard_dir))
    assert len(data.runs) == 2 and len(data.drift) == 2 and len(data.feedback_by_day) == 4
    assert data.slices and data.calibration is not None

    assert Path(CHROMIUM).exists(), "Debian chromium is required: scripts/test.sh installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        tab = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
        tab.goto(output.as_uri())
        for panel in PANELS:
            section = tab.locator(f"section#{panel}")
            assert section.locator("svg").count() >= 1, f"panel {panel} has no plot"
            assert section.locator(".empty").count() == 0, section.inner_text()
            box = section.locator("svg").first.bounding_box()
            assert box and box["width"] > 300 and box["height"] > 100
        assert "production: config" in tab.locator("body").inner_text()
        shot = tmp_path / "dashboard.png"
        tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    target = REPO_ROOT / ".bench" / "screenshots"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, target / "dashboard.png")
    print(f"screenshot: {shot} (copied to {target / 'dashboard.png'})")


def test_missing_inputs_are_explicit_empty_panels(tmp_path: Path) -> None:
    page = render_dashboard(DashboardData.load(Settings(data_dir=tmp_path)))
    assert "no calibration yet" in page and "no evaluation runs yet" in page
    assert "no drift reports yet" in page and "no feedback yet" in page and "<svg" not in page
