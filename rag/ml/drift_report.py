"""Drift reports on disk: JSON for machines, self-contained HTML (plots as base64 PNG) for people,
a ``latest.json`` pointer that monitoring reads, and the ``--on-drift`` trigger.

Layout under ``settings.data_dir / "drift"``::

    drift/
      latest.json                      # summary of the newest report + its path (atomically replaced)
      20250101T120000Z-query_log-1a2b3c/report.json
      20250101T120000Z-query_log-1a2b3c/report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import shlex
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.errors import InvalidInputError
from rag.ml.drift import REGISTRY, DriftReport, Histogram
from rag.settings import Settings

log = logging.getLogger(__name__)

LATEST = "latest.json"
REPORT_ENV = "RAG_DRIFT_REPORT"
STATUS_ENV = "RAG_DRIFT_STATUS"
HTML_ENV = "RAG_DRIFT_REPORT_HTML"


def drift_dir(settings: Settings) -> Path:
    """Where drift reports live: ``data_dir/drift``."""
    return settings.data_dir / "drift"


def _png(hist: Histogram, title: str) -> str:
    """A reference-vs-current bar chart as base64 PNG (object-oriented matplotlib: no global state)."""
    from matplotlib.figure import Figure

    width = max(5.0, min(12.0, 0.35 * len(hist.labels) + 2))
    fig = Figure(figsize=(width, 3.0), dpi=90)
    ax = fig.subplots()
    positions = list(range(len(hist.labels)))
    bar = 0.4
    ax.bar([p - bar / 2 for p in positions], hist.reference, bar, label="reference", color="#4c72b0")
    ax.bar([p + bar / 2 for p in positions], hist.current, bar, label="current", color="#dd8452")
    ax.set_xticks(positions)
    ax.set_xticklabels(hist.labels, rotation=45 if len(hist.labels) > 6 else 0, ha="right", fontsize=7)
    ax.set_ylabel("share of rows")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def render_html(report: DriftReport) -> str:
    """A standalone HTML page: verdict, per-test table, and one histogram per feature."""
    verdict = "DRIFT DETECTED" if report.drift else "no drift"
    colour = "#b00020" if report.drift else "#1b5e20"
    rows = []
    for r in report.results:
        style = ' style="background:#fde0e0"' if r.drift else ""
        rows.append(
            f"<tr{style}><td>{html.escape(r.feature)}</td><td>{html.escape(r.test)}</td>"
            f"<td>{_fmt(r.statistic)}</td><td>{_fmt(r.p_value)}</td><td>{_fmt(r.threshold)}</td>"
            f"<td>{'yes' if r.drift else 'no'}</td><td>{r.n_reference}/{r.n_current}</td>"
            f"<td>{html.escape(r.skipped or r.details.get('severity', '') or '')}</td></tr>"
        )
    plots = []
    for feature, hist in report.histograms.items():
        if not hist.labels:
            continue
        flagged = feature in report.drifted_features
        title = f"{feature} ({hist.kind}){' - drift' if flagged else ''}"
        plots.append(
            f'<figure><img alt="{html.escape(feature)}" src="data:image/png;base64,{_png(hist, title)}">'
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings) or "<li>none</li>"
    tests = "".join(
        f"<li><b>{html.escape(s.name)}</b> ({html.escape(s.direction)}, default {s.threshold:g}): "
        f"{html.escape(s.description)}</li>"
        for s in REGISTRY.values()
    )
    meta = html.escape(json.dumps({"reference": report.reference, "current": report.current}, indent=2))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report {html.escape(report.generated_at)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}figure{{display:inline-block;margin:8px}}
pre{{background:#f5f5f5;padding:8px}}</style></head><body>
<h1>Drift report ({html.escape(report.kind)})</h1>
<p style="font-size:20px;color:{colour}"><b>{verdict}</b>
 &mdash; generated {html.escape(report.generated_at)}; drifted features: {
        html.escape(", ".join(report.drifted_features) or "none")
    }</p>
<p>Multiple testing: Bonferroni over a family of {report.bonferroni_m} tests ({report.p_value_tests} p-value
 tests, the rest PSIs decided by their noise bar), alpha {report.alpha:g} &rarr;
 per-test {report.corrected_alpha:.3g}. Effect-size thresholds: {html.escape(json.dumps(report.thresholds))}.</p>
<h2>Windows</h2><pre>{meta}</pre>
<h2>Warnings</h2><ul>{warnings}</ul>
<h2>Tests</h2>
<table><tr><th>feature</th><th>test</th><th>statistic</th><th>p-value</th><th>threshold</th><th>drift</th>
<th>n ref/cur</th><th>note</th></tr>{"".join(rows)}</table>
<h2>Reference vs current</h2>{"".join(plots)}
<h2>About the tests</h2><ul>{tests}</ul>
</body></html>
"""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: DriftReport, directory: Path, *, html_report: bool = True) -> dict[str, Path]:
    """Write ``report.json`` (+ ``report.html``) into a new timestamped folder; update ``latest.json``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = directory / f"{stamp}-{report.kind}-{uuid.uuid4().hex[:6]}"
    folder.mkdir(parents=True, exist_ok=False)
    paths = {"json": folder / "report.json"}
    _atomic_write(paths["json"], report.model_dump_json(indent=2))
    if html_report:
        paths["html"] = folder / "report.html"
        _atomic_write(paths["html"], render_html(report))
    update_latest(report, directory, paths["json"])
    return paths


def latest_name(kind: str | None = None) -> str:
    """``latest.json`` (newest report of any kind) or ``latest-<kind>.json``."""
    return LATEST if kind is None else f"latest-{kind}.json"


def update_latest(report: DriftReport, directory: Path, report_path: Path) -> None:
    """Point ``latest.json`` and ``latest-<kind>.json`` at this report (atomic replace: readers never see half)."""
    pointer = json.dumps({"report": str(report_path.resolve()), "summary": report.summary()}, indent=2, default=str)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / latest_name(report.kind), pointer)
    _atomic_write(directory / LATEST, pointer)


def run_trigger(
    command: str, report_paths: dict[str, Path], report: DriftReport, timeout_s: float = 3600
) -> dict[str, Any]:
    """Run the ``--on-drift`` command (no shell: wrap pipes in ``sh -c '...'``) with the report in env vars.

    The command sees ``RAG_DRIFT_REPORT`` (JSON path), ``RAG_DRIFT_REPORT_HTML`` and ``RAG_DRIFT_STATUS``.
    """
    argv = shlex.split(command)
    if not argv:
        raise InvalidInputError("--on-drift command is empty")
    env = dict(os.environ)
    env[REPORT_ENV] = str(report_paths["json"].resolve())
    if "html" in report_paths:
        env[HTML_ENV] = str(report_paths["html"].resolve())
    env[STATUS_ENV] = "drift" if report.drift else "ok"
    started = datetime.now(UTC)
    try:
        done = subprocess.run(argv, env=env, timeout=timeout_s, check=False, capture_output=True, text=True)
    except FileNotFoundError:
        return {"command": command, "returncode": None, "error": f"command not found: {argv[0]}"}
    except subprocess.TimeoutExpired:
        return {"command": command, "returncode": None, "error": f"timed out after {timeout_s}s"}
    return {
        "command": command,
        "returncode": done.returncode,
        "started_at": started.isoformat(timespec="seconds"),
        "stdout_tail": done.stdout[-2000:],
        "stderr_tail": done.stderr[-2000:],
    }


def record_trigger(report: DriftReport, paths: dict[str, Path], trigger: dict[str, Any]) -> DriftReport:
    """Store the trigger's outcome in the JSON report (the HTML shows the verdict, not the trigger)."""
    updated = report.model_copy(update={"trigger": trigger})
    _atomic_write(paths["json"], updated.model_dump_json(indent=2))
    return updated


def latest_drift_status(settings: Settings, kind: str | None = None) -> dict[str, Any]:
    """The newest drift verdict for monitoring (Prometheus gauges); never raises for a missing/bad file.

    ``kind`` = ``"query_log"`` or ``"tabular"`` reads the newest report of that kind; None, the newest of any.

    Returns ``{"available": False, "reason": ...}`` when there is no readable report, else::

        {"available": True, "drift": bool, "kind": "query_log"|"tabular", "generated_at": ISO,
         "generated_at_unix": float, "age_seconds": float, "report": path, "drifted_features": [...],
         "signals": {feature: bool} (every tested feature; embedding components folded into
         "query_embedding"), "families": {test: bool}, "results": [{"feature", "test", "statistic", "p_value",
         "threshold", "drift", "skipped"}, ...], "warnings": [...]}
    """
    pointer = drift_dir(settings) / latest_name(kind)
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
        summary = data["summary"]
        generated = datetime.fromisoformat(summary["generated_at"])
    except FileNotFoundError:
        return {"available": False, "reason": f"no drift report yet under {pointer.parent}"}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"available": False, "reason": f"unreadable {pointer}: {exc}"}
    if generated.tzinfo is None:
        generated = generated.replace(tzinfo=UTC)
    signals: dict[str, bool] = {}
    for result in summary.get("results", []):
        signal = str(result.get("feature", "")).split(".pc")[0]  # query_embedding.pc3 -> query_embedding
        signals[signal] = signals.get(signal, False) or bool(result.get("drift"))
    return {
        "available": True,
        "drift": bool(summary.get("drift")),
        "kind": summary.get("kind"),
        "generated_at": summary["generated_at"],
        "generated_at_unix": generated.timestamp(),
        "age_seconds": max(0.0, (datetime.now(UTC) - generated).total_seconds()),
        "report": data.get("report"),
        "drifted_features": summary.get("drifted_features", []),
        "signals": signals,
        "families": summary.get("families", {}),
        "results": summary.get("results", []),
        "warnings": summary.get("warnings", []),
    }
