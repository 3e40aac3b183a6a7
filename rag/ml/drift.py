"""Distribution drift between a reference sample and a current sample, as a small registry of tests.

Tests (``REGISTRY``), each with the direction of its decision and a default threshold:

==============  ===========  =====================================  =========================================
test            columns      statistic                              drift when
==============  ===========  =====================================  =========================================
``ks``          numeric      two-sample Kolmogorov-Smirnov D        p < alpha / m  (Bonferroni, see below)
``chi2``        categorical  chi-square of the 2 x K count table    p < alpha / m
``psi``         both         Population Stability Index             PSI > 0.2 (0.1-0.2 is reported as minor)
``wasserstein`` numeric      W1 distance / reference std            W1/std > 0.2 (a small effect)
==============  ===========  =====================================  =========================================

Multiple testing. A dataset with k features runs k tests; flagging it when any test has p < 0.05 would
flag a random split of one table 1-(1-0.05)^k of the time. The dataset verdict therefore applies a
Bonferroni correction over all p-value tests in the report (``ks``, ``chi2`` and, for query logs, the
embedding domain classifier): a test counts as drift only when p < alpha / m, m = number of p-value tests
run, which keeps the family-wise false-positive rate at or below alpha. PSI and Wasserstein are effect
sizes, not probabilities: they are compared with fixed thresholds, and flag a dataset when ANY feature
exceeds its threshold. Their false-positive rate grows as samples shrink, so PSI's threshold is raised,
for small windows, to its noise bar: the PSI that sampling noise alone exceeds with probability alpha / m
(under no drift PSI * n_ref * n_cur / (n_ref + n_cur) is approximately chi-square with bins - 1 degrees
of freedom). A PSI decided by its noise bar is in effect a significance test, so it joins the Bonferroni
family (m counts the p-value tests plus these PSIs), and the whole verdict keeps its family-wise error
at or below alpha. With the default 10 bins and windows of a few hundred rows the fixed 0.2 dominates
and m is the number of p-value tests. Each PSI result reports its noise floor (expected PSI under no drift,
(bins - 1) * (1/n_ref + 1/n_cur)) and the report warns when it exceeds half the threshold.
Measured false-positive rates over random splits: ``bench/drift_fpr.py``.

Binning for PSI. Numeric: cut points are the reference's quantiles at 1/B, ..., (B-1)/B (duplicates
removed), so bins are fixed on the reference and hold about 1/B of it each; the outer bins are open
(-inf, q1] and (q_last, inf), so current values beyond the reference range count in them. B = 10,
reduced for small samples to keep about 20 rows per bin in the smaller sample
(B = min(10, max(2, n_min // 20))): with few rows per bin PSI measures sampling noise rather than drift
(its noise floor grows with B). A constant reference gets the three bins below / equal / above its value.
Categorical: one bin per category seen in either sample. In both cases
missing values (NaN/None) form their own bin, so a change in the missing rate shows up. A bin with a
share of 0 in one sample gets share ``epsilon`` = 1e-4 there (no renormalisation), so PSI stays finite;
bins empty in both samples contribute 0.

KS, chi-square and Wasserstein drop missing values (the PSI missing bin covers them). Chi-square pools
categories whose expected count is under 5 into ``<other>`` and, for a 2 x 2 table with an expected
count under 5, uses Fisher's exact test instead; it is computed without Yates' correction, so for two
categories it equals the two-proportion z-test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from rag.errors import InvalidInputError
from rag.ml.analysis import is_numeric_column

ColumnKind = Literal["numeric", "categorical"]
MISSING = "<missing>"
OTHER = "<other>"
PSI_EPSILON = 1e-4
PSI_BINS = 10
PSI_MIN_ROWS_PER_BIN = 20
PSI_MINOR = 0.1
PSI_MAJOR = 0.2
# A fifth of a reference standard deviation: Cohen's "small effect" size.
WASSERSTEIN_THRESHOLD = 0.2
DEFAULT_ALPHA = 0.05
MIN_EXPECTED = 5.0
HISTOGRAM_BINS = 20


@dataclass(frozen=True)
class StatOutcome:
    """What one test computed: the statistic, its p-value (None for effect sizes) and details to show."""

    statistic: float
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


@dataclass(frozen=True)
class DriftTestSpec:
    """A registered test: which columns it applies to and how its result is turned into a decision."""

    name: str
    title: str
    kinds: tuple[ColumnKind, ...]
    statistic: str
    uses_p_value: bool
    threshold: float
    run: Callable[[np.ndarray, np.ndarray], StatOutcome]
    description: str

    @property
    def direction(self) -> str:
        return "p_value_below" if self.uses_p_value else "statistic_above"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kinds": list(self.kinds),
            "statistic": self.statistic,
            "direction": self.direction,
            "default_threshold": self.threshold,
            "description": self.description,
        }


# ---------------------------------------------------------------- helpers


def _is_missing(values: np.ndarray) -> np.ndarray:
    return pd.isna(pd.Series(values, dtype="object")).to_numpy()


def _numeric(values: np.ndarray) -> np.ndarray:
    """Finite floats only (NaN dropped): KS and Wasserstein work on observed values."""
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    return array[np.isfinite(array)]


def _labels(values: np.ndarray) -> np.ndarray:
    series = pd.Series(values, dtype="object")
    return series.where(series.notna(), MISSING).map(str).to_numpy(dtype=object)


def _shares(counts: np.ndarray, total: int) -> np.ndarray:
    return counts / total if total else np.zeros_like(counts, dtype=float)


def _psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, epsilon: float) -> tuple[float, np.ndarray]:
    ref_share = _shares(ref_counts, int(ref_counts.sum()))
    cur_share = _shares(cur_counts, int(cur_counts.sum()))
    both_empty = (ref_counts == 0) & (cur_counts == 0)
    ref_adj = np.where(ref_share == 0, epsilon, ref_share)
    cur_adj = np.where(cur_share == 0, epsilon, cur_share)
    terms = np.where(both_empty, 0.0, (cur_adj - ref_adj) * np.log(cur_adj / ref_adj))
    return float(terms.sum()), terms


def psi_noise_floor(n_bins: int, n_reference: int, n_current: int) -> float:
    """Expected PSI of two samples from ONE distribution: (bins-1)(1/n_ref + 1/n_cur) (chi-square mean)."""
    if n_reference == 0 or n_current == 0:
        return math.inf
    return max(n_bins - 1, 0) * (1.0 / n_reference + 1.0 / n_current)


def psi_bin_count(n_reference: int, n_current: int) -> int:
    """10 quantile bins, fewer for small samples: about 20 rows per bin in the smaller sample (2 at least)."""
    return int(min(PSI_BINS, max(2, min(n_reference, n_current) // PSI_MIN_ROWS_PER_BIN)))


def numeric_bin_edges(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Interior cut points of the PSI bins: unique reference quantiles at 1/B, ..., (B-1)/B (NaN ignored).

    A constant reference returns its one value; ``assign_numeric_bins`` then uses below/equal/above bins.
    """
    clean = _numeric(reference)
    if clean.size == 0:
        return np.array([], dtype=float)
    if clean.min() == clean.max():
        return np.array([float(clean[0])])
    return np.unique(np.quantile(clean, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def assign_numeric_bins(
    values: np.ndarray, cuts: np.ndarray, *, constant: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Bin index per value (-1 = missing) and bin labels: ``(-inf, c1], (c1, c2], ..., (c_last, inf)``.

    The outer bins are open, so current values beyond the reference range fall into them. For a
    constant reference (``constant=True``, one cut ``c``) the bins are ``< c``, ``= c`` and ``> c``.
    """
    array = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    missing = ~np.isfinite(array)
    if cuts.size == 0:
        return np.full(array.shape, -1), []
    if constant:
        c = cuts[0]
        idx = np.where(array < c, 0, np.where(array == c, 1, 2))
        labels = [f"<{c:g}", f"={c:g}", f">{c:g}"]
    else:
        idx = np.searchsorted(cuts, array, side="left")
        labels = [f"<={cuts[0]:g}"]
        labels += [f"({a:g}, {b:g}]" for a, b in itertools.pairwise(cuts)]
        labels.append(f">{cuts[-1]:g}")
    return np.where(missing, -1, idx), labels


def population_stability_index(
    reference: np.ndarray | Sequence[Any],
    current: np.ndarray | Sequence[Any],
    *,
    kind: ColumnKind = "numeric",
    bins: int | None = None,
    epsilon: float = PSI_EPSILON,
) -> StatOutcome:
    """PSI with bins fixed on the reference (see the module docstring for binning and zero-bin handling)."""
    ref = np.asarray(reference, dtype=object if kind == "categorical" else None)
    cur = np.asarray(current, dtype=object if kind == "categorical" else None)
    if ref.size == 0 or cur.size == 0:
        return StatOutcome(math.nan, skipped="empty sample")
    if kind == "numeric":
        edges = numeric_bin_edges(ref, bins or psi_bin_count(ref.size, cur.size))
        observed = _numeric(ref)
        constant = bool(observed.size and observed.min() == observed.max())
        ref_idx, labels = assign_numeric_bins(ref, edges, constant=constant)
        cur_idx, _ = assign_numeric_bins(cur, edges, constant=constant)
        n_bins = len(labels)
        ref_counts = np.bincount(ref_idx[ref_idx >= 0], minlength=n_bins).astype(float)
        cur_counts = np.bincount(cur_idx[cur_idx >= 0], minlength=n_bins).astype(float)
        ref_counts = np.append(ref_counts, float((ref_idx < 0).sum()))
        cur_counts = np.append(cur_counts, float((cur_idx < 0).sum()))
        labels = [*labels, MISSING]
    else:
        ref_lab, cur_lab = _labels(ref), _labels(cur)
        labels = sorted(set(ref_lab.tolist()) | set(cur_lab.tolist()))
        position = {label: i for i, label in enumerate(labels)}
        ref_counts = np.bincount([position[v] for v in ref_lab], minlength=len(labels)).astype(float)
        cur_counts = np.bincount([position[v] for v in cur_lab], minlength=len(labels)).astype(float)
        edges = np.array([])
    value, terms = _psi_from_counts(ref_counts, cur_counts, epsilon)
    occupied = int(((ref_counts > 0) | (cur_counts > 0)).sum())
    floor = psi_noise_floor(occupied, ref.size, cur.size)
    details = {
        "bins": labels,
        "edges": [float(e) for e in edges],
        "reference_share": [round(float(s), 6) for s in _shares(ref_counts, ref.size)],
        "current_share": [round(float(s), 6) for s in _shares(cur_counts, cur.size)],
        "contribution": [round(float(t), 6) for t in terms],
        "epsilon": epsilon,
        "noise_floor": round(floor, 6),
        "occupied_bins": occupied,
        "severity": "major" if value > PSI_MAJOR else "minor" if value > PSI_MINOR else "stable",
    }
    return StatOutcome(value, None, details)


def ks_test(reference: np.ndarray | Sequence[Any], current: np.ndarray | Sequence[Any]) -> StatOutcome:
    """Two-sample KS on the observed (non-missing) values; ties make it conservative."""
    from scipy.stats import ks_2samp

    ref, cur = _numeric(np.asarray(reference)), _numeric(np.asarray(current))
    if ref.size == 0 or cur.size == 0:
        return StatOutcome(math.nan, math.nan, skipped="no observed values in one sample")
    result = ks_2samp(ref, cur)
    return StatOutcome(float(result.statistic), float(result.pvalue), {"method": "scipy.stats.ks_2samp"})


def _pool_rare(table: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    """Merge categories with an expected count under 5 into ``<other>`` until every expected count is >= 5."""
    labels = list(labels)
    while table.shape[1] > 1:
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        low = [int(i) for i in np.where(expected.min(axis=0) < MIN_EXPECTED)[0]]
        if not low:
            break
        if len(low) == 1:  # a lone sparse category is merged with the smallest other one
            others = [int(i) for i in np.argsort(table.sum(axis=0), kind="stable") if int(i) != low[0]]
            low.append(others[0])
        keep = [i for i in range(table.shape[1]) if i not in low]
        table = np.hstack([table[:, keep], table[:, low].sum(axis=1, keepdims=True)])
        labels = [labels[i] for i in keep] + [OTHER]
    return table, labels


def chi_square_test(reference: np.ndarray | Sequence[Any], current: np.ndarray | Sequence[Any]) -> StatOutcome:
    """Chi-square test of homogeneity on category counts (missing values dropped, rare ones pooled)."""
    from scipy.stats import chi2_contingency, fisher_exact

    ref_lab, cur_lab = (
        _labels(np.asarray(reference, dtype=object)),
        _labels(np.asarray(current, dtype=object)),
    )
    ref_lab, cur_lab = ref_lab[ref_lab != MISSING], cur_lab[cur_lab != MISSING]
    if ref_lab.size == 0 or cur_lab.size == 0:
        return StatOutcome(math.nan, math.nan, skipped="no observed values in one sample")
    labels = sorted(set(ref_lab.tolist()) | set(cur_lab.tolist()))
    table = np.array(
        [
            [int((ref_lab == label).sum()) for label in labels],
            [int((cur_lab == label).sum()) for label in labels],
        ],
        dtype=float,
    )
    raw_labels = list(labels)
    if table.shape[1] == 2:
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        if expected.min() < MIN_EXPECTED:
            _, p_value = fisher_exact(table.astype(int))
            return StatOutcome(
                math.nan,
                float(p_value),
                {
                    "method": "fisher_exact (expected count < 5)",
                    "categories": raw_labels,
                    "counts": table.astype(int).tolist(),
                },
            )
    table, labels = _pool_rare(table, labels)
    if table.shape[1] < 2:
        return StatOutcome(0.0, 1.0, {"method": "single category", "categories": labels})
    if table.shape[1] == 2:
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
        if expected.min() < MIN_EXPECTED:
            _, p_value = fisher_exact(table.astype(int))
            return StatOutcome(
                math.nan,
                float(p_value),
                {
                    "method": "fisher_exact after pooling",
                    "categories": labels,
                    "counts": table.astype(int).tolist(),
                },
            )
    result = chi2_contingency(table, correction=False)
    return StatOutcome(
        float(result.statistic),
        float(result.pvalue),
        {
            "method": "chi2_contingency (no Yates correction)",
            "dof": int(result.dof),
            "categories": labels,
            "counts": table.astype(int).tolist(),
            "pooled": labels != raw_labels,
        },
    )


def wasserstein_test(reference: np.ndarray | Sequence[Any], current: np.ndarray | Sequence[Any]) -> StatOutcome:
    """W1 distance in reference standard deviations (absolute when the reference is constant)."""
    from scipy.stats import wasserstein_distance

    ref, cur = _numeric(np.asarray(reference)), _numeric(np.asarray(current))
    if ref.size == 0 or cur.size == 0:
        return StatOutcome(math.nan, skipped="no observed values in one sample")
    distance = float(wasserstein_distance(ref, cur))
    scale = float(np.std(ref, ddof=1)) if ref.size > 1 else 0.0
    normalised = scale > 0
    return StatOutcome(
        distance / scale if normalised else distance,
        None,
        {
            "distance": distance,
            "reference_std": scale,
            "normalisation": "reference std" if normalised else "none (constant reference)",
        },
    )


def _psi_numeric(reference: np.ndarray, current: np.ndarray) -> StatOutcome:
    return population_stability_index(reference, current, kind="numeric")


def _psi_categorical(reference: np.ndarray, current: np.ndarray) -> StatOutcome:
    return population_stability_index(reference, current, kind="categorical")


REGISTRY: dict[str, DriftTestSpec] = {
    "ks": DriftTestSpec(
        "ks",
        "Kolmogorov-Smirnov",
        ("numeric",),
        "D",
        True,
        DEFAULT_ALPHA,
        ks_test,
        "Largest gap between the two empirical CDFs; sensitive to any change of a numeric distribution.",
    ),
    "chi2": DriftTestSpec(
        "chi2",
        "Chi-square",
        ("categorical",),
        "chi2",
        True,
        DEFAULT_ALPHA,
        chi_square_test,
        "Homogeneity of category frequencies (Fisher's exact test for sparse 2x2 tables).",
    ),
    "psi": DriftTestSpec(
        "psi",
        "Population Stability Index",
        ("numeric", "categorical"),
        "PSI",
        False,
        PSI_MAJOR,
        _psi_numeric,
        "Binned divergence with bins fixed on the reference: <0.1 stable, 0.1-0.2 minor, >0.2 major.",
    ),
    "wasserstein": DriftTestSpec(
        "wasserstein",
        "Wasserstein-1 / std",
        ("numeric",),
        "W1/std",
        False,
        WASSERSTEIN_THRESHOLD,
        wasserstein_test,
        "Earth mover's distance in reference standard deviations: how far values moved.",
    ),
}
DEFAULT_TESTS: dict[ColumnKind, tuple[str, ...]] = {
    "numeric": ("ks", "psi", "wasserstein"),
    "categorical": ("chi2", "psi"),
}


def run_test(name: str, reference: Any, current: Any, kind: ColumnKind) -> StatOutcome:
    """Run one registered test on one column (PSI picks its binning from ``kind``)."""
    if name not in REGISTRY:
        raise InvalidInputError(f"unknown drift test {name!r}", hint=f"known tests: {sorted(REGISTRY)}")
    spec = REGISTRY[name]
    if kind not in spec.kinds:
        raise InvalidInputError(f"test {name!r} does not apply to {kind} columns")
    if name == "psi" and kind == "categorical":
        return _psi_categorical(np.asarray(reference, dtype=object), np.asarray(current, dtype=object))
    return spec.run(np.asarray(reference), np.asarray(current))


# ---------------------------------------------------------------- results and the dataset verdict


class DriftResult(BaseModel):
    """One test on one feature, with the threshold actually applied (Bonferroni alpha for p-value tests)."""

    feature: str
    test: str
    kind: str
    statistic: float | None
    p_value: float | None
    uses_p_value: bool
    threshold: float | None = Field(None, description="Applied threshold, filled by the verdict.")
    min_effect: float | None = Field(None, description="p-value tests: the statistic must also reach this.")
    drift: bool = False
    n_reference: int
    n_current: int
    skipped: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Histogram(BaseModel):
    """Reference vs current distribution of one feature, for the HTML report (shares, not counts)."""

    kind: str
    labels: list[str]
    reference: list[float]
    current: list[float]


class DriftReport(BaseModel):
    """A drift comparison: per-test results, which test families fired, and the dataset verdict."""

    schema_version: int = 1
    kind: Literal["tabular", "query_log"]
    generated_at: str
    reference: dict[str, Any]
    current: dict[str, Any]
    alpha: float
    correction: str = "bonferroni"
    p_value_tests: int
    bonferroni_m: int = Field(description="Bonferroni family size: p-value tests + PSIs decided by their noise bar.")
    corrected_alpha: float
    thresholds: dict[str, float]
    results: list[DriftResult]
    families: dict[str, bool] = Field(description="Per test family: did it flag drift?")
    drift: bool
    drifted_features: list[str]
    warnings: list[str] = Field(default_factory=list)
    histograms: dict[str, Histogram] = Field(default_factory=dict)
    trigger: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The report without histograms and bin details: what a CLI or a metrics gauge needs."""
        return {
            "kind": self.kind,
            "generated_at": self.generated_at,
            "drift": self.drift,
            "families": self.families,
            "drifted_features": self.drifted_features,
            "alpha": self.alpha,
            "corrected_alpha": self.corrected_alpha,
            "bonferroni_m": self.bonferroni_m,
            "reference": self.reference,
            "current": self.current,
            "warnings": self.warnings,
            "results": [
                {
                    "feature": r.feature,
                    "test": r.test,
                    "statistic": r.statistic,
                    "p_value": r.p_value,
                    "threshold": r.threshold,
                    "drift": r.drift,
                    "skipped": r.skipped,
                }
                for r in self.results
            ],
        }


def default_thresholds(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    values = {name: spec.threshold for name, spec in REGISTRY.items() if not spec.uses_p_value}
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = float(value)
    return values


def psi_noise_quantile(result: DriftResult, level: float) -> float | None:
    """The PSI that sampling noise alone exceeds with probability ``level`` for these sample sizes.

    Under "no drift", PSI * n_ref * n_cur / (n_ref + n_cur) is approximately chi-square with (bins - 1)
    degrees of freedom (PSI is a symmetrised chi-square divergence), so small windows get a higher bar.
    """
    from scipy.stats import chi2

    bins = int(result.details.get("occupied_bins", 0))
    if bins < 2 or result.n_reference == 0 or result.n_current == 0:
        return None
    scale = 1.0 / result.n_reference + 1.0 / result.n_current
    return round(float(chi2.ppf(1.0 - level, df=bins - 1) * scale), 6)


@dataclass(frozen=True)
class Verdict:
    results: list[DriftResult]
    families: dict[str, bool]
    p_value_tests: int
    bonferroni_m: int
    corrected_alpha: float


def apply_verdict(results: list[DriftResult], *, alpha: float, thresholds: Mapping[str, float]) -> Verdict:
    """Decide each result: one Bonferroni family, fixed thresholds for effect sizes (module docstring).

    The Bonferroni family holds every p-value test, plus each PSI whose noise bar (rather than the fixed
    threshold) would decide it: such a PSI is in effect a significance test too, so it spends alpha.
    """
    if not 0 < alpha < 1:
        raise InvalidInputError(f"alpha must be in (0, 1), got {alpha}")
    tested = [r for r in results if r.uses_p_value and r.skipped is None and r.p_value is not None]
    psi = [r for r in results if r.test == "psi" and r.skipped is None and r.statistic is not None]
    psi_limit = thresholds.get("psi", PSI_MAJOR)
    first_level = alpha / max(len(tested) + len(psi), 1)
    binding = [r for r in psi if (psi_noise_quantile(r, first_level) or 0.0) > psi_limit]
    m = max(len(tested) + len(binding), 1)
    corrected = alpha / m
    families: dict[str, bool] = {}
    decided: list[DriftResult] = []
    for result in results:
        update: dict[str, Any] = {}
        if result.skipped is not None:
            update = {"drift": False, "threshold": None}
        elif result.uses_p_value:
            significant = result.p_value is not None and result.p_value < corrected
            big_enough = result.min_effect is None or (
                result.statistic is not None and result.statistic >= result.min_effect
            )
            update = {"threshold": corrected, "drift": bool(significant and big_enough)}
        else:
            limit = thresholds.get(result.test)
            if limit is None:
                raise InvalidInputError(f"no threshold for effect-size test {result.test!r}")
            if result.test == "psi":
                noise = psi_noise_quantile(result, corrected)
                if noise is not None:
                    result = result.model_copy(update={"details": {**result.details, "noise_quantile": noise}})
                    limit = max(limit, noise)
            stat = result.statistic
            update = {
                "threshold": limit,
                "drift": bool(stat is not None and math.isfinite(stat) and stat > limit),
            }
        decided_result = result.model_copy(update=update)
        decided.append(decided_result)
        families[result.test] = families.get(result.test, False) or decided_result.drift
    return Verdict(decided, families, len(tested), m, corrected)


def infer_kinds(
    frame: pd.DataFrame,
    columns: Sequence[str],
    overrides: Mapping[str, ColumnKind] | None = None,
    max_categories: int = 10,
) -> dict[str, ColumnKind]:
    """Numeric when numeric with more than ``max_categories`` distinct values, categorical otherwise."""
    kinds: dict[str, ColumnKind] = {}
    for column in columns:
        if overrides and column in overrides:
            kinds[column] = overrides[column]
        else:
            kinds[column] = "numeric" if is_numeric_column(frame[column], max_categories) else "categorical"
    return kinds


def histogram(reference: Any, current: Any, kind: ColumnKind, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Shares per equal-width bin over the joint range (numeric) or per category (at most 30 shown)."""
    if kind == "numeric":
        ref, cur = _numeric(np.asarray(reference)), _numeric(np.asarray(current))
        both = np.concatenate([ref, cur])
        if both.size == 0:
            return Histogram(kind=kind, labels=[], reference=[], current=[])
        low, high = float(both.min()), float(both.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, bins + 1)
        ref_counts, _ = np.histogram(ref, edges)
        cur_counts, _ = np.histogram(cur, edges)
        labels = [f"{(a + b) / 2:.4g}" for a, b in itertools.pairwise(edges)]
        return Histogram(
            kind=kind,
            labels=labels,
            reference=_shares(ref_counts, ref.size).round(6).tolist(),
            current=_shares(cur_counts, cur.size).round(6).tolist(),
        )
    ref_lab, cur_lab = (
        _labels(np.asarray(reference, dtype=object)),
        _labels(np.asarray(current, dtype=object)),
    )
    ref_counts = pd.Series(ref_lab).value_counts()
    cur_counts = pd.Series(cur_lab).value_counts()
    labels = list(ref_counts.add(cur_counts, fill_value=0).sort_values(ascending=False).index[:30])
    return Histogram(
        kind=kind,
        labels=[str(label) for label in labels],
        reference=[round(float(ref_counts.get(label, 0)) / max(ref_lab.size, 1), 6) for label in labels],
        current=[round(float(cur_counts.get(label, 0)) / max(cur_lab.size, 1), 6) for label in labels],
    )


def feature_results(
    name: str, reference: Any, current: Any, kind: ColumnKind, tests: Sequence[str] | None = None
) -> list[DriftResult]:
    """Run the applicable tests on one feature (``tests`` limits them; default ``DEFAULT_TESTS[kind]``)."""
    chosen = [t for t in (tests or DEFAULT_TESTS[kind]) if kind in REGISTRY[t].kinds]
    ref, cur = np.asarray(reference, dtype=object), np.asarray(current, dtype=object)
    results = []
    for test in chosen:
        outcome = run_test(test, ref, cur, kind)
        results.append(
            DriftResult(
                feature=name,
                test=test,
                kind=kind,
                statistic=None if outcome.statistic is None or math.isnan(outcome.statistic) else outcome.statistic,
                p_value=None if outcome.p_value is None or math.isnan(outcome.p_value) else outcome.p_value,
                uses_p_value=REGISTRY[test].uses_p_value,
                n_reference=int(ref.size),
                n_current=int(cur.size),
                skipped=outcome.skipped,
                details=outcome.details,
            )
        )
    return results


def build_report(
    results: list[DriftResult],
    *,
    kind: Literal["tabular", "query_log"],
    reference: dict[str, Any],
    current: dict[str, Any],
    alpha: float = DEFAULT_ALPHA,
    thresholds: Mapping[str, float] | None = None,
    histograms: dict[str, Histogram] | None = None,
    warnings: list[str] | None = None,
) -> DriftReport:
    """Apply the verdict to raw results and assemble the report (shared by tabular and query-log drift)."""
    limits = default_thresholds(thresholds)
    verdict = apply_verdict(results, alpha=alpha, thresholds=limits)
    decided, families = verdict.results, verdict.families
    notes = list(warnings or [])
    psi_limit = limits.get("psi", PSI_MAJOR)
    for result in decided:
        floor = result.details.get("noise_floor") if result.test == "psi" else None
        if floor is not None and floor > psi_limit / 2:
            notes.append(
                f"PSI of {result.feature!r}: samples of {result.n_reference} and {result.n_current} rows "
                f"give a noise floor of {floor:.3f}, more than half the {psi_limit:g} threshold: use larger windows"
            )
        if result.skipped:
            notes.append(f"{result.test} on {result.feature!r} skipped: {result.skipped}")
        floor_p = result.details.get("min_p_value")
        if floor_p is not None and floor_p >= verdict.corrected_alpha:
            notes.append(
                f"{result.test} on {result.feature!r}: its smallest possible p-value {floor_p:.3g} cannot reach the "
                f"corrected alpha {verdict.corrected_alpha:.3g}; use more permutations"
            )
    drifted = sorted({r.feature for r in decided if r.drift})
    return DriftReport(
        kind=kind,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        reference=reference,
        current=current,
        alpha=alpha,
        p_value_tests=verdict.p_value_tests,
        bonferroni_m=verdict.bonferroni_m,
        corrected_alpha=verdict.corrected_alpha,
        thresholds=limits,
        results=decided,
        families=families,
        drift=any(families.values()),
        drifted_features=drifted,
        warnings=notes,
        histograms=histograms or {},
    )


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    column_kinds: Mapping[str, ColumnKind] | None = None,
    tests: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    thresholds: Mapping[str, float] | None = None,
    max_categories: int = 10,
    reference_info: dict[str, Any] | None = None,
    current_info: dict[str, Any] | None = None,
    with_histograms: bool = True,
) -> DriftReport:
    """Drift of every shared column of two tables; column kinds are inferred from the reference.

    ``tests`` restricts the registry (e.g. ``["ks", "chi2"]``); a test runs on the columns whose kind it
    supports. Columns present in only one table are an input error: a schema change is not drift.
    """
    if reference.empty or current.empty:
        raise InvalidInputError(
            f"drift needs rows in both samples (reference {len(reference)}, current {len(current)})"
        )
    unknown = [t for t in (tests or []) if t not in REGISTRY]
    if unknown:
        raise InvalidInputError(f"unknown drift tests {unknown}", hint=f"known tests: {sorted(REGISTRY)}")
    if columns is None:
        only_ref = sorted(set(reference.columns) - set(current.columns) - set(exclude))
        only_cur = sorted(set(current.columns) - set(reference.columns) - set(exclude))
        if only_ref or only_cur:
            raise InvalidInputError(
                f"the two tables have different columns (only in reference: {only_ref}, only in current: {only_cur})",
                hint="pass --exclude for columns that should not be compared",
            )
        columns = [c for c in reference.columns if c not in set(exclude)]
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise InvalidInputError(f"columns {missing} are missing from one of the tables")
    kinds = infer_kinds(reference, columns, column_kinds, max_categories)
    results: list[DriftResult] = []
    histograms: dict[str, Histogram] = {}
    for column in columns:
        ref_values = reference[column].to_numpy(dtype=object)
        cur_values = current[column].to_numpy(dtype=object)
        wanted = tests or DEFAULT_TESTS[kinds[column]]
        results += feature_results(str(column), ref_values, cur_values, kinds[column], wanted)
        if with_histograms:
            histograms[str(column)] = histogram(ref_values, cur_values, kinds[column])
    return build_report(
        results,
        kind="tabular",
        reference={"rows": len(reference), **(reference_info or {})},
        current={"rows": len(current), **(current_info or {})},
        alpha=alpha,
        thresholds=thresholds,
        histograms=histograms,
    )
