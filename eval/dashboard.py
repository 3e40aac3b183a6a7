"""`rag report`: one static, self-contained HTML dashboard of how the service is doing.

Everything comes from files the other commands already write under ``data_dir``: evaluation runs
(``eval/runs/*/summary.json`` + ``slices.csv``), the production baseline (``production.json``), calibration
reports (``calibration/*-summary.json`` from `rag calibrate`), drift reports (``drift/*/report.json`` from
`rag drift`) and the feedback log beside the query log. Plots are inline SVG (matplotlib, Agg): no external
assets, so the page opens offline and can be mailed as one file. A missing input is an explicit empty panel.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.answering.production import read_production
from rag.errors import RagError
from rag.ml.query_log import FeedbackLog, feedback_log_path
from rag.settings import Settings

log = logging.getLogger(__name__)

MAX_RUNS = 8
MAX_SLICES = 14
HEADLINE_METRICS = (
    "ndcg_at_10", "recall_at_10", "mrr_at_10", "hit_at_1", "faithfulness", "answer_correctness", "abstention_accuracy",
)  # fmt: skip


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("dashboard: skipping unreadable %s (%s)", path, exc)
        return None
    return value if isinstance(value, dict) else None


@dataclass
class DashboardData:
    """What the page shows, read from ``data_dir`` (each list oldest first)."""

    data_dir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)
    production: dict[str, Any] | None = None
    slices: list[dict[str, str]] = field(default_factory=list)
    calibration: dict[str, Any] | None = None
    calibration_source: str | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    feedback_by_day: dict[str, Counter[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "runs": len(self.runs),
            "production_run": (self.production or {}).get("run_id"),
            "slices": len(self.slices),
            "calibration": self.calibration_source,
            "drift_reports": len(self.drift),
            "feedback_days": len(self.feedback_by_day),
        }

    @classmethod
    def load(cls, settings: Settings) -> DashboardData:
        data = cls(data_dir=settings.data_dir)
        runs_root = settings.data_dir / "eval" / "runs"
        summaries = sorted(runs_root.glob("*/summary.json"), key=lambda p: p.stat().st_mtime)[-MAX_RUNS:]
        data.runs = [run | {"_dir": str(p.parent)} for p in summaries if (run := _read_json(p))]
        try:
            baseline = read_production(settings)
            data.production = baseline.model_dump() if baseline else None
        except RagError as exc:
            log.warning("dashboard: %s", exc)
        if data.runs and (Path(data.runs[-1]["_dir"]) / "slices.csv").is_file():
            with (Path(data.runs[-1]["_dir"]) / "slices.csv").open(encoding="utf-8") as handle:
                rows = csv.DictReader(handle)
                data.slices = [r for r in rows if r.get("status") != "overall" and r.get("value") not in ("", None)]
        calibrations = sorted(
            (settings.data_dir / "calibration").glob("*-summary.json"), key=lambda p: p.stat().st_mtime
        )
        if calibrations and (summary := _read_json(calibrations[-1])):
            data.calibration = (summary.get("main") or {}).get("test") or None
            data.calibration_source = str(calibrations[-1])
        reports = sorted((settings.data_dir / "drift").glob("*/report.json"))
        data.drift = [r for p in reports if (r := _read_json(p))]
        for record in FeedbackLog(feedback_log_path(settings.query_log_path)).read():
            data.feedback_by_day.setdefault(record.timestamp().date().isoformat(), Counter())[record.rating] += 1
        return data


def _svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG markup (no XML prolog), closed afterwards."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.find("<svg") :]


def _figure(width: float = 6.4, height: float = 3.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _metric(summary: dict[str, Any] | None) -> tuple[float, float, float] | None:
    if not summary or summary.get("value") is None:
        return None
    value = float(summary["value"])
    low = summary.get("ci_low")
    high = summary.get("ci_high")
    return value, value - float(low if low is not None else value), float(high if high is not None else value) - value


def eval_runs_svg(runs: list[dict[str, Any]], production: dict[str, Any] | None) -> str:
    """Headline metrics of the latest runs with 95% CIs; the production baseline's values as dashed lines."""
    names = [m for m in HEADLINE_METRICS if any(_metric(r.get("metrics", {}).get(m)) for r in runs)][:4]
    if not names:
        names = sorted({m for r in runs for m, s in r.get("metrics", {}).items() if _metric(s)})[:4]
    fig, ax = _figure(7.5, 3.6)
    width = 0.8 / max(len(names), 1)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for i, name in enumerate(names):
        points = [(j, _metric(r.get("metrics", {}).get(name))) for j, r in enumerate(runs)]
        xs = [j + (i - (len(names) - 1) / 2) * width for j, p in points if p]
        values = [p for _, p in points if p]
        ax.errorbar(xs, [v[0] for v in values], yerr=[[v[1] for v in values], [v[2] for v in values]],
                    fmt="o", capsize=3, color=colours[i], label=name)  # fmt: skip
        baseline = (production or {}).get("metrics", {}).get(name)
        if baseline is not None:
            ax.axhline(float(baseline), color=colours[i], linestyle="--", linewidth=1)
    labels = []
    for run in runs:
        is_prod = production and production.get("run_id") in {run.get("mlflow_run_id"), run.get("run_name")}
        labels.append(("★ " if is_prod else "") + str(run.get("run_name", "?"))[-22:])
    ax.set_xticks(range(len(runs)), labels, rotation=25, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (95% CI)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Latest evaluation runs (dashed: production baseline; ★ the promoted run)", fontsize=9)
    return _svg(fig)


def slices_svg(slices: list[dict[str, str]]) -> str:
    """One metric across slices (the one with flagged slices, else the most rows), with CIs and overall."""
    usable = slices
    by_metric = Counter(s["metric"] for s in usable)
    flagged = [s["metric"] for s in usable if s.get("flagged") == "True"]
    metric = flagged[0] if flagged else by_metric.most_common(1)[0][0]
    rows = [s for s in usable if s["metric"] == metric][:MAX_SLICES]
    fig, ax = _figure(7.0, 0.3 * len(rows) + 1.2)
    ys = list(range(len(rows)))
    values = [float(s["value"]) for s in rows]
    lows = [v - float(s["ci_low"] or v) for v, s in zip(values, rows, strict=True)]
    highs = [float(s["ci_high"] or v) - v for v, s in zip(values, rows, strict=True)]
    colours = ["#c44e52" if s.get("flagged") == "True" else "#4c72b0" for s in rows]
    ax.barh(ys, values, xerr=[lows, highs], color=colours, capsize=2)
    ax.set_yticks(ys, [f"{s['slice_column']}={s['slice_value']} (n={s['n']})"[:40] for s in rows], fontsize=7)
    overall = next((s.get("overall") for s in rows if s.get("overall")), None)
    if overall:
        ax.axvline(float(overall), color="black", linestyle="--", linewidth=1, label="overall")
        ax.legend(fontsize=7)
    ax.set_title(f"{metric} by slice, latest run (red: flagged worse than overall)", fontsize=9)
    return _svg(fig)


def calibration_svg(test: dict[str, Any]) -> str:
    """Risk-coverage curve and reliability diagram side by side, from the newest `rag calibrate` report."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.4))
    curve = sorted(
        (p for p in test.get("risk_coverage", []) if p.get("coverage_answerable") is not None),
        key=lambda p: p["coverage_answerable"],
    )
    left.plot([p["coverage_answerable"] for p in curve], [p.get("error_rate") or 0 for p in curve], "o-")
    left.set_xlabel("coverage (answerable questions answered)")
    left.set_ylabel("error rate of answers")
    left.set_xlim(0, 1.02)
    left.set_ylim(0, 1.02)
    left.set_title("Risk-coverage", fontsize=9)
    bins = [b for b in test.get("reliability", []) if b.get("n")]
    right.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
    right.bar([(b["low"] + b["high"]) / 2 for b in bins], [b.get("accuracy") or 0 for b in bins],
              width=[b["high"] - b["low"] for b in bins], alpha=0.6, edgecolor="black", label="accuracy")  # fmt: skip
    right.set_xlabel("confidence")
    right.set_ylabel("accuracy")
    right.set_title(f"Reliability (ECE {test.get('ece', float('nan')):.3f})", fontsize=9)
    right.legend(fontsize=7)
    return _svg(fig)


def drift_svg(reports: list[dict[str, Any]]) -> str:
    """Per report over time: drifted features (bars, red when the verdict is drift) and negative feedback."""
    fig, ax = _figure(7.5, 3.2)
    stamps = [str(r.get("generated_at", "?"))[:19] for r in reports]
    counts = [len(r.get("drifted_features", [])) for r in reports]
    ax.bar(range(len(reports)), counts, color=["#c44e52" if r.get("drift") else "#55a868" for r in reports])
    ax.set_ylabel("drifted features")
    ax.set_xticks(range(len(reports)), stamps, rotation=25, ha="right", fontsize=7)
    rates = [((r.get("current") or {}).get("feedback") or {}).get("negative_rate") for r in reports]
    if any(rate is not None for rate in rates):
        twin = ax.twinx()
        twin.plot([i for i, v in enumerate(rates) if v is not None], [v for v in rates if v is not None],
                  "ko-", label="negative feedback (current window)")  # fmt: skip
        twin.set_ylim(0, 1)
        twin.set_ylabel("negative feedback rate")
        twin.legend(fontsize=7, loc="upper left")
    ax.set_title("Drift reports over time (red: drift detected)", fontsize=9)
    return _svg(fig)


def feedback_svg(by_day: dict[str, Counter[str]]) -> str:
    """Ratings per day (stacked up/down) and the share of thumbs down."""
    days = sorted(by_day)
    ups = [by_day[d]["up"] for d in days]
    downs = [by_day[d]["down"] for d in days]
    fig, ax = _figure(7.5, 3.2)
    ax.bar(days, ups, color="#55a868", label="up")
    ax.bar(days, downs, bottom=ups, color="#c44e52", label="down")
    ax.set_ylabel("ratings per day")
    ax.tick_params(axis="x", rotation=25, labelsize=7)
    twin = ax.twinx()
    twin.plot(days, [d / (u + d) for u, d in zip(ups, downs, strict=True)], "ko-", label="negative rate")
    twin.set_ylim(0, 1)
    twin.set_ylabel("negative rate")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("User feedback over time", fontsize=9)
    return _svg(fig)


def _panel(panel_id: str, title: str, body: str, empty: str | None = None) -> str:
    content = f'<p class="empty">{html.escape(empty)}</p>' if empty else body
    return f'<section class="panel" id="{panel_id}"><h2>{html.escape(title)}</h2>{content}</section>'


def _runs_table(runs: list[dict[str, Any]]) -> str:
    rows = []
    names = [m for m in HEADLINE_METRICS if any(_metric(r.get("metrics", {}).get(m)) for r in runs)]
    for run in reversed(runs):
        cells = []
        for name in names:
            point = _metric(run.get("metrics", {}).get(name))
            cells.append(f"{point[0]:.3f} [{point[0] - point[1]:.3f}, {point[0] + point[2]:.3f}]" if point else "–")
        dataset = (run.get("dataset") or {}).get("name", "?")
        rows.append(f"<tr><td>{html.escape(str(run.get('run_name')))}</td><td>{html.escape(str(dataset))}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")  # fmt: skip
    head = "".join(f"<th>{html.escape(m)}</th>" for m in names)
    return f"<table><tr><th>run</th><th>dataset</th>{head}</tr>{''.join(rows)}</table>"


def _no_slices(runs: list[dict[str, Any]]) -> str:
    skipped = (runs[-1].get("skipped_slice_columns") or {}) if runs else {}
    reasons = "; ".join(f"{column}: {why}" for column, why in skipped.items())
    return "no slice of the latest run is large enough to score" + (f" ({reasons})" if reasons else "")


def _safe(render: Any, *args: Any) -> str:
    """A plot that cannot be drawn from odd input becomes a message, never a failed report."""
    try:
        return render(*args)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        log.warning("dashboard: %s failed: %s", getattr(render, "__name__", render), exc)
        return f'<p class="empty">could not draw this panel: {html.escape(str(exc))}</p>'


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.4rem}
.panel{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}
.panel h2{font-size:1.05rem;margin:.2rem 0 .6rem}
.empty{color:#8a6d00;background:#fff8e1;padding:.6rem;border-radius:4px}
table{border-collapse:collapse;font-size:.8rem}td,th{border:1px solid #ddd;padding:.2rem .4rem}
svg{max-width:100%;height:auto}"""


def render_dashboard(data: DashboardData) -> str:
    """The whole page as one HTML string (inline CSS and SVG only)."""
    prod = data.production
    prod_line = "no production baseline yet (rag promote)"
    if prod:
        prod_line = html.escape(
            f"production: config {prod.get('config_version')} (run {prod.get('run_id')}, "
            f"promoted {prod.get('promoted_at')})"
        )
    panels = [
        _panel(
            "eval",
            "Evaluation runs vs production",
            _safe(eval_runs_svg, data.runs, prod) + _runs_table(data.runs) if data.runs else "",
            None if data.runs else "no evaluation runs yet: run `rag eval --dataset FILE`",
        ),
        _panel(
            "slices",
            "Slices of the latest run",
            _safe(slices_svg, data.slices) if data.slices else "",
            None if data.slices else _no_slices(data.runs),
        ),
        _panel(
            "calibration",
            "Calibration: risk-coverage and reliability",
            _safe(calibration_svg, data.calibration) if data.calibration else "",
            None if data.calibration else "no calibration yet: run `rag calibrate` to fit and report one",
        ),
        _panel(
            "drift",
            "Drift over time",
            _safe(drift_svg, data.drift) if data.drift else "",
            None if data.drift else "no drift reports yet: run `rag drift`",
        ),
        _panel(
            "feedback",
            "Feedback rate over time",
            _safe(feedback_svg, data.feedback_by_day) if data.feedback_by_day else "",
            None if data.feedback_by_day else "no feedback yet: users rate answers with POST /v1/feedback",
        ),
    ]
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rag dashboard</title>'
        f"<style>{STYLE}</style></head><body><h1>rag dashboard</h1>"
        f"<p>{prod_line} &middot; data {html.escape(str(data.data_dir))} &middot; generated {generated}</p>"
        f"{''.join(panels)}</body></html>"
    )


def write_dashboard(settings: Settings, output: Path | None = None) -> Path:
    """`rag report`: load, render, write atomically; returns the path."""
    path = output or settings.reports_dir / "dashboard.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_dashboard(DashboardData.load(settings)), encoding="utf-8")
    tmp.replace(path)
    return path
