"""``rag calibrate``: the statistics (threshold bound, ECE/Brier, fits), labels, reproducibility, a tiny real run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from eval.calibrate import FitConfig, assign_splits, fit_artifact, pipeline_factory
from eval.calibration_data import BuildOptions, CalibrationQuestion, Collector, build_plans
from eval.calibration_fit import (
    brier,
    clopper_pearson,
    ece,
    fit_isotonic,
    fit_logistic,
    reliability_table,
    select_threshold,
    stratified_split,
)
from eval.calibration_labels import is_correct, raw_correct
from eval.datasets import EvalSample
from rag.answering.calibration import NEVER_ANSWER, ConfidenceModel
from rag.indexing.embedding import Embedder
from tests.conftest import VENV_BIN

REPO = Path(__file__).resolve().parents[2]


def test_brier_and_ece_match_hand_computed_values() -> None:
    p = np.array([0.15, 0.45, 0.85, 0.95])
    y = np.array([0, 1, 1, 0])
    assert brier(p, y) == pytest.approx((0.0225 + 0.3025 + 0.0225 + 0.9025) / 4)
    # one item per bin: |acc - conf| = 0.15, 0.55, 0.15, 0.95
    assert ece(p, y) == pytest.approx((0.15 + 0.55 + 0.15 + 0.95) / 4)
    # two items sharing a bin pool: bin [0.8, 0.9) holds 0.82 and 0.88 (acc 0.5, mean conf 0.85) -> 0.35
    assert ece(np.array([0.82, 0.88]), np.array([1, 0])) == pytest.approx(0.35)
    table = reliability_table(np.array([0.82, 0.88, 1.0]), np.array([1, 0, 1]))
    assert [(r["n"], r["correct"]) for r in table if r["n"]] == [(2, 1), (1, 1)]  # 1.0 falls in the last bin


def test_clopper_pearson_known_values() -> None:
    low, high = clopper_pearson(0, 10)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 10))
    low, high = clopper_pearson(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.1871, 0.8129)


def test_threshold_bound_holds_where_the_true_error_rate_is_known() -> None:
    """P(wrong | confidence c) = 0.4 (1 - c) with c ~ U(0, 1): the true error among answered at threshold t is
    0.2 (1 - t), so the target 0.05 needs t >= 0.75. Over many calibration sets the chosen threshold must keep the
    true error <= target in >= 90% of them (delta = 0.1), where the naive empirical choice fails about half."""
    target, delta, violations, naive_violations, chosen = 0.05, 0.1, 0, 0, []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        conf = rng.uniform(0, 1, 600)
        wrong = rng.uniform(0, 1, 600) < 0.4 * (1 - conf)
        result = select_threshold(conf, wrong, target, delta, NEVER_ANSWER)
        t = result["threshold"]
        chosen.append(t)
        violations += t < 1 and 0.2 * (1 - t) > target
        order = np.argsort(-conf)
        running = np.cumsum(wrong[order]) / np.arange(1, 601)
        naive = conf[order][np.flatnonzero(running <= target)[-1]]
        naive_violations += 0.2 * (1 - naive) > target
    assert violations / 120 <= delta
    assert naive_violations / 120 >= 0.3  # the bound is what makes the difference
    assert 0.75 <= float(np.median(chosen)) < 0.95  # and it still answers a useful share


def test_threshold_is_never_answer_when_too_few_answers_could_certify_it() -> None:
    conf = np.linspace(0.5, 1, 30)  # 30 answers, none wrong: (1 - 0.05)^30 = 0.21 > 0.1, nothing certifiable
    result = select_threshold(conf, np.zeros(30, bool), 0.05, 0.1, NEVER_ANSWER)
    assert result["threshold"] == NEVER_ANSWER and not result["feasible"] and result["n_min"] == 45
    result = select_threshold(np.linspace(0.5, 1, 60), np.zeros(60, bool), 0.05, 0.1, NEVER_ANSWER)
    assert result["feasible"] and result["threshold"] == 0.5 and result["errors"] == 0
    assert select_threshold(conf, np.ones(30, bool), 1.0, 0.1, NEVER_ANSWER)["threshold"] == 0.0


def test_logistic_and_isotonic_match_scikit_learn() -> None:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3))
    y = (rng.uniform(size=200) < 1 / (1 + np.exp(-(x @ [1.5, -1.0, 0.0] + 0.3)))).astype(float)
    coef, intercept = fit_logistic(x, y, l2=1.0)
    reference = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(x, y)
    assert np.allclose(coef, reference.coef_[0], atol=1e-5)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-5)
    scores = rng.uniform(size=100)
    labels = (rng.uniform(size=100) < scores).astype(float)
    bx, by = fit_isotonic(scores, labels)
    assert np.allclose(np.interp(scores, bx, by), IsotonicRegression().fit(scores, labels).predict(scores))
    assert all(a <= b for a, b in itertools.pairwise(by))


@dataclass(frozen=True)
class FakeOutcome:
    features: dict[str, float]
    correct: bool


def outcomes(seed: int, n: int) -> list[FakeOutcome]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        top = float(rng.uniform(0.2, 0.9))
        lp = float(rng.normal(-0.5, 0.3))
        row = {"retrieval.top_dense": top, "verify.lp_mean": lp, "generation.cited": 1.0}
        if rng.uniform() < 0.2:
            del row["verify.lp_mean"]
        out.append(FakeOutcome(row, bool(rng.uniform() < 1 / (1 + np.exp(-(6 * (top - 0.5) + 2 * (lp + 0.5)))))))
    return out


def test_fit_is_reproducible_bit_for_bit_and_serves_the_same_probabilities() -> None:
    fit, cal = outcomes(1, 150), outcomes(2, 300)
    config = FitConfig(seed=7)
    first, info = fit_artifact(fit, cal, config)
    second, _ = fit_artifact(outcomes(1, 150), outcomes(2, 300), FitConfig(seed=7))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    names = [f["name"] for f in first["features"]]
    assert names == ["retrieval.top_dense", "verify.lp_mean", "missing:verify.lp_mean"]  # constant "cited" dropped
    assert set(info["cv"]) == {"none:logistic@l2=100"} | {
        f"{features}:{kind}@l2={l2}" for features in ("all", "compact")
        for kind in ("logistic", "logistic+isotonic") for l2 in (1, 10, 100)}
    assert info["chosen_kind"] == first["kind"] and info["chosen_l2"] in (1.0, 10.0, 100.0)
    # the compact set holds none of these signals (it is the constant, as "none" is): the rich model must win
    assert info["chosen_feature_set"] == "all"
    assert info["cv"]["none:logistic@l2=100"]["brier"] > info["cv"]["all:logistic@l2=1"]["brier"]
    model = ConfidenceModel.from_artifact(first)
    high = model.predict({"retrieval.top_dense": 0.9, "verify.lp_mean": 0.0})
    low = model.predict({"retrieval.top_dense": 0.2, "verify.lp_mean": -1.0})
    assert high > 0.8 and low < 0.2
    thresholds = {t["target_error_rate"]: t for t in first["thresholds"]}
    assert thresholds[1.0]["threshold"] == 0.0
    assert thresholds[0.2]["threshold"] <= thresholds[0.1]["threshold"]


def test_a_few_dozen_answers_are_fitted_on_the_compact_feature_set_when_noise_swamps_the_rest() -> None:
    """Yes/no decisions right half the time, facts 19 times in 20, plus 20 features of noise: at 60 answers
    cross-validation with the one-standard-error rule picks the compact set (not the constant, not all 21
    features), and the served confidence tells the two kinds apart."""
    rng = np.random.default_rng(3)

    def answers(n: int) -> list[FakeOutcome]:
        out = []
        for i in range(n):
            yes_no = float(i % 3 == 0)
            row = {"question.yes_no": yes_no} | {f"verify.noise{k}": float(rng.normal()) for k in range(20)}
            out.append(FakeOutcome(row, bool(rng.uniform() < (0.5 if yes_no else 0.95))))
        return out

    artifact, info = fit_artifact(answers(60), answers(200), FitConfig())
    assert info["chosen_feature_set"] == "compact"
    assert [f["name"] for f in artifact["features"]] == ["question.yes_no"]
    model = ConfidenceModel.from_artifact(artifact)
    assert model.predict({"question.yes_no": 1.0}) + 0.2 < model.predict({"question.yes_no": 0.0})


def test_a_modest_signal_beats_the_constant_when_compared_answer_by_answer() -> None:
    """150 answers, most of them right, and one feature that shifts the odds: the constant is worse by less than
    the answer-to-answer spread of its Brier score (which the two models share: an answer hard for one is hard
    for the other), but by more than the standard error of their paired difference, so the feature is kept."""
    rng = np.random.default_rng(1)

    def answers(n: int) -> list[FakeOutcome]:
        out = []
        for _ in range(n):
            x = float(rng.normal())
            right = bool(rng.uniform() < 1 / (1 + np.exp(-1.6 - 0.9 * x)))
            out.append(FakeOutcome({"verify.ce_quote_question": x}, right))
        return out

    artifact, info = fit_artifact(answers(150), answers(150), FitConfig())
    constant = info["cv"]["none:logistic@l2=100"]
    best = min(r["brier"] for r in info["cv"].values())
    assert constant["se_vs_best"] < constant["brier"] - best < constant["brier_se"]  # the unpaired rule kept none
    assert info["chosen_feature_set"] == "compact"
    model = ConfidenceModel.from_artifact(artifact)
    assert model.predict({"verify.ce_quote_question": 1.0}) > model.predict({"verify.ce_quote_question": -1.0}) + 0.1


def test_features_of_pure_noise_leave_the_constant() -> None:
    rng = np.random.default_rng(1)

    def answers(n: int) -> list[FakeOutcome]:
        noise = [{"verify.ce_quote_question": float(rng.normal()), "retrieval.top_rerank": float(rng.normal())}
                 for _ in range(n)]
        return [FakeOutcome(row, bool(rng.uniform() < 0.8)) for row in noise]

    artifact, info = fit_artifact(answers(150), answers(150), FitConfig())
    assert info["chosen_feature_set"] == "none" and artifact["features"] == []
    assert info["cv"]["none:logistic@l2=100"]["brier"] <= min(r["brier"] for r in info["cv"].values()) + 1e-12


def test_one_class_fit_gives_a_constant_smoothed_model() -> None:
    fit = [FakeOutcome({"retrieval.top_dense": v}, False) for v in (0.3, 0.5, 0.7)]
    artifact, info = fit_artifact(fit, fit, FitConfig())
    model = ConfidenceModel.from_artifact(artifact)
    assert model.predict({"retrieval.top_dense": 0.9}) == pytest.approx(1 / 5, abs=1e-4)  # (0 + 1) / (3 + 2)
    assert "one class" in info["cv"]["note"]
    empty, _ = fit_artifact([], [], FitConfig())  # nothing answered at all: 1/2, and no target is certified
    assert ConfidenceModel.from_artifact(empty).predict({}) == 0.5
    assert [t["threshold"] for t in empty["thresholds"]] == [NEVER_ANSWER] * 7 + [0.0]


def question(uid: str, dataset: str, answerable: bool, origin: str = "all", **sample: object) -> CalibrationQuestion:
    return CalibrationQuestion(uid, dataset, EvalSample(id=uid, question=f"q {uid}", **sample), answerable,
                               "answerable" if answerable else "removed_gold", "c", origin)


def test_splits_are_seeded_stratified_and_respect_beir_qrels() -> None:
    questions = [question(f"a{i}", "sample", True) for i in range(40)]
    questions += [question(f"u{i}", "sample", False) for i in range(20)]
    questions += [question(f"t{i}", "scifact", True, "train") for i in range(10)]
    questions += [question(f"s{i}", "scifact", True, "test") for i in range(5)]
    config = FitConfig(seed=1)
    splits = assign_splits(questions, config)
    assert splits == assign_splits(questions, config)
    assert splits != assign_splits(questions, FitConfig(seed=2))
    sample_answerable = [splits[f"a{i}"] for i in range(40)]
    assert (sample_answerable.count("fit"), sample_answerable.count("calibration"), sample_answerable.count("test")) \
        == (14, 14, 12)
    assert {splits[f"t{i}"] for i in range(10)} <= {"fit", "calibration"}
    assert {splits[f"s{i}"] for i in range(5)} == {"test"}
    assert stratified_split(["x"] * 4, [("test",)] * 4, 0, {"fit": 0.5, "test": 0.5}) == ["test"] * 4


def test_correctness_rules_per_dataset() -> None:
    sample = question("p1", "sample_qa", True, reference="Forty-nine copies are known to survive.",
                      reference_doc_ids=["printing.md"])
    assert is_correct(sample, "49 copies survive [1].", {"printing.md"})
    assert not is_correct(sample, "49 copies survive [1].", {"other.md"})  # must cite the reference document
    assert not is_correct(sample, "Twelve were printed [1].", {"printing.md"})  # key facts missing
    found = question("r2", "sample_qa", True, reference="On 15 July 1799, by French soldiers in Egypt.",
                     reference_doc_ids=["rosetta.html"])
    assert is_correct(found, "15 July 1799 [1]", {"rosetta.html"})  # terse: only reference facts
    assert is_correct(found, "The stone was found on 15 July 1799 [1].", {"rosetta.html"})
    assert not is_correct(found, "It was found in 1802 [1].", {"rosetta.html"})  # a wrong date
    assert not is_correct(found, "q r2 [1]", {"rosetta.html"})  # nothing beyond the question
    choice = CalibrationQuestion("c1", "sample_qa", EvalSample(
        id="c1", question="Is coral a plant, a rock or an animal?", reference="An animal: corals are cnidarians.",
        reference_doc_ids=["coral.html"]), True, "answerable", "c")
    assert is_correct(choice, "Animal [1]", {"coral.html"})
    assert not is_correct(choice, "A plant [1]", {"coral.html"})
    def asked(q: str, reference: str) -> CalibrationQuestion:
        return CalibrationQuestion("x", "sample_qa", EvalSample(id="x", question=q, reference=reference,
                                                                reference_doc_ids=["d.md"]), True, "answerable", "c")

    eggs = asked("How many eggs can a honeybee queen lay in one day?", "Up to about 2,000 eggs a day at the peak.")
    assert is_correct(eggs, "2,000 eggs in a single day [1].", {"d.md"})  # the asked number, in other words
    assert not is_correct(eggs, "3,000 eggs in a single day [1].", {"d.md"})
    why = asked("Why was the Apollo 11 crew put in quarantine?",
                "Scientists could not rule out that the Moon carried harmful microbes; the crew spent 21 days there.")
    assert not is_correct(why, "Because they had been in space for 21 days [1].", {"d.md"})  # a number, wrong reason
    prize = asked("What did Gustaf Dalén get the Nobel Prize for?",
                  "For the sun valve and related automatic gas-lighting equipment; Physics, 1912.")
    assert is_correct(prize, "He received it in Physics in 1912 for his work on the sun valve [1].", {"d.md"})
    assert not is_correct(prize, "He received it in 1912 for his work on radio [1].", {"d.md"})
    pubmed = question("m1", "pubmedqa", True, reference_doc_ids=["101"], decision="no")
    assert is_correct(pubmed, "No, fracture rates did not differ [1].", {"101"})
    assert not is_correct(pubmed, "Yes, coffee raises the risk [1].", {"101"})
    beir = question("b1", "scifact", True, relevance={"d1": 1})
    assert is_correct(beir, "Fresnel lenses [1].", {"d1"}) and not is_correct(beir, "x [1].", {"d2"})
    gone = question("b2", "scifact", False, relevance={"d1": 1})
    assert not is_correct(gone, "Fresnel lenses [1].", {"d1"})  # any answer to an unanswerable question is wrong


def test_the_generator_ceiling_credits_the_raw_answer_with_every_source_it_was_shown() -> None:
    """The bound no verifier can beat: the model's own text, judged before any check, citations aside."""
    from types import SimpleNamespace

    sample = question("p1", "sample_qa", True, reference="Forty-nine copies are known to survive.",
                      reference_doc_ids=["printing.md"])
    shown = [SimpleNamespace(doc_id="other.md"), SimpleNamespace(doc_id="printing.md")]

    def generated(text: str, unknown: bool = False) -> SimpleNamespace:
        return SimpleNamespace(text=text, model_said_unknown=unknown, contexts=shown)

    assert raw_correct(sample, generated("49 copies survive."))  # uncited, yet right: the verifier's best case
    assert not raw_correct(sample, generated("Twelve were printed [2]."))
    assert not raw_correct(sample, generated("49 copies survive.", unknown=True))
    assert not raw_correct(sample, None)
    alone = [SimpleNamespace(doc_id="other.md")]
    assert not raw_correct(sample, SimpleNamespace(text="49 copies survive.", model_said_unknown=False, contexts=alone))


def test_rag_calibrate_end_to_end_with_smollm(tiny_pubmedqa: Path, tmp_path: Path) -> None:
    """A real run: ingest, SmolLM2 answers, fit, artifact, report, MLflow (sqlite store); a rerun reads the cache
    and writes a bit-identical artifact."""
    from mlflow import MlflowClient

    from rag.answering.generation.backends import smollm2_path

    qa = tmp_path / "qa.jsonl"
    rows = [json.loads(line) for line in (REPO / "samples/qa/sample_qa.jsonl").read_text().splitlines()]
    picked = [r for r in rows if r["answerable"]][:2] + [r for r in rows if not r["answerable"]][:1]
    qa.write_text("".join(json.dumps(r) + "\n" for r in picked))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = os.environ | {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_GENERATOR_MODEL_PATH": str(smollm2_path()),
                        "RAG_MLFLOW_TRACKING_URI": uri, "RAG_MAX_ANSWER_TOKENS": "32", "HF_HUB_OFFLINE": "1"}
    command = [str(VENV_BIN / "rag"), "calibrate", "--dataset", str(qa), "--corpus", str(REPO / "samples/corpus"),
               "--dataset", str(tiny_pubmedqa), "--json"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=2400, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    assert "collected 6 questions" in first.stderr  # 3 + 3; progress reaches stderr while stdout holds the JSON alone
    artifact_path = Path(result["artifact"])
    assert artifact_path.name == f"{result['version']}.json"
    model = ConfidenceModel.load(artifact_path)
    assert model.version == result["version"] and 0.0 <= model.predict({}) <= 1.0
    assert "reliability" in model.artifact and model.artifact["data"]["hash"] == result["data_hash"]
    assert "<img" in Path(result["report"]).read_text()
    run = MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    assert run.data.params["data_hash"] == result["data_hash"]
    assert run.data.tags["rag.calibration_version"] == result["version"]
    assert "test.brier" in run.data.metrics
    ceiling = result["test"]["generator_ceiling"]  # answerable test questions the model got right before any check
    assert 0 <= ceiling["k"] <= ceiling["n"] and ceiling["n"] == sum(
        o["answerable"] for o in json.loads(Path(result["report"]).with_name(
            f"{result['version']}-summary.json").read_text())["main"]["outcomes"] if o["split"] == "test")
    before = artifact_path.read_bytes()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout)["version"] == result["version"]
    assert artifact_path.read_bytes() == before


def test_isotonic_prior_keeps_small_blocks_away_from_certainty() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 1, 0, 1, 1, 1, 1])
    _, raw = fit_isotonic(scores, y)
    _, smoothed = fit_isotonic(scores, y, prior=1.0)
    assert max(raw) == 1.0 and min(raw) == 0.0
    assert max(smoothed) == pytest.approx(5 / 6) and min(smoothed) > 0  # 4 right of 4: (4+1)/(4+2), not 1
    assert all(a <= b for a, b in pairwise(smoothed))  # still non-decreasing


def test_a_generated_near_miss_is_asked_with_its_source_hidden_and_cached_apart(
    tmp_path: Path, embedder: Embedder
) -> None:
    """A ``rag eval generate`` set calibrates like a human one: its near-miss keeps the topic in the collection
    and hides the source document from retrieval, as ``rag eval`` does (real ingestion, Chroma and pipeline)."""
    from rag.settings import Settings

    generated = tmp_path / "generated.jsonl"
    rows = [
        {"id": "g1", "question": "Where was Gutenberg\u00a0born?", "reference": "Mainz", "reference_doc_ids": ["a.md"],
         "answerable": True},  # a no-break space, as in PubMedQA's titles: the pipeline asks the folded text
        {"id": "g2", "question": "Where was Gutenberg buried?", "answerable": False, "hidden_doc_ids": ["a.md"]},
    ]
    generated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("Johannes Gutenberg was born in Mainz and was buried in Mainz.")
    (tmp_path / "docs" / "b.md").write_text("Gutenberg printed his Bible with movable metal type in the 1450s.")
    [plan] = build_plans([generated], BuildOptions(corpus=tmp_path / "docs"), tmp_path / "work")
    assert {q.sample.id: q.kind for q in plan.questions} == {"g1": "answerable", "g2": "near_miss"}

    settings = Settings(data_dir=tmp_path / "data", generator="extractive")
    collector = Collector(settings, tmp_path / "cache", pipeline_factory(settings, embedder=embedder),
                          log=lambda _: None)
    collected = {q.sample.id: record for q, record in collector.collect([plan])}
    assert len(collected) == 2
    retrieved = {k: {c["doc_id"] for c in r["retrieval"]["chunks"]} for k, r in collected.items()}
    assert "a.md" in retrieved["g1"] and retrieved["g2"] == {"b.md"}  # the topic stays, the answer goes
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2

    # --cached-only after a pipeline change replays what was collected before, found by the folded question text
    changed = settings.with_overrides(top_k=3)
    replaying = Collector(changed, tmp_path / "cache", pipeline_factory(changed, embedder=embedder),
                          log=lambda _: None, cached_only=True)
    assert {q.sample.id for q, _ in replaying.collect([plan])} == {"g1", "g2"}


def test_each_jsonl_dataset_can_name_its_own_corpus(tmp_path: Path) -> None:
    """``--corpus-for NAME=PATH``: two JSONL sets about different documents calibrate in one run, each in a
    collection of its own documents; the others fall back to ``--corpus``, and a malformed entry is refused."""
    from eval.calibrate_cli import _parse_corpora
    from rag.errors import InvalidInputError

    for name in ("ours", "theirs"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.md").write_text(f"A document about {name}.")
        (tmp_path / f"{name}_qa.jsonl").write_text(json.dumps({"question": f"What about {name}?", "answerable": True,
                                                               "reference_doc_ids": [f"{name}.md"]}) + "\n")
    options = BuildOptions(corpus=tmp_path / "ours", corpora=_parse_corpora([f"theirs_qa={tmp_path / 'theirs'}"]))
    plans = build_plans([tmp_path / "ours_qa.jsonl", tmp_path / "theirs_qa.jsonl"], options, tmp_path / "work")
    assert [p.corpus for p in plans] == [[tmp_path / "ours"], [tmp_path / "theirs"]]
    assert plans[0].name != plans[1].name
    with pytest.raises(InvalidInputError, match="NAME=PATH"):
        _parse_corpora(["theirs_qa"])
