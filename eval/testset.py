"""Test sets from the user's own documents: ``rag eval generate``.

A user who ingested their own documents has no labelled questions. This writes some, from their chunks, with the
local model (or an OpenAI-compatible one), and keeps only those that pass checks a reviewer would make:

1. **Sample** chunks stratified by document and section: documents in a seeded order, one chunk per document per
   round, each document's sections in turn, so a large document cannot fill the set. Chunks shorter than
   ``min_chunk_words`` are skipped (headings, captions).
2. **Write** one question plus its short answer per chunk (JSON-constrained, greedy: the same model, chunks and
   seed give the same set). With ``--examples FILE`` the prompt also shows a few real questions of the user's
   (a seeded sample) and asks for their style: a small model left alone keeps the chunk's own words, which favours
   BM25 when the set is used to compare retrieval modes (the bundled 1.5B writer ignored the examples, measured in
   docs/EVALUATION.md; a stronger ``--generator openai`` model may not).
3. **Filter**, each rejection counted by reason: the answer must occur in the chunk (normalised); the answer must
   not be in the question; the question must stand alone (no "the passage", "the text", ...) and must not copy a
   run of more than ``max_copied_words`` words of the chunk; near-duplicates of an accepted question (cosine of
   the product's embedder >= ``duplicate_cosine``, or the same answer from the same document) are dropped; a
   **second pass** asks the model to answer the question from the chunk alone, and the question stays only when
   that answer matches (token F1 >= 0.5 or containment).
4. **Near-miss unanswerables**: a seeded ``near_miss_share`` of the accepted questions, among those whose answer
   appears in no other document, become unanswerable by hiding their source document (``hidden_doc_ids``: the
   evaluator filters it out of retrieval, so the topic stays in the corpus and the answer goes).

Output: our JSONL format (``eval.datasets``), one record per question with ``provenance`` (chunk id, document,
section, generator, prompt version, seed, index version), plus ``<output>.summary.json`` (config, counts,
rejections by reason, the cost). Every model call is cached under ``data_dir/eval/testset-cache``, so an
interrupted run resumes where it stopped and a rerun costs nothing.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval.metrics import token_f1
from rag.answering.generation.backends import LLMBackend
from rag.errors import InvalidInputError, RagError
from rag.hashing import sha256_json, sha256_text
from rag.indexing.embedding import Embedder
from rag.indexing.store import StoredChunk
from rag.settings import Settings

log = logging.getLogger("rag.eval")

PROMPT_VERSION = "testset-v1"
UNANSWERABLE = "UNANSWERABLE"
WRITE_SYSTEM = "You write exam questions about documents. You reply with JSON only."
WRITE_USER = """Passage from "{title}":
<<<
{text}
>>>
{style}Write one question that this passage answers, and its answer.
- The answer is a short phrase copied exactly from the passage: a name, a number, a date or a few words.
- The question must make sense to someone who has not seen the passage: name its subject; never say "the passage",
  "the text" or "the author".
- Use your own words; do not copy a sentence of the passage.
Reply as JSON: {{"question": "...", "answer": "..."}}"""
STYLE_BLOCK = """Questions people really ask about documents like this one. Write yours in their style (their length,
wording and phrasing), about the passage above, not about their topics:
{examples}
"""
MAX_EXAMPLE_CHARS = 400
CHECK_SYSTEM = "You answer questions using only the passage you are given."
CHECK_USER = """Passage:
<<<
{text}
>>>
Question: {question}
Answer with a short phrase from the passage. If the passage does not answer the question, reply exactly:
UNANSWERABLE"""
QA_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
CONTEXT_WORDS = re.compile(
    r"\b(the|this|that|these|above|given|following|present) (passage|text|excerpt|paragraph|document|article|"
    r"section|author|study|studie|paper|researcher|report|experiment|trial|patient|participant|cohort)s?\b",
    re.IGNORECASE,
)
WORD = re.compile(r"[a-z0-9]+")
CHARS_PER_TOKEN = 4.0  # the cost estimate's rule of thumb for English text
REJECTION_REASONS = (
    "malformed", "question_length", "answer_length", "not_standalone", "answer_not_in_chunk", "answer_in_question",
    "copies_chunk", "duplicate", "not_answerable", "model_error",
)  # fmt: skip


@dataclass(frozen=True)
class GenerationConfig:
    """What decides the set; logged in the summary and part of every item's provenance."""

    n: int
    near_miss_share: float = 0.25
    seed: int = 42
    min_chunk_words: int = 40
    max_copied_words: int = 6
    duplicate_cosine: float = 0.9
    max_attempts_factor: float = 3.0
    max_tokens: int = 120
    min_question_words: int = 4
    max_question_words: int = 40
    max_answer_words: int = 12
    examples: tuple[str, ...] = ()  # real questions whose style the writer copies (see load_style_examples)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InvalidInputError(f"--n must be at least 1, got {self.n}")
        if any(not e.strip() or len(e) > MAX_EXAMPLE_CHARS for e in self.examples):
            raise InvalidInputError(f"a style example is empty or longer than {MAX_EXAMPLE_CHARS} characters")
        if not 0.0 <= self.near_miss_share < 1.0:
            raise InvalidInputError(f"--near-miss-share must be in [0, 1), got {self.near_miss_share}")

    @property
    def max_attempts(self) -> int:
        return math.ceil(self.n * self.max_attempts_factor)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prompt_version": PROMPT_VERSION}


@dataclass(frozen=True)
class CostEstimate:
    """What the run will cost at most, said before it starts (tokens by the chars/4 rule)."""

    candidate_chunks: int
    documents: int
    attempts: int
    cached_attempts: int
    prompt_tokens: int
    completion_tokens: int

    def describe(self) -> str:
        return (
            f"plan: up to {self.attempts} chunks tried ({self.cached_attempts} already cached) of "
            f"{self.candidate_chunks} candidates in {self.documents} documents; two model calls each, at most "
            f"~{self.prompt_tokens:,} prompt + ~{self.completion_tokens:,} completion tokens"
        )


@dataclass
class QuestionSetResult:
    items: list[dict[str, Any]]
    rejected: Counter[str]
    attempts: int
    config: GenerationConfig
    generator: dict[str, Any]
    index_version: str | None
    collection: str
    estimate: CostEstimate
    seconds: float
    model_calls: int = 0
    near_miss_wanted: int = 0
    examples: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        kinds = Counter(item["tags"]["kind"] for item in self.items)
        return {
            "questions": len(self.items),
            "answerable": kinds.get("generated", 0),
            "near_miss": kinds.get("near-miss", 0),
            "near_miss_wanted": self.near_miss_wanted,
            "attempts": self.attempts,
            "acceptance_rate": round(len(self.items) / self.attempts, 4) if self.attempts else None,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_examples": self.examples,
            "documents": len({item["provenance"]["doc_id"] for item in self.items}),
            "collection": self.collection,
            "index_version": self.index_version,
            "generator": self.generator,
            "config": self.config.to_dict(),
            "estimate": asdict(self.estimate),
            "model_calls": self.model_calls,
            "seconds": round(self.seconds, 2),
        }


# ------------------------------------------------------------------------------------------ text checks


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def normalised(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space: how answers and chunks are compared."""
    return " " + " ".join(words(text)) + " "


def contains(haystack: str, needle: str) -> bool:
    return bool(needle.strip()) and normalised(needle) in normalised(haystack)


def longest_copied_run(question: str, chunk: str) -> int:
    """The longest run of consecutive words of ``question`` that also occurs, in order, in ``chunk``."""
    q, c = words(question), normalised(chunk)
    best = 0
    for start in range(len(q)):
        length = best + 1
        while start + length <= len(q) and " " + " ".join(q[start : start + length]) + " " in c:
            best = length
            length += 1
    return best


def check_answer_matches(reply: str, answer: str) -> bool:
    """The second pass's verdict: the model's own answer from the chunk agrees with the written one."""
    if not reply.strip() or UNANSWERABLE.lower() in reply.lower():
        return False
    return token_f1(reply, answer) >= 0.5 or contains(reply, answer) or contains(answer, reply)


# ------------------------------------------------------------------------------------------ sampling


def stratified_order(chunks: Iterable[StoredChunk], seed: int, min_words: int) -> list[StoredChunk]:
    """Chunks in the order they are tried: round robin over documents (seeded order), and within a document over
    its sections (seeded), so the first N cover as many documents and sections as N allows."""
    rng = random.Random(f"{seed}:testset-order")
    by_doc: dict[str, dict[str, list[StoredChunk]]] = defaultdict(lambda: defaultdict(list))
    for chunk in sorted(chunks, key=lambda c: c.chunk_id):
        if len(words(chunk.text)) < min_words:
            continue
        doc = str(chunk.metadata.get("doc_id") or chunk.chunk_id)
        by_doc[doc][str(chunk.metadata.get("section") or "")].append(chunk)
    queues: list[list[StoredChunk]] = []
    for doc in sorted(by_doc):
        sections = [by_doc[doc][s] for s in sorted(by_doc[doc])]
        for items in sections:
            rng.shuffle(items)
        rng.shuffle(sections)
        queue: list[StoredChunk] = []  # the document's chunks, one section after another in turn
        while any(sections):
            for items in sections:
                if items:
                    queue.append(items.pop())
        queues.append(queue)
    rng.shuffle(queues)
    order: list[StoredChunk] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


# ------------------------------------------------------------------------------------------ the model


class CachedModel:
    """The two model calls, each cached on disk by (prompt version, model, prompt): resumable and free to rerun."""

    def __init__(self, backend: LLMBackend, cache_dir: Path, max_tokens: int) -> None:
        self.backend = backend
        self.cache_dir = cache_dir
        self.max_tokens = max_tokens
        self.calls = 0

    def key(self, messages: list[dict[str, str]]) -> str:
        return sha256_json({"prompt": PROMPT_VERSION, "model": self.backend.model_id, "messages": messages})[:32]

    def cached(self, messages: list[dict[str, str]]) -> bool:
        return (self.cache_dir / f"{self.key(messages)}.json").is_file()

    def ask(self, messages: list[dict[str, str]], schema: dict[str, Any] | None = None) -> str:
        path = self.cache_dir / f"{self.key(messages)}.json"
        if path.is_file():
            return str(json.loads(path.read_text(encoding="utf-8"))["text"])
        completion = self.backend.chat(
            messages,
            max_tokens=self.max_tokens, temperature=0.0, json_schema=schema,
        )  # fmt: skip
        self.calls += 1
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"text": completion.text, "seconds": completion.seconds}), encoding="utf-8")
        tmp.replace(path)
        return completion.text


def write_messages(chunk: StoredChunk, examples: Sequence[str] = ()) -> list[dict[str, str]]:
    title = str(chunk.metadata.get("title") or chunk.metadata.get("doc_id") or "a document")
    # without examples the prompt (and so the call cache) is exactly the plain one
    style = STYLE_BLOCK.format(examples="\n".join(f"- {e}" for e in examples)) if examples else ""
    user = WRITE_USER.format(title=title, text=chunk.text.strip(), style=style)
    return [{"role": "system", "content": WRITE_SYSTEM}, {"role": "user", "content": user}]


def load_style_examples(path: Path, k: int, seed: int, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """A seeded sample of ``k`` questions from a JSONL test set (its ``question`` field) or a text file (one per
    line): the style the writer is shown. ``exclude`` keeps them apart from questions they will be compared with."""
    if not path.is_file():
        raise InvalidInputError(
            f"examples file {path} does not exist",
            hint="pass a JSONL test set or a text file with one real question per line",
        )
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"examples file {path} is not UTF-8 text", hint="save it as UTF-8") from exc
    questions: list[str] = []
    for number, line in enumerate(lines, 1):
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{number} is not JSON", hint="one JSON object per line") from exc
            line = record.get("question", "") if isinstance(record, dict) else ""
            if not isinstance(line, str) or not line.strip():
                raise InvalidInputError(f"{path}:{number} has no \"question\" string",
                                        hint="each line needs a \"question\" field")  # fmt: skip
        questions.append(" ".join(line.split()))
    excluded = {" ".join(e.split()) for e in exclude}
    pool = sorted({q for q in questions if q not in excluded and len(q) <= MAX_EXAMPLE_CHARS})
    if not pool:
        raise InvalidInputError(f"examples file {path} has no usable question",
                                hint=f"questions of at most {MAX_EXAMPLE_CHARS} characters, one per line")  # fmt: skip
    return tuple(random.Random(f"{seed}:style-examples").sample(pool, min(k, len(pool))))


def check_messages(chunk: StoredChunk, question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": CHECK_SYSTEM},
        {"role": "user", "content": CHECK_USER.format(text=chunk.text.strip(), question=question)},
    ]


def parse_qa(text: str) -> tuple[str, str] | None:
    """(question, answer) from the model's JSON (the first object in the text), or None."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    question, answer = data.get("question"), data.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None
    return " ".join(question.split()), " ".join(answer.split()).strip(" .")


# ------------------------------------------------------------------------------------------ the generator


class QuestionSetGenerator:
    """Sample → write → filter → near-miss; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        config: GenerationConfig,
        backend: LLMBackend,
        embedder: Embedder,
        *,
        progress: bool = True,
        say: Callable[[str], None] = print,
    ) -> None:
        self.settings = settings
        self.config = config
        self.model = CachedModel(backend, settings.data_dir / "eval" / "testset-cache", config.max_tokens)
        self.embedder = embedder
        self.progress = progress
        self.say = say

    def estimate(self, order: Sequence[StoredChunk]) -> CostEstimate:
        tried = order[: self.config.max_attempts]
        check_overhead = len(CHECK_SYSTEM) + len(CHECK_USER) + 200
        style = len(STYLE_BLOCK) + sum(len(e) + 3 for e in self.config.examples) if self.config.examples else 0
        prompt_chars = sum(2 * len(c.text) + len(WRITE_SYSTEM) + len(WRITE_USER) + style + check_overhead
                           for c in tried)  # fmt: skip
        return CostEstimate(
            candidate_chunks=len(order),
            documents=len({c.metadata.get("doc_id") for c in order}),
            attempts=len(tried),
            cached_attempts=sum(self.model.cached(write_messages(c, self.config.examples)) for c in tried),
            prompt_tokens=int(prompt_chars / CHARS_PER_TOKEN),
            completion_tokens=2 * len(tried) * self.config.max_tokens,
        )

    def run(self, chunks: Sequence[StoredChunk], *, collection: str, index_version: str | None) -> QuestionSetResult:
        started = time.perf_counter()
        order = stratified_order(chunks, self.config.seed, self.config.min_chunk_words)
        if not order:
            raise InvalidInputError(
                f"collection {collection!r} has no chunk of at least {self.config.min_chunk_words} words",
                hint="ingest documents first (rag ingest PATH), or lower --min-chunk-words",
            )
        estimate = self.estimate(order)
        self.say(estimate.describe())
        accepted: list[tuple[StoredChunk, str, str]] = []
        vectors: list[np.ndarray] = []
        answered: set[tuple[str, str]] = set()  # (document, normalised answer) of accepted questions
        rejected: Counter[str] = Counter()
        examples: dict[str, list[dict[str, str]]] = defaultdict(list)
        attempts = 0
        bar = _bar(self.progress, self.config.n)
        for chunk in order[: self.config.max_attempts]:
            if len(accepted) >= self.config.n:
                break
            attempts += 1
            try:
                verdict, question, answer = self._try(chunk, vectors, answered)
            except RagError as exc:  # a failed call loses one chunk, not the run
                verdict, question, answer = "model_error", "", str(exc)[:200]
            if verdict == "ok":
                accepted.append((chunk, question, answer))
                bar.update(1)
            else:
                rejected[verdict] += 1
                if len(examples[verdict]) < 3:
                    examples[verdict].append({"chunk_id": chunk.chunk_id, "question": question, "answer": answer})
            bar.set_postfix(tried=attempts, kept=len(accepted))
        bar.close()
        items, near_wanted = self._records(accepted, chunks, index_version)
        if len(accepted) < self.config.n:
            self.say(f"only {len(accepted)} of {self.config.n} questions passed the checks in {attempts} attempts "
                     f"(rejected: {dict(rejected)}); raise --max-attempts-factor or ingest more documents")  # fmt: skip
        return QuestionSetResult(
            items=items, rejected=rejected, attempts=attempts, config=self.config,
            generator={"model": self.model.backend.model_id, **_generator_config(self.model.backend)},
            index_version=index_version, collection=collection, estimate=estimate,
            seconds=time.perf_counter() - started, model_calls=self.model.calls, near_miss_wanted=near_wanted,
            examples=dict(examples),
        )  # fmt: skip

    def _try(
        self, chunk: StoredChunk, vectors: list[np.ndarray], answered: set[tuple[str, str]]
    ) -> tuple[str, str, str]:
        """(verdict, question, answer): ``ok`` (its embedding then joins ``vectors``, its document and answer
        ``answered``) or the first check that failed."""
        config = self.config
        parsed = parse_qa(self.model.ask(write_messages(chunk, config.examples), QA_SCHEMA))
        if parsed is None:
            return "malformed", "", ""
        question, answer = parsed
        n_words = len(words(question))
        if not config.min_question_words <= n_words <= config.max_question_words:
            return "question_length", question, answer
        if not 1 <= len(words(answer)) <= config.max_answer_words:
            return "answer_length", question, answer
        if CONTEXT_WORDS.search(question):
            return "not_standalone", question, answer
        if not contains(chunk.text, answer):
            return "answer_not_in_chunk", question, answer
        if contains(question, answer):
            return "answer_in_question", question, answer
        if longest_copied_run(question, chunk.text) > config.max_copied_words:
            return "copies_chunk", question, answer
        fact = (str(chunk.metadata.get("doc_id")), normalised(answer))
        if fact in answered:  # the same fact of the same document, asked in other words
            return "duplicate", question, answer
        final = question if question.endswith("?") else question + "?"
        vector = self.embedder.embed([final])[0]
        if vectors and float(np.max(np.stack(vectors) @ vector)) >= config.duplicate_cosine:
            return "duplicate", question, answer
        reply = self.model.ask(check_messages(chunk, question))
        if not check_answer_matches(reply, answer):
            return "not_answerable", question, answer
        vectors.append(vector)
        answered.add(fact)
        return "ok", final, answer

    def _records(
        self, accepted: list[tuple[StoredChunk, str, str]], chunks: Sequence[StoredChunk], index_version: str | None
    ) -> tuple[list[dict[str, Any]], int]:
        """JSONL records; a seeded share of those whose answer no other document holds become near-misses."""
        wanted = round(len(accepted) * self.config.near_miss_share)
        normalised_by_doc: dict[str, list[str]] = defaultdict(list)  # each chunk normalised once, not per answer
        for chunk in chunks:
            normalised_by_doc[str(chunk.metadata.get("doc_id"))].append(normalised(chunk.text))

        def unique(item: tuple[StoredChunk, str, str]) -> bool:
            doc, needle = str(item[0].metadata.get("doc_id")), normalised(item[2])
            return not any(needle in t for d, texts in normalised_by_doc.items() if d != doc for t in texts)

        eligible = [i for i, item in enumerate(accepted) if unique(item)]
        near = set(random.Random(f"{self.config.seed}:near-miss").sample(eligible, min(wanted, len(eligible))))
        records = []
        for number, (chunk, question, answer) in enumerate(accepted):
            doc = str(chunk.metadata.get("doc_id"))
            provenance = {
                "chunk_id": chunk.chunk_id, "doc_id": doc, "section": str(chunk.metadata.get("section") or ""),
                "generator": self.model.backend.model_id, "prompt_version": PROMPT_VERSION,
                "seed": self.config.seed, "index_version": index_version,
                "chunk_sha256": sha256_text(chunk.text)[:16], "answer": answer,
                "style_examples": len(self.config.examples),
            }  # fmt: skip
            record: dict[str, Any] = {
                "id": f"gen-{number + 1:04d}", "question": question, "provenance": provenance,
                "tags": {"kind": "generated", "doc": doc},
            }  # fmt: skip
            if number in near:
                record.update(answerable=False, reference=None, reference_doc_ids=[], hidden_doc_ids=[doc])
                record["tags"]["kind"] = "near-miss"
            else:
                record.update(answerable=True, reference=answer, reference_doc_ids=[doc],
                              reference_contexts=[chunk.text])  # fmt: skip
            records.append(record)
        return records, wanted


def _generator_config(backend: LLMBackend) -> dict[str, Any]:
    try:
        return {k: v for k, v in backend.to_dict().items() if k != "model"}
    except Exception:  # a backend's description is for provenance only
        return {}


def _bar(enabled: bool, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="questions", unit="q", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def write_testset(result: QuestionSetResult, output: Path) -> Path:
    """The JSONL set and ``<output>.summary.json``, each written whole (temp file + rename)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text("".join(json.dumps(item, ensure_ascii=False) + "\n" for item in result.items), encoding="utf-8")
    tmp.replace(output)
    summary = output.with_name(output.name + ".summary.json")
    summary.write_text(json.dumps(result.summary(), indent=2, default=str), encoding="utf-8")
    return summary
