"""Chat: follow-up questions answered with the conversation's help (``POST /v1/chat``, ``/v1/chat/stream``).

The history comes from a server-side session (``session_id``; SQLite under data_dir/chat, with a TTL and a size
cap) or from an explicit ``messages`` list. A follow-up that does not stand alone is rewritten into a standalone
question (rag/answering/conversation.py) and then answered by the same ``QueryPipeline`` as ``/v1/query``; the
response is a ``QueryResponse`` plus the session id and the ``rewrite`` record. The OpenAI-compatible route reuses
``prepare_turn`` so both paths screen and rewrite identically.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from api.deps import GUARD_PROBLEMS, KEY_PROBLEMS, QueryAccess, Services, check_collection
from api.guards import key_fingerprint, presented_key
from api.problems import ApiError, problem_responses
from api.routes.query import record
from api.schemas import FILTER_SCHEMA
from rag.answering.conversation import ChatTurn, ConversationRewriter, Rewrite
from rag.answering.generation.backends import LLMBackend
from rag.answering.pipeline import PipelineResult, QueryPipeline, QueryResponse, ResultEvent, StreamEvent, TokenEvent
from rag.errors import RagError
from rag.settings import COLLECTION_NAME_PATTERN, RetrievalMode, Settings

CHAT_PROBLEMS = problem_responses(
    *GUARD_PROBLEMS, *KEY_PROBLEMS, "invalid_input", "unsafe_input", "not_found", "index_not_ready",
    "store_unavailable", "overloaded", "model_error", "timeout", "generation_timeout",
)  # fmt: skip
STREAM_RESPONSES = {200: {"description": "text/event-stream", "content": {"text/event-stream": {}}}, **CHAT_PROBLEMS}
log = logging.getLogger("rag.api")
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
ANONYMOUS = "anonymous"  # the owner of a session started without an API key

router = APIRouter(tags=["chat"])


# --- shared with the OpenAI-compatible route
@dataclass
class PreparedTurn:
    """A follow-up after screening and rewriting, with the pipeline's event stream already started."""

    rewrite: Rewrite
    first: StreamEvent
    rest: Iterator[StreamEvent]


def llm_of(services: Services) -> LLMBackend | None:
    generator = services.answerer.generator
    return generator if isinstance(generator, LLMBackend) else None


def prepare_turn(
    services: Services,
    question: str,
    history: list[ChatTurn],
    *,
    collection: str | None,
    request_id: str,
    top_k: int | None = None,
    mode: RetrievalMode | None = None,
    filters: dict[str, Any] | None = None,
) -> PreparedTurn:
    """Rewrite (when needed) and start answering; blocking, so call it in a worker thread.

    Raises the pipeline's own errors (unsafe or empty question, missing index...) before any byte is sent, so
    they become HTTP errors. The model rewrite takes a generation slot like an answer does.
    """
    pipeline: QueryPipeline = services.pipeline(collection)
    rewriter = ConversationRewriter(pipeline.settings, llm_of(services))
    slot = services.gate.slot if rewriter.method == "model" else nullcontext
    with slot():
        rewrite = rewriter.rewrite(
            question, history, probe=lambda q: pipeline.retrieve(q, top_k, mode, filters).top_dense
        )
    log_rewrite(rewrite, request_id, pipeline.settings)
    iterator = pipeline.stream(
        rewrite.standalone_question,
        top_k=top_k,
        mode=mode,
        filters=filters,
        request_id=request_id,
        generation_slot=services.gate.slot,
    )
    first = next(iterator)
    return PreparedTurn(rewrite, first, iterator)


def log_rewrite(rewrite: Rewrite, request_id: str, settings: Settings) -> None:
    """One log line per follow-up: the decision, method, time and any fallback; the texts only when
    RAG_LOG_QUESTIONS=text (the same privacy rule as the query log)."""
    record = rewrite.to_dict()
    if settings.log_questions != "text":
        del record["question"], record["standalone_question"]
    log.info("follow-up %s", json.dumps(record), extra={"request_id": request_id})


def drain(turn: PreparedTurn) -> Iterator[StreamEvent]:
    """Every event of a prepared turn, closing the pipeline's generator whatever happens."""
    event: StreamEvent | None = turn.first
    try:
        while event is not None:
            yield event
            event = next(turn.rest, None)
    finally:
        turn.rest.close()  # type: ignore[attr-defined]


def finish(turn: PreparedTurn) -> PipelineResult:
    """Run a prepared turn to its result (blocking)."""
    for event in drain(turn):
        if isinstance(event, ResultEvent):
            return event.result
    raise RuntimeError("the pipeline ended without a result")  # pragma: no cover


# --- sessions
class SessionStore:
    """Chat histories in one SQLite file: turns expire after ``ttl_s`` idle, at most ``max_turns`` per session and
    ``max_sessions`` sessions (least recently used dropped first). One connection per call: thread-safe.

    A session belongs to the caller that created it (``owner``: the API key's fingerprint, or ``anonymous``): any
    other caller gets 403, so a session id that leaks does not leak the conversation."""

    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.data_dir / "chat" / "sessions.sqlite"
        self.ttl_s = settings.chat_session_ttl_s
        self.max_turns = settings.chat_session_max_turns
        self.max_sessions = settings.chat_max_sessions
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        if not self._ready:
            db.executescript(
                "CREATE TABLE IF NOT EXISTS turns (session TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL,"
                " content TEXT NOT NULL, standalone TEXT, at REAL NOT NULL, PRIMARY KEY (session, seq));"
                "CREATE TABLE IF NOT EXISTS sessions (session TEXT PRIMARY KEY, collection TEXT, touched REAL);"
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
            if "owner" not in columns:  # a store written before sessions had owners
                db.execute("ALTER TABLE sessions ADD COLUMN owner TEXT")
            self._ready = True
        return db

    def history(self, session: str, collection: str, owner: str) -> list[ChatTurn]:
        """The live turns of ``session`` (empty when unknown or expired); 403 when another caller created it, 422
        when it belongs to another collection."""
        with self._lock, closing(self._connect()) as db, db:
            self._expire(db)
            row = db.execute("SELECT collection, owner FROM sessions WHERE session = ?", (session,)).fetchone()
            if row is None:
                return []
            _check_owner(session, row[1], owner)
            if row[0] != collection:
                raise ApiError(422, "invalid_input", f"session {session!r} belongs to another collection")
            rows = db.execute(
                "SELECT role, COALESCE(standalone, content) FROM turns WHERE session = ? ORDER BY seq", (session,)
            ).fetchall()
        return [ChatTurn(role, content) for role, content in rows]

    def append(self, session: str, collection: str, owner: str, turns: list[tuple[str, str, str | None]]) -> None:
        """Add (role, content, standalone form) turns and enforce the caps; a new session gets ``owner``."""
        now = time.time()
        with self._lock, closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO sessions (session, collection, touched, owner) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(session) DO UPDATE SET touched = excluded.touched",
                (session, collection, now, owner),
            )
            # another caller may have created this id meanwhile: then the insert is rolled back, nothing written
            _check_owner(session, db.execute("SELECT owner FROM sessions WHERE session = ?", (session,)).fetchone()[0],
                         owner)  # fmt: skip
            last = db.execute("SELECT COALESCE(MAX(seq), 0) FROM turns WHERE session = ?", (session,)).fetchone()[0]
            db.executemany(
                "INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (session, last + i, role, text, standalone, now)
                    for i, (role, text, standalone) in enumerate(turns, 1)
                ],
            )
            db.execute(
                "DELETE FROM turns WHERE session = ? AND seq <= ?", (session, last + len(turns) - self.max_turns)
            )
            db.execute(
                "DELETE FROM sessions WHERE session NOT IN"
                " (SELECT session FROM sessions ORDER BY touched DESC LIMIT ?)",
                (self.max_sessions,),
            )
            db.execute("DELETE FROM turns WHERE session NOT IN (SELECT session FROM sessions)")

    def _expire(self, db: sqlite3.Connection) -> None:
        cutoff = time.time() - self.ttl_s
        db.execute("DELETE FROM sessions WHERE touched < ?", (cutoff,))
        db.execute("DELETE FROM turns WHERE session NOT IN (SELECT session FROM sessions)")


def _check_owner(session: str, stored: str | None, owner: str) -> None:
    """403 unless ``owner`` started the session (a store from before owners counts as ``anonymous``)."""
    if (stored or ANONYMOUS) != owner:
        raise ApiError(403, "forbidden", f"session {session!r} was started by another caller (API key); continue "
                       "it with that key, or omit session_id to start a new one")  # fmt: skip


# --- HTTP
class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(max_length=100_000, description="The follow-up question.", json_schema_extra={"minLength": 1})
    session_id: str | None = Field(
        None, pattern=SESSION_ID_PATTERN, description="Continue this server-side session (a new one when omitted)."
    )
    messages: list[ChatMessageIn] | None = Field(
        None, max_length=200, description="An explicit history instead of a session (nothing is stored)."
    )
    top_k: int | None = Field(None, ge=1, le=20)
    collection: str | None = Field(None, pattern=COLLECTION_NAME_PATTERN)
    mode: RetrievalMode | None = None
    filters: Annotated[dict[str, Any], WithJsonSchema(FILTER_SCHEMA)] | None = None


class ChatResponse(QueryResponse):
    session_id: str | None = Field(None, description="The session this turn was stored in (null with `messages`).")
    question: str = Field(description="The question as asked (normalised).")
    rewrite: dict[str, Any] = Field(description="How the follow-up was turned into the standalone question.")


def session_store(services: Services) -> SessionStore:
    """One store per ``Services`` (kept on it so the lock is shared by every request of the process)."""
    store = getattr(services, "_chat_sessions", None)
    if store is None:
        store = SessionStore(services.settings)
        services._chat_sessions = store  # type: ignore[attr-defined]
    return store


def session_owner(request: Request, services: Services) -> str:
    """Who may continue a session: the fingerprint of a valid API key, else ``anonymous``."""
    key = presented_key(request)
    return f"key:{key_fingerprint(key)}" if key and services.keys.valid(key) else ANONYMOUS


def _begin(
    services: Services, body: ChatRequest, request_id: str, owner: str
) -> tuple[str | None, PreparedTurn]:
    if body.session_id is not None and body.messages is not None:
        raise ApiError(422, "invalid_input", "send either session_id or messages, not both")
    collection = body.collection or services.settings.collection
    session = None if body.messages is not None else (body.session_id or uuid.uuid4().hex)
    if body.messages is not None:
        history = [ChatTurn(m.role, m.content) for m in body.messages]
    else:
        history = session_store(services).history(body.session_id, collection, owner) if body.session_id else []
    turn = prepare_turn(
        services, body.question, history, collection=collection, request_id=request_id,
        top_k=body.top_k, mode=body.mode, filters=body.filters,
    )  # fmt: skip
    return session, turn


def _complete(
    services: Services,
    body: ChatRequest,
    session: str | None,
    owner: str,
    turn: PreparedTurn,
    response: QueryResponse,
) -> ChatResponse:
    rewrite = turn.rewrite
    if session is not None:
        collection = body.collection or services.settings.collection
        standalone = rewrite.standalone_question if rewrite.rewritten else None
        session_store(services).append(
            session, collection, owner, [("user", rewrite.question, standalone), ("assistant", response.answer, None)]
        )
    return ChatResponse(
        **response.model_dump(), session_id=session, question=rewrite.question, rewrite=rewrite.to_dict()
    )


@router.post("/v1/chat", response_model=ChatResponse, responses=CHAT_PROBLEMS)
async def chat(body: ChatRequest, request: Request, services: QueryAccess) -> ChatResponse:
    """Answer a follow-up using the session's (or the given) history; the rewrite is returned with the answer."""
    check_collection(request, body.collection or services.settings.collection)

    owner = session_owner(request, services)

    def run() -> tuple[str | None, PreparedTurn, PipelineResult]:
        session, turn = _begin(services, body, request.state.request_id, owner)
        return session, turn, finish(turn)

    try:
        session, turn, result = await asyncio.wait_for(
            run_in_threadpool(run), timeout=services.settings.request_timeout_s
        )
    except TimeoutError as exc:
        raise ApiError(504, "timeout", f"no answer within {services.settings.request_timeout_s:.0f}s") from exc
    record(services, turn.rewrite.standalone_question, result)
    return await run_in_threadpool(_complete, services, body, session, owner, turn, result.response)


@router.post("/v1/chat/stream", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def chat_stream(body: ChatRequest, request: Request, services: QueryAccess) -> Response:
    """Server-sent events: one `rewrite` event, `token` events, then one `result` event (a ``ChatResponse``)."""
    check_collection(request, body.collection or services.settings.collection)
    owner = session_owner(request, services)
    session, turn = await run_in_threadpool(_begin, services, body, request.state.request_id, owner)

    def lines() -> Iterator[str]:
        yield f"event: rewrite\ndata: {json.dumps({'session_id': session, **turn.rewrite.to_dict()})}\n\n"
        try:
            for event in drain(turn):
                if isinstance(event, TokenEvent):
                    yield f"event: token\ndata: {json.dumps({'delta': event.delta})}\n\n"
                else:
                    record(services, turn.rewrite.standalone_question, event.result)
                    result = _complete(services, body, session, owner, turn, event.response)
                    yield f"event: result\ndata: {result.model_dump_json()}\n\n"
        except RagError as exc:
            yield f"event: error\ndata: {json.dumps({'code': exc.code, 'detail': str(exc)})}\n\n"

    return StreamingResponse(
        iterate_in_threadpool(lines()),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
