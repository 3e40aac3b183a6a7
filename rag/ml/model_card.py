"""The model card: intended use, data summary, metrics with CIs, slices, limitations, drift thresholds.

Generated from the run itself (never hand-edited), logged as ``model_card.md`` next to the model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rag.ml.analysis import DatasetAnalysis
from rag.ml.drift import REGISTRY
from rag.ml.serving import FeatureSchema, ServingInfo

if TYPE_CHECKING:
    from rag.ml.training import TrainingConfig, TrainingResult

DATA_DOC_NAMES = ("README.md", "SOURCE.md", "DATASHEET.md")


def _data_documentation(data: Path) -> tuple[str | None, str]:
    """The data's own documentation file next to the CSV (source, licence), if there is one."""
    for name in DATA_DOC_NAMES:
        doc = data.parent / name
        if doc.is_file():
            lines = []
            for line in doc.read_text(encoding="utf-8", errors="replace").strip().splitlines():
                if line.startswith("```") or line.lower().startswith("quick start"):
                    break  # usage examples are not data documentation
                lines.append(line)
            return str(doc), "\n".join(lines).strip()[:3000]
    return None, ""


def _metric_lines(metrics: dict[str, Any]) -> str:
    lines = ["| metric | validation (out-of-fold) | test (held out) |", "|---|---|---|"]
    for name in metrics["test"]:
        cells = []
        for split in ("validation", "test"):
            m = metrics[split][name]
            cells.append(f"{m.value:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}]" if m.ci_low is not None else f"{m.value}")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def _schema_lines(schema: FeatureSchema) -> str:
    lines = ["| feature | type | accepted values |", "|---|---|---|"]
    for f in schema.features:
        if f.kind == "categorical":
            accepted = ", ".join(f.categories or [])
        elif f.kind in {"integer", "float"}:
            accepted = f"[{f.minimum:g}, {f.maximum:g}]" if f.minimum is not None else "any"
        else:
            accepted = "true/false"
        lines.append(f"| {f.name} | {f.kind}{' (nullable)' if f.nullable else ''} | {accepted} |")
    return "\n".join(lines)


def render_model_card(
    result: TrainingResult,
    config: TrainingConfig,
    analysis: DatasetAnalysis,
    schema: FeatureSchema,
    serving: ServingInfo,
    slices: pd.DataFrame,
    versions: dict[str, str],
    commit: str | None,
) -> str:
    """Markdown model card for one training run."""
    from rag.ml.slices import format_slice_table

    test_auc = result.metrics["test"]["roc_auc"]
    warnings = "\n".join(f"- {w}" for w in result.warnings) or "- none"
    flagged = "\n".join(f"- {f}" for f in result.flagged_slices) or "- none"
    overview = _card_overview(result, config, analysis, serving, versions, commit)
    return overview + f"""## Evaluation (95 % percentile-bootstrap CIs, {config.n_resamples} resamples)
Headline: test ROC-AUC {test_auc.value:.4f} [{test_auc.ci_low:.4f}, {test_auc.ci_high:.4f}].

{_metric_lines(result.metrics)}

Validation = out-of-fold predictions on train+validation for the chosen configuration (slightly
optimistic: the same folds chose it). Test = the held-out set, scored once.

### Calibration (held-out test set; used for the serving interval)
| predicted probability | rows | observed positive rate | Wilson 95 % CI |
|---|---|---|---|
{_calibration_rows(serving)}

See `reliability.png` and `roc.png` in the run's artifacts.

## Slices
Test set; slices under {config.min_slice_size} rows are not evaluated; a slice is flagged when it is more than
{config.max_slice_gap} below overall and its CI excludes the overall value; `gap` > 0 means worse than overall.

{format_slice_table(slices) if len(slices) else "No sensitive columns declared (`--sensitive`)."}

Flagged slices:
{flagged}

{_sensitive_note(config, schema)}

## Input schema (requests outside it are rejected)
{_schema_lines(schema)}

## Warnings from training
{warnings}

## Limitations
- {result.data["test_rows"]} test rows: the CIs above are the honest precision of these estimates; slices
  under {config.min_slice_size} rows are not evaluated at all.
- Trained on one snapshot of data; performance on later or different populations is unknown until measured.
- Probabilities are only as calibrated as the reliability diagram shows; read the interval, not the point.
- Numeric inputs are accepted only within the training range (+/- {schema.range_margin:.0%} of its width).

## Monitoring and drift thresholds
Compare new inputs with the training reference (`drift_reference.csv` in this run) using
`rag drift --reference drift_reference.csv --current <new rows>.csv --exclude {config.target}`:
{_drift_lines()}

Escalation and what each alert means: `docs/MONITORING.md`.

## Reproduce
With a file of the same sha256 this gives identical metrics:

```bash
{_reproduce_command(config)}
```
"""


def _card_overview(
    result: TrainingResult,
    config: TrainingConfig,
    analysis: DatasetAnalysis,
    serving: ServingInfo,
    versions: dict[str, str],
    commit: str | None,
) -> str:
    """The model card up to its evaluation: model details, intended use, training data."""
    doc_path, doc_text = _data_documentation(config.data)
    balance = ", ".join(f"{k}: {v}" for k, v in (analysis.target.counts if analysis.target else {}).items())
    params = ", ".join(f"`{k}={v}`" for k, v in result.best_params.items())
    return f"""# Model card: {result.model_name} v{result.model_version}

Generated {datetime.now(UTC).isoformat(timespec="seconds")} by `rag train` (MLflow run `{result.run_id}`,
experiment `{result.experiment}`). Registered as `{result.model_name}` version {result.model_version}, alias
`{result.alias}`; promote with `rag promote-model {result.model_name}` (gated on held-out ROC-AUC).

## Model details
- Task: binary classification of `{config.target}`; positive class `{serving.positive_label}`,
  decision threshold {serving.threshold:g} on its probability.
- Estimator: `{config.model}` ({params}), chosen by {config.cv_folds}-fold stratified CV on ROC-AUC
  (CV mean {result.cv_roc_auc_mean:.4f} +/- {result.cv_roc_auc_std:.4f}).
- Seed {config.seed}; model artifact sha256 `{result.model_sha256}`; code commit `{commit or "unknown"}`.
- Libraries: {", ".join(f"{k} {v}" for k, v in versions.items())}.

## Intended use
Scoring {config.target!r} for rows drawn from the same population as the training data, as decision
support with a human in the loop, and as a reference implementation of the project's training discipline.
Out of scope: automated decisions about people, populations or time periods other than the training
data's, and any use where the slice gaps below have not been reviewed.

## Training data
- File `{config.data}`, sha256 `{result.data["sha256"]}`, {result.data["rows"]} rows.
- Split: {result.data["split"]}. Train+validation {result.data["train_validation_rows"]} rows, test
  {result.data["test_rows"]} rows.
- Class balance (train+validation): {balance}; imbalance ratio
  {analysis.target.imbalance_ratio if analysis.target else float("nan"):.2f}.
- Duplicates (train+validation): {analysis.duplicate_rows}; conflicting labels: {analysis.conflicting_duplicates}.
- Data documentation: {doc_path or "none found next to the file"}.

{chr(10).join("> " + line for line in doc_text.splitlines()) if doc_text else ""}

"""


def _calibration_rows(serving: ServingInfo) -> str:
    return "\n".join(
        f"| [{b.low:.3f}, {b.high:.3f}] | {b.count} | {b.observed_rate:.3f} | [{b.ci_low:.3f}, {b.ci_high:.3f}] |"
        for b in serving.calibration
    )


def _drift_lines() -> str:
    return "\n".join(
        f"- `{s.name}` ({', '.join(s.kinds)}): drift when {s.direction.replace('_', ' ')} {s.threshold:g}"
        + (" (Bonferroni-corrected across features)" if s.uses_p_value else "")
        for s in REGISTRY.values()
    )


def _reproduce_command(config: TrainingConfig) -> str:
    return " ".join(
        [
            f"rag train --data {config.data} --target {config.target} --model {config.model} --seed {config.seed}",
            *(f"--sensitive {c}" for c in config.sensitive or []),
            *(f"--drop {c}" for c in config.drop),
            *([f"--positive-label {config.positive_label}"] if config.positive_label else []),
            f"--min-slice-size {config.min_slice_size}",
            f"--test-size {config.test_size:g} --cv-folds {config.cv_folds} --n-resamples {config.n_resamples}",
        ]
    )


def _sensitive_note(config: TrainingConfig, schema: FeatureSchema) -> str:
    sensitive_in_features = [c for c in config.sensitive or [] if c in schema.names]
    if not sensitive_in_features:
        return "Sensitive attributes are not model inputs."
    return (
        f"The sensitive attributes {sensitive_in_features} are model inputs. Retrain with "
        f"`--drop {' --drop '.join(sensitive_in_features)}` to exclude them (the slices stay measurable)."
    )
