"""Labelled questions for ``rag calibrate``: build them, run the real pipeline once per question, cache the result.

Datasets: our JSONL (answerable, off-topic and near-miss unanswerable questions over its ``--corpus``), PubMedQA and
BEIR folders (SciFact). PubMedQA and BEIR questions are all answerable, so each gets near-miss unanswerables by
removal: one collection per dataset whose corpus lacks the gold documents of a seeded random share of the sampled
questions (the topic stays, the answer goes); those questions are labelled unanswerable, the rest stay answerable
in the same collection. A BEIR corpus is cut to the sampled questions' gold documents plus a seeded sample of
distractors, so the index builds in minutes on a CPU. BEIR questions come from the ``train`` qrels for the fit and
calibration splits and from the ``test`` qrels for the test split (the data's own rule: train qrels tune, test
qrels report).

Each question's full ``PipelineResult`` (response, retrieval with every chunk's scores, the generated answer with
the contexts the model saw and its token log-probabilities, the pipeline's features) is cached as JSON, keyed by
question + collection index version + pipeline config (confidence settings left out) + prompt version, so a rerun
or a refit after a verifier change does not regenerate.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.datasets import Dataset, EvalSample, dataset_name, load_dataset
from rag.answering.generation.answerer import GeneratedAnswer
from rag.answering.generation.prompt import PROMPT_VERSION, Context
from rag.answering.retrieval import RetrievalResult, RetrievedChunk
from rag.answering.sanitize import normalise  # the form the pipeline records a question in
from rag.errors import InvalidInputError, RagError
from rag.hashing import sha256_json
from rag.settings import Settings

CACHE_FORMAT = 1


@dataclass(frozen=True)
class CalibrationQuestion:
    """One labelled question and where it is asked. ``kind``: answerable, off_topic, near_miss (written as such)
    or removed_gold (made unanswerable by removing its gold documents from the collection)."""

    uid: str
    dataset: str
    sample: EvalSample
    answerable: bool
    kind: str
    collection: str
    origin: str = "all"  # "train"/"test" for BEIR (which qrels), else "all"

    @property
    def stratum(self) -> str:
        return f"{self.dataset}:{'answerable' if self.answerable else 'unanswerable'}"


@dataclass
class CollectionPlan:
    """A collection to build (corpus files) and the questions asked in it."""

    name: str
    corpus: list[Path]
    questions: list[CalibrationQuestion] = field(default_factory=list)
    removed_doc_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "corpus": [str(p) for p in self.corpus],
            "questions": len(self.questions),
            "removed_doc_ids": len(self.removed_doc_ids),
        }


@dataclass(frozen=True)
class BuildOptions:
    limit: int | None = None  # questions per dataset (seeded); None: all of a JSONL set, 100 of the others
    limits: tuple[tuple[str, int], ...] = ()  # per dataset name (e.g. ("pubmedqa", 90)), overriding ``limit``
    near_miss_share: float = 0.5
    distractors: int = 300  # BEIR: non-gold corpus documents kept
    test_share_beir: float = 0.34  # BEIR: share of the sampled questions drawn from the test qrels
    seed: int = 42
    corpus: Path | None = None  # for JSONL datasets
    corpora: tuple[tuple[str, Path], ...] = ()  # per JSONL dataset name (its file stem), overriding ``corpus``

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "corpus": str(self.corpus) if self.corpus else None,
            "corpora": {name: str(path) for name, path in self.corpora},
            "limits": dict(self.limits),
        }

    def limit_for(self, name: str, default: int | None) -> int | None:
        return dict(self.limits).get(name, self.limit or default)

    def corpus_for(self, path: Path) -> Path | None:
        """The documents a JSONL dataset asks about: its own ``--corpus-for`` entry, else ``--corpus``."""
        return dict(self.corpora).get(dataset_name(path), self.corpus)


def _collection_name(dataset: Dataset, digest: str) -> str:
    return f"calib-{dataset.name}-{digest[:10]}"[:63].rstrip("-._")


def write_corpus(path: Path, lines: list[str]) -> Path:
    content = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != content:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)
    return path


def read_corpus(path: Path) -> dict[str, str]:
    """doc id -> the JSONL line, in file order."""
    out: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                out[str(json.loads(line)["_id"])] = line.rstrip("\n")
    return out


def _near_miss_plan(
    name: str,
    samples: list[tuple[EvalSample, str]],
    corpus_lines: dict[str, str],
    work_dir: Path,
    options: BuildOptions,
    keep_docs: set[str] | None = None,
) -> CollectionPlan:
    """One collection: the corpus (or ``keep_docs`` of it) minus the gold documents of a seeded share."""
    rng = random.Random(f"{options.seed}:{name}:near-miss")
    order = list(range(len(samples)))
    rng.shuffle(order)
    removed_idx = set(order[: round(len(samples) * options.near_miss_share)])
    removed = sorted({d for i in removed_idx for d in samples[i][0].relevant_doc_ids})
    # a gold document shared with a kept question stays (that question must remain answerable)
    kept_gold = {d for i, (s, _) in enumerate(samples) if i not in removed_idx for d in s.relevant_doc_ids}
    removed = [d for d in removed if d not in kept_gold]
    ids = [d for d in corpus_lines if (keep_docs is None or d in keep_docs) and d not in set(removed)]
    digest = sha256_json({"ids": ids, "name": name})
    corpus = write_corpus(work_dir / "corpora" / f"calib-{name}-{digest[:12]}.jsonl", [corpus_lines[d] for d in ids])
    plan = CollectionPlan(f"calib-{name}-{digest[:10]}"[:63].rstrip("-._"), [corpus], removed_doc_ids=removed)
    for i, (sample, origin) in enumerate(samples):
        gone = i in removed_idx and not (sample.relevant_doc_ids & kept_gold)
        plan.questions.append(CalibrationQuestion(
            uid=f"{name}:{origin}:{sample.id}", dataset=name, sample=sample, answerable=not gone,
            kind="removed_gold" if gone else "answerable", collection=plan.name, origin=origin,
        ))
    return plan


def _seeded(samples: list[EvalSample], n: int, seed: str) -> list[EvalSample]:
    if n >= len(samples):
        return list(samples)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in sorted(order[:n])]


def build_plans(paths: Iterable[Path], options: BuildOptions, work_dir: Path) -> list[CollectionPlan]:
    """The collections and labelled questions of every ``--dataset`` (see the module docstring)."""
    plans: list[CollectionPlan] = []
    for path in paths:
        dataset = load_dataset(Path(path), seed=options.seed, corpus=options.corpus_for(Path(path)), work_dir=work_dir,
                               split="test") if Path(path).suffix == ".jsonl" else None
        if dataset is not None:
            if not dataset.corpus:
                raise InvalidInputError(f"{path}: a JSONL dataset needs --corpus (the documents it asks about)")
            n = options.limit_for(dataset.name, len(dataset.samples)) or len(dataset.samples)
            samples = _seeded(dataset.samples, n, f"{options.seed}:{dataset.name}")
            plan = CollectionPlan(_collection_name(dataset, dataset.sha256), list(dataset.corpus))
            for s in samples:
                kind = "answerable" if s.answerable else s.tags.get("unanswerable_kind", "unanswerable")
                if s.hidden_doc_ids and not s.answerable:  # a generated near-miss: its source is filtered out
                    kind = "near_miss"
                plan.questions.append(CalibrationQuestion(
                    uid=f"{dataset.name}:all:{s.id}", dataset=dataset.name, sample=s, answerable=bool(s.answerable),
                    kind=kind, collection=plan.name,
                ))
            plans.append(plan)
            continue
        plans.append(_derived_plan(Path(path), options, work_dir))
    return plans


def _derived_plan(path: Path, options: BuildOptions, work_dir: Path) -> CollectionPlan:
    """PubMedQA or BEIR: sample, then one near-miss collection."""
    has_train = _is_beir(path) and (path / "qrels" / "train.tsv").is_file()
    first = load_dataset(path, seed=options.seed, work_dir=work_dir, split="train" if has_train else "test")
    n = options.limit_for(first.name, 100) or 100
    if first.kind == "pubmedqa":
        samples = [(s, "all") for s in _seeded(first.samples, n, f"{options.seed}:{first.name}")]
        return _near_miss_plan(first.name, samples, read_corpus(first.corpus[0]), work_dir, options)
    if first.split == "test":  # no train qrels: every question may go to any split
        samples = [(s, "all") for s in _seeded(first.samples, n, f"{options.seed}:{first.name}")]
    else:
        test = load_dataset(path, seed=options.seed, split="test")
        n_test = round(n * options.test_share_beir)
        samples = [(s, "train") for s in _seeded(first.samples, n - n_test, f"{options.seed}:{first.name}:train")]
        samples += [(s, "test") for s in _seeded(test.samples, n_test, f"{options.seed}:{first.name}:test")]
    corpus_lines = read_corpus(first.corpus[0])
    gold = {d for s, _ in samples for d in s.relevant_doc_ids if d in corpus_lines}
    others = [d for d in corpus_lines if d not in gold]
    rng = random.Random(f"{options.seed}:{first.name}:distractors")
    keep = gold | set(rng.sample(others, min(options.distractors, len(others))))
    return _near_miss_plan(first.name, samples, corpus_lines, work_dir, options, keep_docs=keep)


def _is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "queries.jsonl").is_file() and (path / "qrels").is_dir()


# ------------------------------------------------------------------------------------------------ cache


def pipeline_key_config(pipeline_config: dict[str, Any]) -> dict[str, Any]:
    """The pipeline config that decides a cached answer. Left out: the confidence model and its settings, and the
    verifier's config (none of them changes what was retrieved or generated; verification is recomputed from the
    cached generation when the model is fitted)."""
    return {k: v for k, v in pipeline_config.items() if k not in {"confidence", "calibration", "verification"}}


def cache_key(
    question: str, index_version: str | None, pipeline_config: dict[str, Any], hidden_doc_ids: list[str] | None = None
) -> str:
    key = {
        "format": CACHE_FORMAT,
        "question": question,
        "index_version": index_version,
        "pipeline": pipeline_key_config(pipeline_config),
        "prompt": PROMPT_VERSION,
    }
    if hidden_doc_ids:  # only then, so the keys of everything cached before stay valid
        key["hidden_doc_ids"] = sorted(hidden_doc_ids)
    return sha256_json(key)[:24]


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def result_record(result: Any, seconds: float) -> dict[str, Any]:
    """A JSON-able record of a ``PipelineResult``; ``restore_*`` rebuild its parts."""
    retrieval = result.retrieval
    generated = result.generated
    return {
        "format": CACHE_FORMAT,
        "question": result.question,
        "response": result.response.model_dump(mode="json"),
        "retrieval": {
            "mode": retrieval.mode,
            "index_version": retrieval.index_version,
            "seconds": retrieval.seconds,
            "chunks": [asdict(c) for c in retrieval.chunks],
        },
        "generated": generated.to_dict() if generated is not None else None,
        "features": {k: float(v) for k, v in (getattr(result, "features", None) or {}).items()},
        "verification": _plain(getattr(result, "verification", None)),
        "seconds": seconds,
    }


def restore_retrieval(record: dict[str, Any]) -> RetrievalResult:
    data = record["retrieval"]
    fields = set(RetrievedChunk.__dataclass_fields__)
    chunks = [RetrievedChunk(**{k: v for k, v in c.items() if k in fields}) for c in data["chunks"]]
    return RetrievalResult(chunks, data["mode"], data["index_version"], np.zeros(0, dtype=np.float32),
                           data["seconds"])


def restore_generated(record: dict[str, Any]) -> GeneratedAnswer | None:
    data = record.get("generated")
    if not data:
        return None
    fields = set(GeneratedAnswer.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in fields}
    values["contexts"] = [Context(**c) for c in data["contexts"]]
    if values.get("logprobs") is not None:
        values["logprobs"] = [(str(t), float(lp)) for t, lp in values["logprobs"]]
    return GeneratedAnswer(**values)


@dataclass
class Collector:
    """Runs each question through its collection's pipeline once; cached results are read, not recomputed."""

    settings: Settings
    cache_dir: Path
    make_pipeline: Callable[[CollectionPlan], Any]
    log: Callable[[str], None] = print
    cached_only: bool = False  # skip questions not in the cache (fit on what an interrupted collection left)
    _pipelines: dict[str, Any] = field(default_factory=dict)

    def pipeline(self, plan: CollectionPlan) -> Any:
        if plan.name not in self._pipelines:
            self._pipelines[plan.name] = self.make_pipeline(plan)
        return self._pipelines[plan.name]

    def _stale(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Cached records by (question, collection), whatever config they were collected under."""
        if "_stale" not in self._pipelines:
            index: dict[tuple[str, str], dict[str, Any]] = {}
            for path in sorted(self.cache_dir.glob("*.json")):
                record = json.loads(path.read_text(encoding="utf-8"))
                collection = (record.get("key_config") or {}).get("retrieval", {}).get("collection")
                if collection:
                    index[(normalise(record["question"]), collection)] = record
            self._pipelines["_stale"] = index
        return self._pipelines["_stale"]

    def collect(self, plans: list[CollectionPlan]) -> list[tuple[CalibrationQuestion, dict[str, Any]]]:
        """Every question in a seeded interleaved order (a stopped run still covers every dataset)."""
        by_name = {p.name: p for p in plans}
        todo = [q for p in plans for q in p.questions]
        random.Random(f"{self.settings.seed}:collect-order").shuffle(todo)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        out: list[tuple[CalibrationQuestion, dict[str, Any]]] = []
        generated = failures = stale = 0
        for number, question in enumerate(todo, start=1):
            pipeline = self.pipeline(by_name[question.collection])
            index_version = pipeline.retriever.index_version()
            key = cache_key(question.sample.question, index_version, pipeline.to_dict(), question.sample.hidden_doc_ids)
            path = self.cache_dir / f"{key}.json"
            if path.is_file():
                record = json.loads(path.read_text(encoding="utf-8"))
            elif self.cached_only:  # the pipeline config changed since: use the answer collected before, if any
                record = self._stale().get((normalise(question.sample.question), question.collection))
                if record is None:
                    continue
                stale += 1
            else:
                tick = time.perf_counter()
                try:
                    result = pipeline.run(question.sample.question, filters=question.sample.hidden_filter,
                                          request_id=f"calibrate-{question.uid}")
                except RagError as exc:  # a rejected question is an abstention, not a crash
                    self.log(f"[{number}/{len(todo)}] {question.uid}: rejected ({exc.code}: {exc})")
                    continue
                except Exception as exc:  # a pipeline bug on one question must not lose the whole collection
                    self.log(f"[{number}/{len(todo)}] {question.uid}: FAILED {type(exc).__name__}: {exc!r}")
                    failures += 1
                    continue
                record = result_record(result, time.perf_counter() - tick)
                record["key"] = key
                record["key_config"] = pipeline_key_config(pipeline.to_dict())
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record), encoding="utf-8")
                tmp.replace(path)
                generated += 1
                response = record["response"]
                self.log(f"[{number}/{len(todo)}] {question.uid} {record['seconds']:.1f}s "
                         f"abstained={response['abstained']} {response['answer'][:70]!r}")
            out.append((question, record))
        self.log(f"collected {len(out)} questions ({generated} newly run, {len(out) - generated} from the cache, "
                 f"{failures} failed, {stale} collected under an earlier pipeline config)")
        return out
