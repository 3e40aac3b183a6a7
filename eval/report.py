"""Human-readable output of a run: the terminal summary and a self-contained HTML report with plots.

Plots (matplotlib, embedded as PNG): overall metrics with CI whiskers, per-slice bars with CI whiskers,
score distributions, and the time and token cost per metric.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np
import pandas as pd

from eval.runner import EvalResult
from rag.ml.slices import OVERALL

MAX_SLICE_PLOTS = 12
# Measured by bench/testset_agreement.py (docs/EVALUATION.md): model-written questions reuse their source's words.
GENERATED_MODES_NOTE = (
    "note: most of these questions were written by a model (rag eval generate); such questions reuse their "
    "source's words and favour BM25 over dense retrieval more than people's questions do (docs/EVALUATION.md): "
    "confirm a choice between retrieval modes on real questions"
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(summary: Any) -> str:
    if summary.ci_low is None or summary.ci_high is None:
        return ""
    return f"[{summary.ci_low:.3f}, {summary.ci_high:.3f}]"


def format_text(result: EvalResult) -> str:
    """The terminal summary: metrics with CIs, modes vs published figures, judge health, flagged slices."""
    d = result.dataset
    lines = [
        f"eval {result.run_name}",
        f"dataset {d['name']} ({d['kind']}{', split ' + d['split'] if d.get('split') else ''}): "
        f"{d['samples']} of {d['total_samples']} questions{' (--limit ' + str(d['limit']) + ')' if d['limit'] else ''}"
        f", sha256 {d['sha256'][:12]}",
        f"collection {result.collection}, index {result.index_version}, config {result.config_version}, "
        f"seed {result.seed}",
        f"generator {result.generator_id}; judge {(result.judge or {}).get('judge_id', 'none')}",
        "",
        f"{'metric':<22} {'value':>7}  {'95% CI':<18} {'n':>5} {'NaN/n.a.':>8}",
    ]
    for name, summary in result.metrics.items():
        lines.append(
            f"{name:<22} {_fmt(summary.value):>7}  {_ci(summary):<18} {summary.n:>5} {summary.n_missing:>8}"
        )
    if result.by_mode:
        lines += ["", f"retrieval by mode (documents; chunks aggregated by max score; depth {result.retrieval_depth})"]
        names = ["ndcg_at_10", "recall_at_10", "recall_at_100", "mrr_at_10", "hit_at_1"]
        lines.append(f"{'mode':<8} " + " ".join(f"{n:>24}" for n in names))
        for mode, values in result.by_mode.items():
            cells = []
            for n in names:
                s = values.get(n)
                cells.append(f"{_fmt(s.value)} {_ci(s)}" if s and s.value is not None else "-")
            lines.append(f"{mode:<8} " + " ".join(f"{c:>24}" for c in cells))
        if len(result.by_mode) > 1 and 2 * d.get("generated_samples", 0) > d["samples"]:
            lines.append(GENERATED_MODES_NOTE)
    if result.published:
        lines += ["", "nDCG@10 next to published figures (same test split)"]
        for label, row in result.published.items():
            ours = _fmt(row["ours"])
            lines.append(f"  {label:<38} published {row['published_ndcg_at_10']:.3f} | ours ({row['our_mode']}) {ours}")
    if result.judge_usage:
        lines += ["", f"{'judge metric':<20} {'ok':>4} {'NaN':>4} {'err':>4} {'n.a.':>5} {'cached':>6} "
                      f"{'fail rate':>9} {'s':>8} {'tokens in/out':>15}"]
        for name, u in result.judge_usage.items():
            lines.append(
                f"{name:<20} {u['ok']:>4} {u['nan']:>4} {u['errors']:>4} {u['not_applicable']:>5} {u['cached']:>6} "
                f"{_fmt(u['failure_rate'], 2):>9} {u['seconds']:>8.1f} "
                f"{str(u['prompt_tokens']) + '/' + str(u['completion_tokens']):>15}"
            )
    t = result.timings
    lines += [
        "",
        f"time: ingest {t.get('ingest_s', 0):.1f}s, retrieval {t.get('retrieval_s', 0):.1f}s, answers "
        f"{t.get('answer_s', 0):.1f}s, judge {t.get('judge_s', 0):.1f}s; {t.get('seconds_per_sample', 0):.2f}s per "
        "question (without ingestion)",
    ]
    if result.pipeline_errors:
        lines.append(f"pipeline errors: {result.pipeline_errors} questions (see pipeline_error in samples.csv)")
    if result.flagged_slices:
        lines.append("flagged slices (> 0.1 below overall, CI excludes overall):")
        for row in result.flagged_slices:
            lines.append(
                f"  {row['metric']} {row['slice_column']}={row['slice_value']}: {_fmt(row['value'])} "
                f"vs {_fmt(row['overall'])} (n={row['n']})"
            )
    if result.slice_columns:
        minimum = result.dataset.get("min_slice_size", 30)
        lines.append(f"sliced by: {', '.join(result.slice_columns)} (min size {minimum})")
    for column, why in result.skipped_slice_columns.items():
        lines.append(f"slice column {column} skipped: {why}")
    for warning in result.warnings:
        lines.append(f"warning: {warning}")
    lines.append(f"saved: {result.local_dir}")
    if result.mlflow_run_id:
        lines.append(f"MLflow run {result.mlflow_run_id} at {result.tracking_uri}")
    return "\n".join(lines)


def format_gate(gate: dict[str, Any]) -> str:
    lines = [
        f"release gate vs run {gate['baseline_run_id']} (config {gate.get('baseline_config_version')} → "
        f"{gate['current_config_version']}), {gate['paired_questions']} aligned questions, max drop "
        f"{gate['max_drop']:g}",
        f"{'metric':<22} {'baseline':>9} {'current':>9} {'diff':>8}  {'95% CI':<20} verdict",
    ]
    for c in gate["comparisons"]:
        ci = f"[{_fmt(c['ci_low'], 4)}, {_fmt(c['ci_high'], 4)}]"
        verdict = "REGRESSED" if c["regressed"] else "ok"
        lines.append(
            f"{c['metric']:<22} {_fmt(c['baseline'], 4):>9} {_fmt(c['current'], 4):>9} "
            f"{_fmt(c['difference'], 4):>8}  {ci:<20} {verdict}{'' if c['paired'] else ' (unpaired)'}"
        )
    for warning in gate.get("warnings", []):
        lines.append(f"warning: {warning}")
    lines.append("GATE PASSED" if gate["passed"] else "GATE FAILED")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ HTML


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _bars_with_ci(labels: list[str], values: list[float], lows: list[float], highs: list[float], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.2))
    x = np.arange(len(labels))
    vals = np.array(values, dtype=float)
    err = np.array([[v - lo for v, lo in zip(values, lows, strict=True)],
                    [hi - v for v, hi in zip(values, highs, strict=True)]], dtype=float)
    err = np.nan_to_num(np.clip(err, 0, None))
    ax.bar(x, vals, yerr=err, capsize=4, color="#4C72B0")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _plots(result: EvalResult, frame: pd.DataFrame, slices: pd.DataFrame) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str]] = []
    named = [(n, s) for n, s in result.metrics.items() if s.value is not None]
    if named:
        plots.append(
            (
                "Overall metrics (95% bootstrap CI)",
                _bars_with_ci(
                    [n for n, _ in named],
                    [s.value for _, s in named],  # type: ignore[misc]
                    [s.ci_low if s.ci_low is not None else s.value for _, s in named],  # type: ignore[misc]
                    [s.ci_high if s.ci_high is not None else s.value for _, s in named],  # type: ignore[misc]
                    "overall",
                ),
            )
        )
    if not slices.empty:
        sliced = slices.loc[(slices["slice_column"] != OVERALL) & slices["value"].notna()]
        for (metric, column), part in list(sliced.groupby(["metric", "slice_column"], sort=True))[:MAX_SLICE_PLOTS]:
            overall = part["overall"].iloc[0]
            labels = [f"{v} (n={n}){' ⚑' if f else ''}" for v, n, f in zip(
                part["slice_value"], part["n"], part["flagged"], strict=True)]
            png = _bars_with_ci(
                labels,
                part["value"].tolist(),
                part["ci_low"].fillna(part["value"]).tolist(),
                part["ci_high"].fillna(part["value"]).tolist(),
                f"{metric} by {column} (overall {overall:.3f})",
            )
            plots.append((f"{metric} by {column}", png))
    distributions = [c for c in result.metrics if c in frame and pd.to_numeric(frame[c], errors="coerce").notna().any()]
    if distributions:
        cols = min(4, len(distributions))
        rows = math.ceil(len(distributions) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
        for ax, name in zip(axes.flat, distributions, strict=False):
            values = pd.to_numeric(frame[name], errors="coerce").dropna()
            ax.hist(values, bins=np.linspace(0, 1, 11), color="#55A868")
            ax.set_title(f"{name} (n={len(values)})", fontsize=9)
        for ax in list(axes.flat)[len(distributions):]:
            ax.axis("off")
        fig.tight_layout()
        plots.append(("Score distributions", _png(fig)))
    if result.cost:
        names = list(result.cost)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2))
        left.bar(names, [result.cost[n]["seconds"] for n in names], color="#C44E52")
        left.set_title("seconds per metric (whole run)", fontsize=10)
        left.tick_params(axis="x", rotation=30, labelsize=8)
        prompt = [result.cost[n]["prompt_tokens"] for n in names]
        completion = [result.cost[n]["completion_tokens"] for n in names]
        right.bar(names, prompt, label="prompt", color="#8172B2")
        right.bar(names, completion, bottom=prompt, label="completion", color="#CCB974")
        right.set_title("LLM tokens per metric", fontsize=10)
        right.tick_params(axis="x", rotation=30, labelsize=8)
        right.legend(fontsize=8)
        plots.append(("Time and tokens per metric", _png(fig)))
    return plots


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4f}", na_rep="", border=0)


def render_html(result: EvalResult, frame: pd.DataFrame, slices: pd.DataFrame) -> str:
    """One self-contained HTML file (plots inline) for the run's artifacts."""
    esc = html.escape
    overview = pd.DataFrame(
        [
            {"metric": n, "value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n, "missing": s.n_missing}
            for n, s in result.metrics.items()
        ]
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rag eval "
        f"{esc(result.run_name)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}"
        "table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Evaluation {esc(result.run_name)}</h1>",
        "<pre>" + esc(format_text(result)) + "</pre>",
        "<h2>Metrics</h2>",
        _table(overview),
    ]
    if result.by_mode:
        by_mode = pd.DataFrame(
            [{"mode": mode, "metric": m, "value": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}
             for mode, values in result.by_mode.items() for m, s in values.items()]
        )
        parts += ["<h2>Retrieval by mode</h2>", _table(by_mode)]
    if result.published:
        published = pd.DataFrame([{"system": k, **v} for k, v in result.published.items()])
        parts += ["<h2>Published nDCG@10</h2>", _table(published)]
    if result.cost:
        parts += ["<h2>Cost</h2>", _table(pd.DataFrame([{"metric": k, **v} for k, v in result.cost.items()]))]
    calibration = _active_calibration(result.pipeline_config)
    for title, png in _plots(result, frame, slices) + (calibration_plots(calibration) if calibration else []):
        parts += [f"<h2>{esc(title)}</h2>", f"<img alt='{esc(title)}' src='data:image/png;base64,{png}'>"]
    if not slices.empty:
        shown = slices.loc[slices["status"] != "too_small"]
        parts += ["<h2>Slices (min size not reached: omitted)</h2>", _table(shown)]
    errors = [c for c in frame.columns if c.startswith("judge_error.") or c == "pipeline_error"]
    failed = frame.loc[frame[errors].notna().any(axis=1), ["id", *errors]] if errors else pd.DataFrame()
    if not failed.empty:
        parts += [f"<h2>Errors ({len(failed)} questions)</h2>", _table(failed.head(200))]
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ calibration


def reliability_png(rows: list[dict[str, Any]], title: str) -> str:
    """Reliability diagram: accuracy per confidence bin (bar width = bin, label = n) against the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect calibration")
    for row in rows:
        if row["n"]:
            ax.bar(row["low"], row["accuracy"], width=row["high"] - row["low"], align="edge", alpha=0.75,
                   color="#4C72B0", edgecolor="white")
            ax.plot([row["mean_confidence"]], [row["accuracy"]], "o", color="#C44E52", ms=4)
            ax.text(row["low"] + (row["high"] - row["low"]) / 2, min(row["accuracy"] + 0.02, 1.0), str(row["n"]),
                    ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("calibrated confidence")
    ax.set_ylabel("share correct (test split)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _png(fig)


def risk_coverage_png(curve: list[dict[str, Any]], points: list[tuple[str, float, float]], title: str) -> str:
    """Error rate among answered against the share of answerable questions answered, over every threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    xs = [c["coverage_answerable"] or 0.0 for c in curve]
    ys = [c["error_rate"] for c in curve]
    ax.step(xs, ys, where="post", color="#4C72B0", label="all thresholds")
    for label, x, y in points:
        ax.plot([x], [y], "o", ms=6, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max([0.3, *ys]) * 1.05)
    ax.set_xlabel("coverage of answerable questions")
    ax.set_ylabel("error rate among answered")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def calibration_plots(artifact: dict[str, Any]) -> list[tuple[str, str]]:
    """The confidence model's test-split pictures, from its artifact (reliability table + risk-coverage curve)."""
    plots: list[tuple[str, str]] = []
    test = artifact.get("test", {})
    if artifact.get("reliability"):
        plots.append((
            f"Confidence reliability, test split (model {artifact.get('version')}, ECE {_fmt(test.get('ece'))})",
            reliability_png(artifact["reliability"], f"reliability (Brier {_fmt(test.get('brier'))})"),
        ))
    if test.get("curve"):
        points = [(f"target {t['target_error_rate']}", t["coverage_answerable"]["value"] or 0.0,
                   t["error_rate_answered"]["value"] or 0.0) for t in test.get("at_target", [])
                  if t["target_error_rate"] in (0.05, 0.1, 0.2)]
        plots.append(("Risk-coverage curve, test split", risk_coverage_png(test["curve"], points, "risk-coverage")))
    return plots


def _active_calibration(pipeline_config: dict[str, Any]) -> dict[str, Any] | None:
    """The packaged confidence artifact, when it is the one the evaluated pipeline ran with."""
    import json
    from importlib import resources

    version = (pipeline_config.get("calibration") or {}).get("version")
    packaged = resources.files("rag.answering").joinpath("calibration_default.json")
    if not version or not packaged.is_file():
        return None
    artifact = json.loads(packaged.read_text(encoding="utf-8"))
    return artifact if artifact.get("version") == version else None
