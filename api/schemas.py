"""Request and response bodies of the HTTP API (the pipeline's own ``QueryResponse`` and the ``Job`` state are
reused as they are); their JSON schemas are what the OpenAPI document publishes and the fuzzing suite explores."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from rag.indexing.sparse import FILTERABLE_KEYS
from rag.settings import COLLECTION_NAME_PATTERN, RetrievalMode

_SCALAR: dict[str, Any] = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_LIST = {"type": "array", "items": _SCALAR, "minItems": 1}
# The filter grammar, published in the OpenAPI schema (``normalise_filters`` in retrieval enforces it, with 422).
FILTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"enum": list(FILTERABLE_KEYS)},
    "additionalProperties": {
        "anyOf": [
            _SCALAR,
            {
                "type": "object",
                "properties": {"$eq": _SCALAR, "$ne": _SCALAR, "$in": _LIST, "$nin": _LIST},
                "additionalProperties": False,
                "minProperties": 1,
            },
        ]
    },
}


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        max_length=100_000,
        description="The question; normalised and screened before use.",
        json_schema_extra={"minLength": 1},  # documented; a blank question is refused by the screening (422)
    )
    top_k: int | None = Field(None, ge=1, le=20, description="Chunks to retrieve (default 4, RAG_TOP_K).")
    collection: str | None = Field(None, pattern=COLLECTION_NAME_PATTERN, description="Default: RAG_COLLECTION.")
    mode: RetrievalMode | None = Field(None, description="Default: RAG_RETRIEVAL_MODE.")
    filters: Annotated[dict[str, Any], WithJsonSchema(FILTER_SCHEMA)] | None = Field(
        None,
        description='Metadata filter on doc_id, source, title or format, e.g. {"format": {"$in": ["pdf"]}}.',
    )


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(
        min_length=1, max_length=100, description="Paths under RAG_INGEST_ROOTS."
    )
    collection: str | None = Field(None, pattern=COLLECTION_NAME_PATTERN)
    prune: bool = True


class JobAccepted(BaseModel):
    job_id: str
    state: str
    status_url: str
