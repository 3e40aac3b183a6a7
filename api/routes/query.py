"""Answers: one JSON answer, the same as server-sent events, and what this process serves (/v1/info)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from api.deps import GUARD_PROBLEMS, KEY_PROBLEMS, QueryAccess, Services, check_collection
from api.problems import ApiError, problem_responses
from api.schemas import QueryRequest
from rag.answering.pipeline import PipelineResult, QueryResponse, ResultEvent, StreamEvent, TokenEvent
from rag.errors import RagError

log = logging.getLogger("rag.api")

# What each route may answer besides its success (documented in the OpenAPI schema, checked by fuzzing).
QUERY_PROBLEMS = problem_responses(
    *GUARD_PROBLEMS, *KEY_PROBLEMS, "invalid_input", "unsafe_input", "not_found", "index_not_ready",
    "store_unavailable", "overloaded", "model_error", "timeout", "generation_timeout",
)  # fmt: skip
INFO_PROBLEMS = problem_responses("rate_limited", "not_ready", *KEY_PROBLEMS, "index_not_ready", "store_unavailable")
STREAM_RESPONSES = {200: {"description": "text/event-stream", "content": {"text/event-stream": {}}}, **QUERY_PROBLEMS}

router = APIRouter(tags=["query"])


def record(services: Services, question: str, result: PipelineResult) -> None:
    """Metrics and the query log; a failed log write is logged, never turned into a failed answer."""
    response = result.response
    services.metrics.observe_answer(response)
    try:
        services.query_log.append(question, response, result.query_embedding, result.top_score)
    except (OSError, ValueError):
        log.exception("could not append to the query log", extra={"request_id": response.request_id})


def events(services: Services, body: QueryRequest, request_id: str) -> Iterator[StreamEvent]:
    return services.pipeline(body.collection).stream(
        body.question,
        top_k=body.top_k,
        mode=body.mode,
        filters=body.filters,
        request_id=request_id,
        generation_slot=services.gate.slot,
    )


def sse_lines(services: Services, body: QueryRequest, first: StreamEvent, rest: Iterator[StreamEvent]) -> Iterator[str]:
    """`token` events, then one `result` event; a pipeline error after the first event becomes an `error` event."""
    event: StreamEvent | None = first
    try:
        while event is not None:
            if isinstance(event, TokenEvent):
                yield f"event: token\ndata: {json.dumps({'delta': event.delta})}\n\n"
            else:
                record(services, body.question, event.result)
                yield f"event: result\ndata: {event.response.model_dump_json()}\n\n"
            event = next(rest, None)
    except RagError as exc:
        yield f"event: error\ndata: {json.dumps({'code': exc.code, 'detail': str(exc)})}\n\n"
    finally:
        rest.close()  # type: ignore[attr-defined]


@router.get("/v1/info", responses=INFO_PROBLEMS)
async def info(request: Request, services: QueryAccess) -> dict[str, Any]:
    """Versions and the pipeline configuration this process serves."""
    check_collection(request, services.settings.collection)
    pipeline = services.pipeline()
    return {
        "versions": pipeline.versions(pipeline.retriever.index_version()).model_dump(),
        "config": pipeline.to_dict(),
    }


@router.post("/v1/query", response_model=QueryResponse, responses=QUERY_PROBLEMS)
async def query(body: QueryRequest, request: Request, services: QueryAccess) -> QueryResponse:
    """Answer a question with citations, or abstain with the fixed answer."""
    check_collection(request, body.collection or services.settings.collection)

    def run() -> PipelineResult:
        for event in events(services, body, request.state.request_id):
            if isinstance(event, ResultEvent):
                return event.result
        raise RuntimeError("pipeline produced no result")

    try:
        result = await asyncio.wait_for(run_in_threadpool(run), timeout=services.settings.request_timeout_s)
    except TimeoutError as exc:
        raise ApiError(504, "timeout", f"no answer within {services.settings.request_timeout_s:.0f}s") from exc
    record(services, body.question, result)
    return result.response


@router.post("/v1/query/stream", response_class=StreamingResponse, responses=STREAM_RESPONSES)
async def query_stream(body: QueryRequest, request: Request, services: QueryAccess) -> Response:
    """Server-sent events: `token` events with text deltas, then one `result` event with the full response."""
    check_collection(request, body.collection or services.settings.collection)
    iterator = events(services, body, request.state.request_id)
    first = await run_in_threadpool(next, iterator)  # validation, retrieval and queueing errors → HTTP problems
    return StreamingResponse(
        iterate_in_threadpool(sse_lines(services, body, first, iterator)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
