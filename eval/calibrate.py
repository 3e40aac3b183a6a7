"""``rag calibrate``: collect labelled answers, fit the confidence model, pick the abstention threshold, report.

Order of work: build the labelled questions and their collections (eval/calibration_data.py) → ingest each
collection (the normal ``IngestionPipeline``) → run the real ``QueryPipeline`` on every question with confidence
abstention off (``target_error_rate`` = 1), caching each result → label each answer correct or not (the rules per
dataset are in ``label_record`` and docs/EVALUATION.md) → seeded split stratified by dataset and answerability into
fit / calibration / test → fit the model on the fit split, choose the threshold on the calibration split
(eval/calibration_fit.py), touch the test split once for every reported figure → write the versioned artifact to
``data_dir/calibration/<version>.json``, an HTML report, and log the run to MLflow with the data hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.calibration_data import BuildOptions, CollectionPlan, Collector, build_plans
from rag.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrateOptions:
    datasets: list[Path]
    build: BuildOptions = field(default_factory=BuildOptions)
    cache_dir: Path | None = None
    collect_only: bool = False
    cached_only: bool = False
    experiment: str = "rag-calibrate"
    log_to_mlflow: bool = True
    report: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": [str(p) for p in self.datasets],
            "build": self.build.to_dict(),
            "experiment": self.experiment,
        }


def calibration_dir(settings: Settings) -> Path:
    return settings.data_dir / "calibration"


def pipeline_factory(settings: Settings, *, embedder: Any = None, backend: Any = None) -> Callable[[CollectionPlan],
                                                                                                   Any]:
    """Ingest a plan's corpus into its collection and build the API's pipeline over it (confidence abstention off,
    one embedder and one generator shared by every collection)."""
    from ingest.pipeline import IngestionPipeline
    from rag.answering.generation.answerer import make_answerer
    from rag.answering.generation.backends import make_backend
    from rag.answering.pipeline import QueryPipeline
    from rag.indexing.embedding import Embedder

    shared: dict[str, Any] = {"embedder": embedder, "backend": backend}

    def make(plan: CollectionPlan) -> Any:
        s = settings.with_overrides(collection=plan.name, target_error_rate=1.0)
        if shared["embedder"] is None:
            shared["embedder"] = Embedder(s)
        if shared["backend"] is None and s.generator != "extractive":
            shared["backend"] = make_backend(s)
        summary = IngestionPipeline(s, embedder=shared["embedder"], progress=False).run(plan.corpus, prune=True)
        log.info("collection %s: %s", plan.name, summary.model_dump(include={"index_version", "chunks_total"}))
        answerer = make_answerer(s, backend=shared["backend"]) if shared["backend"] is not None else None
        return QueryPipeline(s, embedder=shared["embedder"], answerer=answerer)

    return make


def collect(
    settings: Settings, options: CalibrateOptions, *, echo: Callable[[str], None] = print, **components: Any
) -> tuple[list[CollectionPlan], list[tuple[Any, dict[str, Any]]]]:
    plans = build_plans(options.datasets, options.build, calibration_dir(settings) / "work")
    cache_dir = options.cache_dir or calibration_dir(settings) / "cache"
    for plan in plans:
        echo(f"collection {plan.name}: {plan.to_dict()}")
    collector = Collector(settings, cache_dir, pipeline_factory(settings, **components), log=echo,
                          cached_only=options.cached_only)
    return plans, collector.collect(plans)


def plans_summary(plans: list[CollectionPlan]) -> list[dict[str, Any]]:
    return [asdict(p) | {"corpus": [str(c) for c in p.corpus], "questions": len(p.questions)} for p in plans]


# ------------------------------------------------------------------------------------------------ fit


@dataclass(frozen=True)
class FitConfig:
    """Everything the fit depends on besides the labelled data (logged, and stored in the artifact)."""

    seed: int = 42
    shares: tuple[tuple[str, float], ...] = (("fit", 0.35), ("calibration", 0.35), ("test", 0.3))
    l2_grid: tuple[float, ...] = (1.0, 10.0, 100.0)  # chosen with the model kind by CV on the fit split
    delta: float = 0.1  # the threshold's guarantee holds with probability >= 1 - delta
    bins: int = 10
    kinds: tuple[str, ...] = ("logistic", "logistic+isotonic")
    # chosen with the kind and L2 by CV on the fit split (one-standard-error rule); listed from the simplest
    feature_sets: tuple[str, ...] = ("none", "compact", "all")
    policy: str = "abstain"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"shares": dict(self.shares), "kinds": list(self.kinds), "l2_grid": list(self.l2_grid),
                               "feature_sets": {name: FEATURE_SETS[name] for name in self.feature_sets}}


# A few signals chosen beforehand for what they mean (question form, relevance, support), so that a fit split of a
# few dozen answers can weigh them without the shrinkage 25 features need; ``all`` is every feature seen.
FEATURE_SETS: dict[str, list[str] | None] = {
    "none": [],  # the answered questions' rate: a constant, the baseline every richer model must beat
    "all": None,
    "compact": [
        "question.yes_no", "question.statement", "generation.decision", "retrieval.top_rerank", "verify.ce_question",
        "verify.ce_quote_question", "verify.min_overlap", "verify.subject_found", "generation.answer_words",
    ],
}


def assign_splits(questions: list[Any], config: FitConfig) -> dict[str, str]:
    """uid -> fit/calibration/test, stratified by dataset and answerability; BEIR questions from the train qrels
    never reach the test split and those from the test qrels only reach it."""
    from eval.calibration_fit import SPLITS, stratified_split

    allowed = [("test",) if q.origin == "test" else ("fit", "calibration") if q.origin == "train" else SPLITS
               for q in questions]
    names = stratified_split([q.stratum for q in questions], allowed, config.seed, dict(config.shares))
    return {q.uid: name for q, name in zip(questions, names, strict=True)}


def feature_specs(rows: list[dict[str, float]], only: list[str] | None = None) -> list[dict[str, Any]]:
    """Features seen on the fit split (``only`` those, if given), sorted; constant ones dropped. A feature missing
    on some rows gets the fit split's median as its default and a ``missing:`` indicator."""
    from rag.answering.calibration import MISSING_PREFIX

    specs: list[dict[str, Any]] = []
    for name in sorted({k for row in rows for k in row if only is None or k in only}):
        values = np.array([row[name] for row in rows if name in row], dtype=float)
        if len(values) and np.ptp(values) > 0:
            specs.append({"name": name, "default": float(np.median(values))})
        if 0 < len(values) < len(rows):
            specs.append({"name": MISSING_PREFIX + name, "default": 0.0})
    return specs


def fit_artifact(fit: list[Any], cal: list[Any], config: FitConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit on the fit split's answers (model kind by 5-fold CV Brier), thresholds on the calibration split's."""
    from eval.calibration_fit import cross_validate, fit_model, paired_se, select_threshold
    from rag.answering.calibration import ARTIFACT_FORMAT, NEVER_ANSWER, TARGET_GRID, ConfidenceModel, feature_value

    def design(only: list[str] | None) -> tuple[list[dict[str, Any]], np.ndarray]:
        specs = feature_specs([o.features for o in fit], only)
        rows = [[feature_value(o.features, s) for s in specs] for o in fit]
        return specs, np.array(rows, dtype=float).reshape(len(fit), len(specs))

    designs = {name: design(FEATURE_SETS[name]) for name in config.feature_sets}
    feature_set = config.feature_sets[0]
    specs, x = designs[feature_set]
    y = np.array([o.correct for o in fit], dtype=float)
    l2: float | None = None
    if len(set(y)) < 2:  # no answers or one class: a constant model at the Laplace-smoothed rate, said so
        log.warning("the fit split has %d answers, %d right: fitting a constant model", len(y), int(y.sum()))
        cv: dict[str, Any] = {"note": f"fit split has one class ({int(y.sum())}/{len(y)} right): constant model"}
        kind = "logistic"
        rate = (y.sum() + 1) / (len(y) + 2)
        params: dict[str, Any] = {"mean": x.mean(axis=0) if len(y) else np.zeros(len(specs)),
                                  "scale": np.ones(len(specs)), "coef": np.zeros(len(specs)),
                                  "intercept": float(np.log(rate / (1 - rate))), "isotonic": None}
    else:
        # from the simplest: fewer features, plain logistic, the strongest L2 (a constant needs neither)
        grid: list[tuple[str, str, float]] = []
        for f in config.feature_sets:
            if FEATURE_SETS[f] == []:
                grid.append((f, config.kinds[0], max(config.l2_grid)))
            else:
                grid += [(f, kind, l2) for kind in config.kinds for l2 in sorted(config.l2_grid, reverse=True)]
        def label(c: tuple[str, str, float]) -> str:
            return f"{c[0]}:{c[1]}@l2={c[2]:g}"

        runs = {label(c): cross_validate(designs[c[0]][1], y, c[1], l2=c[2], seed=config.seed) for c in grid}
        # The constant cannot rank answers, so it cannot carry a threshold: it is kept only when no model with
        # features has a lower out-of-fold Brier score; among those models, the one-SE rule picks the simplest.
        ranked = [c for c in grid if FEATURE_SETS[c[0]] != []] or grid
        best = min((runs[label(c)] for c in ranked), key=lambda r: r["brier"])
        for r in runs.values():  # one SE of the paired difference to the best (0 for the best itself)
            r["se_vs_best"] = paired_se(r["squared"], best["squared"])
        constant = [c for c in grid if FEATURE_SETS[c[0]] == []]
        if constant and runs[label(constant[0])]["brier"] <= best["brier"]:
            feature_set, kind, l2 = constant[0]
        else:
            feature_set, kind, l2 = next(
                c for c in ranked if runs[label(c)]["brier"] <= best["brier"] + runs[label(c)]["se_vs_best"] + 1e-12
            )
        cv = {name: {k: v for k, v in r.items() if k != "squared"} for name, r in runs.items()}
        specs, x = designs[feature_set]
        params = fit_model(x, y, kind, l2=l2, seed=config.seed)
    for spec, mean, scale, coef in zip(specs, params["mean"], params["scale"], params["coef"], strict=True):
        spec.update({"mean": float(mean), "scale": float(scale), "coef": float(coef)})
    artifact: dict[str, Any] = {
        "format": ARTIFACT_FORMAT, "kind": kind, "features": specs, "intercept": float(params["intercept"]),
        "isotonic": params["isotonic"], "thresholds": [],
    }
    model = ConfidenceModel.from_artifact(artifact)
    p_cal = model.predict_many([o.features for o in cal])
    wrong = np.array([not o.correct for o in cal], dtype=bool)
    for target in TARGET_GRID:
        chosen = select_threshold(p_cal, wrong, target, config.delta, NEVER_ANSWER)
        artifact["thresholds"].append({"target_error_rate": target} | chosen)
    return artifact, {"cv": cv, "chosen_kind": kind, "chosen_l2": l2, "chosen_feature_set": feature_set,
                      "n_fit": len(fit), "n_calibration": len(cal)}


# ------------------------------------------------------------------------------------------------ evaluate


NEAR_MISS_KINDS = {"near_miss", "removed_gold"}


def _rate(k: int, n: int) -> dict[str, Any]:
    from eval.calibration_fit import clopper_pearson

    low, high = clopper_pearson(k, n)
    return {"value": k / n if n else None, "k": k, "n": n, "ci_low": low, "ci_high": high}


def operating_point(questions: list[Any], outcomes: dict[str, Any], conf: dict[str, float], threshold: float
                    ) -> dict[str, Any]:
    """Realised figures on one split at one threshold: error among answered, coverage, abstention by kind."""
    answered = {q.uid for q in questions if outcomes[q.uid].answered and conf[q.uid] >= threshold}
    wrong = sum(not outcomes[u].correct for u in answered)
    answerable = [q for q in questions if q.answerable]
    near = [q for q in questions if q.kind in NEAR_MISS_KINDS]
    off = [q for q in questions if q.kind == "off_topic"]
    return {
        "threshold": threshold,
        "error_rate_answered": _rate(wrong, len(answered)),
        "coverage_answerable": _rate(sum(q.uid in answered for q in answerable), len(answerable)),
        "correct_of_answerable": _rate(sum(q.uid in answered and outcomes[q.uid].correct for q in answerable),
                                       len(answerable)),
        "abstention_near_miss": _rate(sum(q.uid not in answered for q in near), len(near)),
        "abstention_off_topic": _rate(sum(q.uid not in answered for q in off), len(off)),
    }


def evaluate(model: Any, questions: list[Any], outcomes: dict[str, Any], settings: Settings, bins: int
             ) -> dict[str, Any]:
    """Every reported figure, on one split (the test split, once)."""
    from eval.calibration_fit import brier, ece, reliability_table
    from rag.answering.calibration import TARGET_GRID, heuristic_confidence

    candidates = [q for q in questions if outcomes[q.uid].answered]
    answerable = [q for q in questions if q.answerable]
    p = model.predict_many([outcomes[q.uid].features for q in candidates]) if candidates else np.zeros(0)
    y = np.array([outcomes[q.uid].correct for q in candidates], dtype=float)
    old = np.array([heuristic_confidence(outcomes[q.uid].features, settings) for q in candidates], dtype=float)
    conf = {q.uid: float(v) for q, v in zip(candidates, p, strict=True)}
    per_target = []
    for target in TARGET_GRID:
        threshold = type(model)(model.artifact, target).threshold
        per_target.append({"target_error_rate": target} | operating_point(questions, outcomes, conf, threshold))
    curve = [operating_point(questions, outcomes, conf, float(t)) for t in np.unique(np.r_[p, 0.0])[::-1]]
    return {
        "n_questions": len(questions),
        "n_candidates": len(candidates),
        "candidate_accuracy": float(y.mean()) if len(y) else None,
        # right answers any verifier could pass, per answerable question: coverage x (1 - error) cannot exceed it
        "generator_ceiling": _rate(sum(outcomes[q.uid].raw_correct for q in answerable), len(answerable)),
        "brier": brier(p, y),
        "ece": ece(p, y, bins),
        "brier_uncalibrated": brier(old, y),
        "ece_uncalibrated": ece(old, y, bins),
        "reliability": reliability_table(p, y, bins),
        "at_target": per_target,
        # what serving does where no threshold is certified for the target (RAG_UNCERTIFIED_MIN_CONFIDENCE)
        "uncertified_fallback": operating_point(questions, outcomes, conf, settings.uncertified_min_confidence),
        "risk_coverage": [
            {"threshold": c["threshold"], "error_rate": c["error_rate_answered"]["value"] or 0.0,
             "answered": c["error_rate_answered"]["n"], "coverage_answerable": c["coverage_answerable"]["value"]}
            for c in curve
        ],
        "confidences": [{"uid": q.uid, "confidence": conf[q.uid], "correct": outcomes[q.uid].correct}
                        for q in candidates],
    }


# ------------------------------------------------------------------------------------------------ run


@dataclass
class CalibrationRun:
    """The fitted artifact, the test figures, and where things were written."""

    artifact: dict[str, Any]
    summary: dict[str, Any]
    artifact_path: Path | None = None
    report_path: Path | None = None
    mlflow_run_id: str | None = None
    mlflow_error: str | None = None


def labelled_table(pairs: list[tuple[Any, dict[str, Any]]], policy: str, settings: Settings) -> dict[str, Any]:
    """Replay verification under ``policy`` over every cached result: uid -> Outcome."""
    from eval.calibration_labels import replay
    from rag.answering.rerank import CrossEncoder
    from rag.answering.verify import AnswerVerifier

    s = settings.with_overrides(unsupported_policy=policy)
    encoder = CrossEncoder(s) if s.verify_cross_encoder else None
    verifier = AnswerVerifier.from_settings(s, encoder=encoder)
    out: dict[str, Any] = {}
    for q, record in pairs:
        try:
            out[q.uid] = replay(q, record, verifier)
        except Exception as exc:  # a verifier bug on one answer: left out of the fit, and said so in the summary
            log.warning("replay of %s failed: %r", q.uid, exc)
    return out


def data_hash(questions: list[Any], outcomes: dict[str, Any], splits: dict[str, str]) -> str:
    """Hash of the labelled feature table the model is fitted and tested on."""
    from rag.hashing import sha256_json

    return sha256_json(sorted(
        [q.uid, splits[q.uid], q.answerable, q.kind, outcomes[q.uid].answered, outcomes[q.uid].correct,
         sorted(outcomes[q.uid].features.items())]
        for q in questions
    ))[:16]


def fit_policy(pairs: list[tuple[Any, dict[str, Any]]], settings: Settings, config: FitConfig) -> CalibrationRun:
    """Label, split, fit, threshold, and evaluate on the test split once, for one verification policy."""
    from rag.answering.calibration import ConfidenceModel, artifact_version

    outcomes = labelled_table(pairs, config.policy, settings)
    questions = [q for q, _ in pairs if q.uid in outcomes]
    splits = assign_splits(questions, config)
    by_split = {name: [q for q in questions if splits[q.uid] == name] for name in ("fit", "calibration", "test")}
    fit = [outcomes[q.uid] for q in by_split["fit"] if outcomes[q.uid].answered]
    cal = [outcomes[q.uid] for q in by_split["calibration"] if outcomes[q.uid].answered]
    artifact, fit_info = fit_artifact(fit, cal, config)
    model = ConfidenceModel.from_artifact(artifact, settings.target_error_rate)
    test = evaluate(model, by_split["test"], outcomes, settings, config.bins)
    artifact["reliability"] = test["reliability"]
    artifact["confidence_level"] = 1 - config.delta
    artifact["threshold_method"] = "Learn-then-Test fixed-sequence, exact binomial (Clopper-Pearson) test"
    artifact["data"] = {
        "hash": data_hash(questions, outcomes, splits),
        "questions": {name: len(items) for name, items in by_split.items()},
        "answers": {"fit": len(fit), "calibration": len(cal), "test": test["n_candidates"]},
        "datasets": sorted({q.dataset for q in questions}),
        # the pipeline the answers were collected with (config hashes as in responses' versions.config)
        "pipeline_config_versions": sorted({r["response"]["versions"]["config"] for _, r in pairs}),
        "prompt_versions": sorted({r["response"]["versions"]["prompt"] for _, r in pairs}),
        "generators": sorted({r["response"]["versions"]["generator"] for _, r in pairs}),
    }
    artifact["config"] = config.to_dict()
    artifact["seed"] = config.seed
    artifact["test"] = {k: v for k, v in test.items() if k not in {"reliability", "confidences", "risk_coverage"}}
    artifact["test"]["curve"] = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in c.items()}
                                 for c in test["risk_coverage"]]
    artifact["version"] = artifact_version(artifact)
    summary = {"policy": config.policy, "replay_failures": [q.uid for q, _ in pairs if q.uid not in outcomes],
               "fit": fit_info, "test": test, "splits": artifact["data"],
               "outcomes": [outcomes[q.uid].to_dict() | {"split": splits[q.uid], "kind": q.kind,
                                                         "dataset": q.dataset, "answerable": q.answerable}
                            for q in questions]}
    return CalibrationRun(artifact, summary)


# ------------------------------------------------------------------------------------------------ outputs


def render_report(main: CalibrationRun, others: list[CalibrationRun]) -> str:
    """One self-contained HTML page: reliability diagram, risk-coverage curve, figures with CIs, policy table."""
    import html
    import json

    from eval.report import calibration_plots

    esc = html.escape
    test = main.summary["test"]
    rows = "".join(
        f"<tr><td>{t['target_error_rate']}</td><td>{t['threshold']:.3f}</td>"
        + "".join(f"<td>{_fmt_rate(t[k])}</td>" for k in RATE_KEYS) + "</tr>"
        for t in test["at_target"]
    )
    policy_rows = "".join(
        f"<tr><td>{esc(r.summary['policy'])}</td><td>{r.artifact['version']}</td><td>{r.artifact['kind']}</td>"
        f"<td>{r.summary['test']['brier']:.3f}</td><td>{r.summary['test']['ece']:.3f}</td>"
        + "".join(f"<td>{_fmt_rate(_at(r, 0.05)[k])}</td>" for k in RATE_KEYS) + "</tr>"
        for r in [main, *others]
    )
    head = "".join(f"<th>{esc(k)}</th>" for k in RATE_KEYS)
    uncertified = test.get("uncertified_fallback")
    fallback = (
        f"<tr><td>uncertified fallback</td><td>{uncertified['threshold']:.3f}</td>"
        + "".join(f"<td>{_fmt_rate(uncertified[k])}</td>" for k in RATE_KEYS) + "</tr>"
    ) if uncertified else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rag calibrate</title><style>body{font-family:"
        "sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}td,th{padding:3px "
        "8px;border-bottom:1px solid #ddd}</style></head><body>",
        f"<h1>Confidence model {main.artifact['version']} ({esc(main.artifact['kind'])}, policy "
        f"{esc(main.summary['policy'])})</h1>",
        f"<p>Test split: {test['n_questions']} questions, {test['n_candidates']} answered before the confidence "
        f"step. Brier {test['brier']:.3f} (uncalibrated heuristic {test['brier_uncalibrated']:.3f}), ECE "
        f"{test['ece']:.3f} (heuristic {test['ece_uncalibrated']:.3f}). Rates: value [95% Clopper-Pearson CI] "
        "(k/n).</p>",
        *([f"<p>Generator ceiling: {_fmt_rate(test['generator_ceiling'])} of the answerable questions got a right "
           "answer from the model before any check (every shown source credited). No threshold can give more "
           "right answers: coverage x (1 - error rate) stays below it.</p>"] if "generator_ceiling" in test else []),
        f"<h2>By target error rate</h2><table><tr><th>target</th><th>threshold</th>{head}</tr>{rows}{fallback}"
        "</table><p>A target whose threshold is 1.010 has no certified threshold: serving then abstains below "
        "RAG_UNCERTIFIED_MIN_CONFIDENCE (last row).</p>",
        "<h2>Unsupported-sentence policy at target 0.05</h2><table><tr><th>policy</th><th>version</th>"
        f"<th>model</th><th>Brier</th><th>ECE</th>{head}</tr>{policy_rows}</table>",
    ]
    for title, png in calibration_plots(main.artifact):
        parts += [f"<h2>{esc(title)}</h2>", f"<img alt='{esc(title)}' src='data:image/png;base64,{png}'>"]
    parts += ["<h2>Fit</h2><pre>" + esc(json.dumps(main.summary["fit"] | {"data": main.summary["splits"]},
                                                   indent=1)) + "</pre></body></html>"]
    return "\n".join(parts)


RATE_KEYS = ("error_rate_answered", "coverage_answerable", "abstention_near_miss", "abstention_off_topic")


def _at(run: CalibrationRun, target: float) -> dict[str, Any]:
    return next(t for t in run.summary["test"]["at_target"] if t["target_error_rate"] == target)


def _fmt_rate(rate: dict[str, Any]) -> str:
    if rate["value"] is None:
        return "n/a (n=0)"
    return f"{rate['value']:.3f} [{rate['ci_low']:.3f}, {rate['ci_high']:.3f}] ({rate['k']}/{rate['n']})"


def write_outputs(settings: Settings, main: CalibrationRun, others: list[CalibrationRun]) -> None:
    """``data_dir/calibration/<version>.json`` (+ ``.html`` report, ``-summary.json``); never overwritten with
    different content, since the name is the content hash."""
    import json

    folder = calibration_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    version = main.artifact["version"]
    main.artifact_path = folder / f"{version}.json"
    main.artifact_path.write_text(json.dumps(main.artifact, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    main.report_path = folder / f"{version}.html"
    main.report_path.write_text(render_report(main, others), encoding="utf-8")
    summary = {"main": main.summary, "others": [o.summary | {"version": o.artifact["version"]} for o in others]}
    (folder / f"{version}-summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")


def log_to_mlflow(settings: Settings, main: CalibrationRun, others: list[CalibrationRun], experiment: str,
                  options: CalibrateOptions) -> str:
    """One MLflow run: config and data hash as params, test figures as metrics, artifact + report attached."""
    from mlflow.entities import Metric, Param, RunTag

    from rag.ml.registry import client_for, ensure_experiment

    client = client_for(settings)
    experiment_id = ensure_experiment(client, settings, experiment)
    run = client.create_run(experiment_id, run_name=f"calibrate-{main.artifact['version']}",
                            tags={"rag.calibration_version": main.artifact["version"],
                                  "rag.data_hash": main.artifact["data"]["hash"]})
    params = {"model_kind": main.artifact["kind"], "data_hash": main.artifact["data"]["hash"],
              "seed": main.artifact["seed"], "datasets": ",".join(main.artifact["data"]["datasets"]),
              "options": options.to_dict(), **{f"fit.{k}": v for k, v in main.artifact["config"].items()},
              "features": ",".join(f["name"] for f in main.artifact["features"])}
    stamp = 0
    metrics: list[Metric] = []
    for run_ in [main, *others]:
        prefix = "" if run_ is main else f"policy_{run_.summary['policy']}."
        test = run_.summary["test"]
        for key in ("brier", "ece", "brier_uncalibrated", "ece_uncalibrated"):
            metrics.append(Metric(f"{prefix}test.{key}", float(test[key]), stamp, 0))
        for item in test["at_target"]:
            for key in RATE_KEYS:
                if item[key]["value"] is not None:
                    metrics.append(Metric(f"{prefix}test.t{item['target_error_rate']}.{key}",
                                          float(item[key]["value"]), stamp, 0))
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:500]) for k, v in sorted(params.items())],
                     metrics=metrics, tags=[RunTag("rag.policy", main.summary["policy"])])
    for path in (main.artifact_path, main.report_path):
        if path is not None:
            client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def run_calibration(settings: Settings, options: CalibrateOptions, config: FitConfig | None = None, *,
                    echo: Callable[[str], None] = print, **components: Any) -> CalibrationRun | None:
    """The whole command: collect (cached), fit under both verification policies, write, log."""
    from rag.ml.seed import set_seed

    set_seed(settings.seed)
    _, pairs = collect(settings, options, echo=echo, **components)
    if options.collect_only:
        return None
    config = config or FitConfig(seed=settings.seed, policy=settings.unsupported_policy)
    policies = [config.policy] + [p for p in ("abstain", "cut") if p != config.policy]
    runs = [fit_policy(pairs, settings, FitConfig(**(asdict(config) | {"policy": p}))) for p in policies]
    main, others = runs[0], runs[1:]
    write_outputs(settings, main, others)
    if options.log_to_mlflow:
        try:
            main.mlflow_run_id = log_to_mlflow(settings, main, others, options.experiment, options)
        except Exception as exc:  # the artifact is written already; say what failed
            main.mlflow_error = f"MLflow logging failed: {exc}"
    return main
