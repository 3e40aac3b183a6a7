from __future__ import annotations

import base64
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from rag.cli import app
from rag.errors import InvalidInputError
from rag.ml.drift import (
    PSI_EPSILON,
    REGISTRY,
    DriftReport,
    chi_square_test,
    compare_frames,
    ks_test,
    population_stability_index,
    wasserstein_test,
)
from rag.ml.drift_report import LATEST, latest_drift_status, write_report
from rag.settings import Settings


def _psi(ref: list[float], cur: list[float]) -> float:
    """The textbook formula, with epsilon for empty shares."""
    total = 0.0
    for r, c in zip(ref, cur, strict=True):
        if r == 0 and c == 0:
            continue
        r, c = max(r, PSI_EPSILON), max(c, PSI_EPSILON)
        total += (c - r) * math.log(c / r)
    return total


# ---------------------------------------------------------------- single tests against references


def test_ks_equals_scipy() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    expected = stats.ks_2samp(a, b)
    got = ks_test(np.append(a, np.nan), b)  # NaN is dropped
    assert got.statistic == pytest.approx(expected.statistic)
    assert got.p_value == pytest.approx(expected.pvalue)


def test_chi_square_equals_scipy_and_uses_fisher_for_sparse_tables() -> None:
    ref = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    cur = ["a"] * 40 + ["b"] * 40 + ["c"] * 20 + [None] * 5
    expected = stats.chi2_contingency(np.array([[60, 30, 10], [40, 40, 20]]), correction=False)
    got = chi_square_test(ref, cur)
    assert got.statistic == pytest.approx(expected.statistic)
    assert got.p_value == pytest.approx(expected.pvalue)
    assert got.details["dof"] == 2

    sparse = chi_square_test([True] * 48 + [False] * 2, [True] * 46 + [False] * 4)  # expected 3 < 5
    assert sparse.p_value == pytest.approx(stats.fisher_exact([[2, 48], [4, 46]]).pvalue)
    assert "fisher" in sparse.details["method"]


def test_chi_square_pools_rare_categories() -> None:
    ref = ["a"] * 100 + ["b"] * 100 + ["rare1"] * 2 + ["rare2"] * 1
    cur = ["a"] * 100 + ["b"] * 100 + ["rare1"] * 1
    got = chi_square_test(ref, cur)
    assert "<other>" in got.details["categories"] and got.details["pooled"]
    assert got.p_value > 0.5


def test_two_category_chi_square_is_the_two_proportion_z_test() -> None:
    ref = [True] * 30 + [False] * 170
    cur = [True] * 50 + [False] * 150
    p1, p2, n = 30 / 200, 50 / 200, 200
    pooled = 80 / 400
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (2 / n))
    got = chi_square_test(ref, cur)
    assert got.statistic == pytest.approx(z * z)
    assert got.p_value == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_psi_categorical_hand_computed() -> None:
    ref = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cur = ["a"] * 30 + ["b"] * 30 + ["c"] * 40
    got = population_stability_index(ref, cur, kind="categorical")
    assert got.statistic == pytest.approx(0.2 * math.log(0.5 / 0.3) + 0.2 * math.log(2.0))
    assert got.statistic == pytest.approx(_psi([0.5, 0.3, 0.2], [0.3, 0.3, 0.4]))
    assert got.details["severity"] == "major"


def test_psi_numeric_bins_come_from_reference_quantiles_and_empty_bins_get_epsilon() -> None:
    ref = np.arange(100.0)
    cur = np.concatenate([np.arange(25.0), np.arange(25.0), np.arange(50.0, 100.0)])  # 2nd quartile empty
    got = population_stability_index(ref, cur, kind="numeric", bins=4)
    assert got.details["edges"] == pytest.approx(list(np.quantile(ref, [0.25, 0.5, 0.75])))
    assert got.details["reference_share"][:4] == pytest.approx([0.25] * 4)
    assert got.details["current_share"][:4] == pytest.approx([0.5, 0.0, 0.25, 0.25])
    assert got.statistic == pytest.approx(_psi([0.25] * 4, [0.5, 0.0, 0.25, 0.25]))
    # a reference-empty bin (a new category) is finite thanks to epsilon
    new_cat = population_stability_index(["a"] * 10, ["a"] * 9 + ["new"], kind="categorical")
    assert new_cat.statistic == pytest.approx(_psi([1.0, 0.0], [0.9, 0.1]))


def test_psi_values_beyond_the_reference_range_land_in_the_open_outer_bins() -> None:
    ref = np.arange(100.0)
    got = population_stability_index(ref, ref + 1000, kind="numeric", bins=4)
    assert got.details["current_share"][:4] == pytest.approx([0, 0, 0, 1.0])
    assert got.statistic > 1.0


def test_psi_of_identical_samples_is_zero() -> None:
    values = np.random.default_rng(1).normal(size=500)
    assert population_stability_index(values, values).statistic == pytest.approx(0.0)


def test_psi_constant_feature() -> None:
    same = population_stability_index([5.0] * 50, [5.0] * 40)
    assert same.statistic == pytest.approx(0.0)
    assert same.details["bins"][:3] == ["<5", "=5", ">5"]
    moved = population_stability_index([5.0] * 50, [5.0] * 30 + [7.0] * 10)
    assert moved.statistic == pytest.approx(_psi([0, 1.0, 0], [0, 0.75, 0.25]))
    below = population_stability_index([5.0] * 50, [5.0] * 30 + [1.0] * 10)
    assert below.statistic == pytest.approx(moved.statistic)  # a drop below is caught as well
    w = wasserstein_test([5.0] * 50, [7.0] * 50)
    assert w.statistic == pytest.approx(2.0) and "constant" in w.details["normalisation"]


def test_psi_counts_missing_values_in_their_own_bin() -> None:
    observed = np.tile(np.arange(90.0), 2)
    ref = np.concatenate([observed[:180], [np.nan] * 20])  # 10 % missing
    cur = np.concatenate([np.arange(0.0, 90.0, 0.75), [np.nan] * 80])  # 40 % missing, same spread
    got = population_stability_index(ref, cur)
    assert got.details["bins"][-1] == "<missing>"
    assert got.details["reference_share"][-1] == pytest.approx(0.1)
    assert got.details["current_share"][-1] == pytest.approx(0.4)
    assert got.details["contribution"][-1] == pytest.approx(0.3 * math.log(4.0), rel=1e-4)
    assert ks_test(ref, cur).p_value > 0.05  # KS only sees the observed values
    cat = population_stability_index(["a"] * 9 + [None], ["a"] * 5 + [None] * 5, kind="categorical")
    assert "<missing>" in cat.details["bins"]


def test_wasserstein_is_in_reference_standard_deviations() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(10, 4, 2000)
    got = wasserstein_test(ref, ref + 2.0)
    assert got.details["distance"] == pytest.approx(2.0)
    assert got.statistic == pytest.approx(2.0 / np.std(ref, ddof=1))


def test_registry_declares_direction_and_default_thresholds() -> None:
    assert REGISTRY["ks"].direction == "p_value_below" and REGISTRY["ks"].threshold == 0.05
    assert REGISTRY["chi2"].direction == "p_value_below"
    assert REGISTRY["psi"].direction == "statistic_above" and REGISTRY["psi"].threshold == 0.2
    assert REGISTRY["wasserstein"].direction == "statistic_above"
    assert {"numeric", "categorical"} == set(REGISTRY["psi"].kinds)


# ---------------------------------------------------------------- dataset verdicts on German Credit


def test_german_credit_age_split_is_drift(german: pd.DataFrame) -> None:
    report = compare_frames(german[german.age < 35], german[german.age >= 35])
    assert report.drift
    assert "age" in report.drifted_features
    assert report.families["ks"] and report.families["chi2"]
    age_ks = next(r for r in report.results if r.feature == "age" and r.test == "ks")
    assert age_ks.p_value < 1e-10 and age_ks.threshold == pytest.approx(0.05 / report.p_value_tests)
    assert report.p_value_tests == 10  # 3 numeric KS + 7 categorical chi-square (risk included)
    assert report.bonferroni_m == 10  # ~500-row samples: PSI is decided by its fixed 0.2, not by noise


def test_a_shift_applied_to_real_data_is_detected(german: pd.DataFrame) -> None:
    shuffled = german.sample(frac=1.0, random_state=3)
    reference, current = shuffled.iloc[:500].copy(), shuffled.iloc[500:].copy()
    current["credit_amount"] = current["credit_amount"] * 1.5
    report = compare_frames(reference, current, exclude=["risk"])
    assert report.drift
    assert report.drifted_features == ["credit_amount"]


def test_random_splits_are_flagged_about_alpha_of_the_time(german: pd.DataFrame) -> None:
    """100 random halvings: the Bonferroni verdict keeps false alarms near alpha, raw p-values do not."""
    rng = np.random.default_rng(2024)
    flagged = p_family = naive = 0
    n = 100
    for _ in range(n):
        order = rng.permutation(len(german))
        report = compare_frames(german.iloc[order[:500]], german.iloc[order[500:]], with_histograms=False)
        flagged += report.drift
        p_family += report.families.get("ks", False) or report.families.get("chi2", False)
        naive += any(r.p_value is not None and r.p_value < 0.05 for r in report.results)
    assert flagged / n <= 0.12
    assert p_family / n <= 0.10
    assert naive / n >= 0.15  # what the correction protects against (1-(1-0.05)^10 = 0.40 if independent)
    assert naive > flagged


def test_compare_frames_rejects_schema_changes_and_unknown_tests(german: pd.DataFrame) -> None:
    with pytest.raises(InvalidInputError, match="different columns"):
        compare_frames(german, german.drop(columns=["age"]))
    with pytest.raises(InvalidInputError, match="unknown drift tests"):
        compare_frames(german, german, tests=["nope"])
    only_ks = compare_frames(german, german, tests=["ks"], exclude=["risk"])
    assert {r.test for r in only_ks.results} == {"ks"} and not only_ks.drift


# ---------------------------------------------------------------- reports, latest status, CLI


def test_reports_are_written_as_json_and_html_with_plots(german: pd.DataFrame, tmp_path: Path) -> None:
    report = compare_frames(german[german.age < 35], german[german.age >= 35])
    paths = write_report(report, tmp_path / "drift")
    loaded = DriftReport.model_validate_json(paths["json"].read_text())
    assert loaded.drift and loaded.drifted_features == report.drifted_features
    html = paths["html"].read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == german.shape[1]
    assert base64.b64decode(images[0]).startswith(b"\x89PNG")
    assert "DRIFT DETECTED" in html


def test_latest_drift_status(german: pd.DataFrame, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert latest_drift_status(settings)["available"] is False
    write_report(compare_frames(german[german.age < 35], german[german.age >= 35]), settings.data_dir / "drift")
    status = latest_drift_status(settings)
    assert status["available"] and status["drift"] and status["kind"] == "tabular"
    assert "age" in status["drifted_features"] and status["age_seconds"] >= 0
    assert any(r["feature"] == "age" and r["test"] == "ks" and r["drift"] for r in status["results"])
    shuffled = german.sample(frac=1.0, random_state=0)
    write_report(
        compare_frames(shuffled.iloc[:500], shuffled.iloc[500:]), settings.data_dir / "drift", html_report=False
    )
    assert latest_drift_status(settings)["drift"] is False
    assert latest_drift_status(settings, kind="tabular")["drift"] is False
    assert latest_drift_status(settings, kind="query_log")["available"] is False
    (settings.data_dir / "drift" / LATEST).write_text("{not json")
    broken = latest_drift_status(settings)
    assert broken["available"] is False and "unreadable" in broken["reason"]


@pytest.fixture
def csv_splits(german: pd.DataFrame, tmp_path: Path) -> dict[str, Path]:
    paths = {}
    shuffled = german.sample(frac=1.0, random_state=1)
    for name, frame in {
        "young": german[german.age < 35],
        "old": german[german.age >= 35],
        "half1": shuffled.iloc[:500],
        "half2": shuffled.iloc[500:],
    }.items():
        paths[name] = tmp_path / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


def test_cli_drift_exit_status_report_and_trigger(
    csv_splits: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    marker = tmp_path / "triggered.json"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import json, os, sys\n"
        "json.dump({k: os.environ[k] for k in ('RAG_DRIFT_REPORT', 'RAG_DRIFT_STATUS')}, open(sys.argv[1], 'w'))\n"
    )
    runner = CliRunner()
    args = ["drift", "--reference", str(csv_splits["young"]), "--current", str(csv_splits["old"])]
    result = runner.invoke(app, [*args, "--on-drift", f"{sys.executable} {hook} {marker}", "--json"])
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert payload["drift"] and "age" in payload["drifted_features"]
    assert payload["trigger"]["returncode"] == 0
    seen = json.loads(marker.read_text())
    assert seen["RAG_DRIFT_STATUS"] == "drift"
    assert Path(seen["RAG_DRIFT_REPORT"]) == Path(payload["report"]["json"]).resolve()
    assert json.loads(Path(payload["report"]["json"]).read_text())["trigger"]["returncode"] == 0

    marker.unlink()
    calm = ["drift", "--reference", str(csv_splits["half1"]), "--current", str(csv_splits["half2"])]
    result = runner.invoke(app, [*calm, "--on-drift", f"{sys.executable} {hook} {marker}"])
    assert result.exit_code == 0, result.output
    assert "no drift" in result.stdout
    assert not marker.exists()  # the trigger only runs on drift

    bad = runner.invoke(app, ["drift", "--reference", str(csv_splits["young"])])
    assert bad.exit_code == 2 and "--current" in bad.output
