"""The OpenAI chat API in front of ragkit: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Chat clients that already speak the OpenAI protocol (Open WebUI, AnythingLLM, the ``openai`` SDK) can use ragkit as
a "model": one model per collection (``ragkit-<collection>``; ``ragkit`` is the default collection). The last user
message is the question, earlier user/assistant turns are the history (rewritten into a standalone question as in
``/v1/chat``); system messages are ignored, because the answer prompt is ragkit's own. The completion's content is
the answer followed by its numbered references; the full ``QueryResponse`` (plus the ``rewrite``) rides in the
``ragkit`` extension field, on the completion and on the last stream chunk. An abstention is a normal completion
whose content is the fixed abstention text, with ``ragkit.abstained: true``.

Streaming sends the role chunk at once and the content once the answer is verified: the verifier can still cut
or withdraw a generated answer, and a chat client cannot take back text it has shown.

Errors on these routes use OpenAI's body (``{"error": {"message", "type", "code", "param"}}``) instead of RFC 9457
problems: ``OpenAIRoute`` converts every exception raised while serving them (auth and rate-limit dependencies,
body validation, pipeline errors) in this one place, so the rest of the API is untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import QueryAccess, Services, check_collection, readable
from api.problems import PROBLEMS, ApiError, code_for
from api.routes.chat import PreparedTurn, drain, finish, prepare_turn
from api.routes.query import record
from api.schemas import FILTER_SCHEMA
from rag.answering.conversation import ChatTurn
from rag.answering.pipeline import PipelineResult, QueryResponse, ResultEvent
from rag.errors import RagError
from rag.indexing.manifest import Manifest
from rag.settings import COLLECTION_NAME_PATTERN, RetrievalMode, Settings

log = logging.getLogger("rag.api")
MODEL_PREFIX = "ragkit"
OWNER = "ragkit"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


# --- errors
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OpenAIErrorBody, "description": "OpenAI-style error body"} for status in statuses}


COMPLETION_ERRORS = _error_responses(400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
# A body whose declared Content-Length is over RAG_MAX_BODY_BYTES is refused by the size guard before any route
# runs, as an RFC 9457 problem: documented as the second form of 413 here.
COMPLETION_ERRORS[413] = {
    "description": "Request body too large (OpenAI error body, or a problem when refused before reading it)",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/OpenAIErrorBody"}},
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}},
    },
}
MODELS_ERRORS = _error_responses(400, 401, 403, 404, 429, 503)


def error_parts(exc: Exception) -> tuple[int, str, str, str | None, dict[str, str]]:
    """(status, code, message, param, headers) of an exception; a validation failure (422 elsewhere) is a 400,
    as OpenAI answers it."""
    if isinstance(exc, ApiError):
        status, code, message, param, headers = exc.status, exc.code, str(exc), None, exc.headers
    elif isinstance(exc, RequestValidationError):
        errors = exc.errors()
        locs = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in errors]
        message = "; ".join(f"{loc or 'body'}: {e.get('msg')}" for loc, e in zip(locs, errors, strict=True))
        status, code, param, headers = 400, "validation_error", (locs[0] or None) if locs else None, {}
    elif isinstance(exc, RagError):
        code = code_for(exc)
        status, message, param, headers = PROBLEMS[code][0], str(exc), None, {}
    elif isinstance(exc, StarletteHTTPException):
        status, code, message, param = exc.status_code, "http_error", str(exc.detail), None
        headers = dict(getattr(exc, "headers", None) or {})
    else:
        log.exception("unhandled error on the OpenAI-compatible route")
        status, code, message, param, headers = 500, "internal_error", "an unexpected error occurred", None, {}
    if status == 422:
        status = 400
    if code in {"overloaded", "not_ready", "index_not_ready", "store_unavailable"}:
        headers = {"Retry-After": "5", **headers}
    return status, code, message, param, headers


def error_response(exc: Exception) -> JSONResponse:
    status, code, message, param, headers = error_parts(exc)
    kind = ERROR_TYPES.get(status, "server_error")
    body = OpenAIErrorBody(error=OpenAIErrorDetail(message=message, type=kind, code=code, param=param))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class OpenAIRoute(APIRoute):
    """Routes whose every failure is answered as an OpenAI error body (the one place that maps them)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error of this router, mapped once
                return error_response(exc)

        return route


router = APIRouter(tags=["openai"], route_class=OpenAIRoute)


# --- models
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = OWNER


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def collections(settings: Settings) -> list[tuple[str, int]]:
    """Ingested collections (a manifest on disk) with the manifest's modification time."""
    if not settings.manifest_dir.is_dir():
        return []
    paths = settings.manifest_dir.glob("*.json")
    return sorted((p.stem, int(p.stat().st_mtime)) for p in paths if re.match(COLLECTION_NAME_PATTERN, p.stem))


def model_id(collection: str) -> str:
    return f"{MODEL_PREFIX}-{collection}"


def collection_of(model: str, settings: Settings) -> str:
    """``ragkit`` → the default collection, ``ragkit-NAME`` → NAME; anything else is an unknown model (404)."""
    if model == MODEL_PREFIX:
        return settings.collection
    name = model.removeprefix(f"{MODEL_PREFIX}-")
    if name != model and Manifest.path_for(settings.manifest_dir, name).exists():
        return name
    raise ApiError(404, "model_not_found", f"the model {model!r} does not exist; GET /v1/models lists them")


@router.get("/v1/models", response_model=ModelList, responses=MODELS_ERRORS)
async def list_models(request: Request, services: QueryAccess) -> ModelList:
    """One model per ingested collection (those the key may read)."""
    found = dict(collections(services.settings))
    cards = [ModelCard(id=model_id(name), created=found[name]) for name in readable(request, list(found))]
    return ModelList(data=cards)


@router.get("/v1/models/{model}", response_model=ModelCard, responses=MODELS_ERRORS)
async def get_model(
    model: Annotated[str, PathParam(max_length=200)], request: Request, services: QueryAccess
) -> ModelCard:
    """One model (collection) by id."""
    name = check_collection(request, collection_of(model, services.settings))
    created = dict(collections(services.settings)).get(name, 0)
    return ModelCard(id=model_id(name), created=created)


# --- chat completions
class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=50)
    text: str | None = Field(None, max_length=100_000)


class CompletionMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, max_length=200)

    def text(self) -> str:
        if isinstance(self.content, list):
            if any(part.type != "text" for part in self.content):
                raise ApiError(400, "invalid_input", "only text content parts are supported")
            return "\n".join(part.text or "" for part in self.content)
        return self.content or ""


class RagkitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int | None = Field(None, ge=1, le=20)
    mode: RetrievalMode | None = None
    filters: Annotated[dict[str, Any], WithJsonSchema(FILTER_SCHEMA)] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The OpenAI request; sampling parameters are accepted and ignored (answers are greedy and grounded)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(max_length=200, description="ragkit-<collection> (GET /v1/models), or ragkit.")
    messages: list[CompletionMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, le=1, description="Only one choice is produced.")
    ragkit: RagkitOptions | None = Field(None, description="ragkit's retrieval options (top_k, mode, filters).")


def question_and_history(messages: list[CompletionMessage]) -> tuple[str, list[ChatTurn]]:
    """The last user message is the question; earlier user/assistant turns are the history."""
    if messages[-1].role != "user":
        raise ApiError(400, "invalid_input", "the last message must have role 'user' (it is the question)")
    history = [ChatTurn(m.role, m.text()) for m in messages[:-1] if m.role in ("user", "assistant")]
    return messages[-1].text(), history


def with_references(response: QueryResponse) -> str:
    """The answer, then its citations as numbered references (none for an abstention)."""
    if response.abstained or not response.citations:
        return response.answer
    lines = [f"[{c.index}] {c.title or c.doc_id} — {c.source}" for c in response.citations]
    return response.answer + "\n\nReferences:\n" + "\n".join(lines)


def extension(result: PipelineResult, turn: PreparedTurn) -> dict[str, Any]:
    return {**result.response.model_dump(mode="json"), "rewrite": turn.rewrite.to_dict()}


def usage(response: QueryResponse) -> dict[str, int]:
    prompt = response.usage.get("prompt_tokens") or 0
    completion = response.usage.get("completion_tokens") or 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _start(services: Services, body: ChatCompletionRequest, request_id: str) -> PreparedTurn:
    collection = collection_of(body.model, services.settings)
    question, history = question_and_history(body.messages)
    options = body.ragkit or RagkitOptions()
    return prepare_turn(
        services, question, history, collection=collection, request_id=request_id,
        top_k=options.top_k, mode=options.mode, filters=options.filters,
    )  # fmt: skip


@router.post("/v1/chat/completions", responses=COMPLETION_ERRORS)
async def chat_completions(body: ChatCompletionRequest, request: Request, services: QueryAccess) -> Response:
    """An OpenAI chat completion answered by ragkit (``stream: true`` for server-sent chunks)."""
    request_id = request.state.request_id
    check_collection(request, collection_of(body.model, services.settings))
    if body.stream:
        turn = await run_in_threadpool(_start, services, body, request_id)
        chunks = stream_chunks(services, body, turn, f"chatcmpl-{request_id}")
        return StreamingResponse(
            iterate_in_threadpool(chunks),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def run() -> tuple[PreparedTurn, PipelineResult]:
        turn = _start(services, body, request_id)
        return turn, finish(turn)

    try:
        turn, result = await asyncio.wait_for(run_in_threadpool(run), timeout=services.settings.request_timeout_s)
    except TimeoutError as exc:
        raise ApiError(504, "timeout", f"no answer within {services.settings.request_timeout_s:.0f}s") from exc
    record(services, turn.rewrite.standalone_question, result)
    completion = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": result.response.versions.config,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": with_references(result.response)},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage(result.response),
        "ragkit": extension(result, turn),
    }
    return JSONResponse(completion)


def stream_chunks(
    services: Services, body: ChatCompletionRequest, turn: PreparedTurn, completion_id: str
) -> Iterator[str]:
    """OpenAI ``chat.completion.chunk`` lines: the role, the verified content, the finish (with ``ragkit``),
    usage when asked, then ``[DONE]``. A failure after the first byte is sent as an ``error`` chunk."""
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        body_ = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                 "choices": [choice], **extra}  # fmt: skip
        return f"data: {json.dumps(body_)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    try:
        result = next(e.result for e in drain(turn) if isinstance(e, ResultEvent))
        record(services, turn.rewrite.standalone_question, result)
        content = with_references(result.response)
        for start in range(0, len(content), 64):
            yield chunk({"content": content[start : start + 64]})
        yield chunk({}, "stop", system_fingerprint=result.response.versions.config, ragkit=extension(result, turn))
        if body.stream_options is not None and body.stream_options.include_usage:
            tail = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [], "usage": usage(result.response)}  # fmt: skip
            yield f"data: {json.dumps(tail)}\n\n"
    except Exception as exc:  # headers are sent: the error travels as a chunk, as OpenAI streams do
        status, code, message, param, _ = error_parts(exc)
        error = {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "code": code, "param": param}
        yield f"data: {json.dumps({'error': error})}\n\n"
    yield "data: [DONE]\n\n"
