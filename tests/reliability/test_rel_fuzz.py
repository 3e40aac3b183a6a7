"""Schemathesis over the app's own OpenAPI schema (every check), plus regression tests for what it found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from api.problems import PROBLEMS, code_for
from bench.reliability import API_KEY, Service, run_fuzz
from rag.errors import GenerationTimeoutError, StoreUnavailableError

Client = Callable[..., TestClient]


def test_fuzzing_finds_no_server_error_and_no_schema_violation(suite_api: Service, tmp_path: Path) -> None:
    """A bounded run (5 examples per operation and phase); `bench/reliability.py --long` runs 300."""
    result = run_fuzz(suite_api.url, api_key=API_KEY, max_examples=5, report_dir=tmp_path / "fuzz")
    print(f"\nfuzz: {result.line()}")
    assert result.cases >= 100, result.line()
    assert result.server_errors == 0, result.line()
    assert not result.failures, "\n".join(result.failures)
    assert result.ok, (result.report_dir / "output.txt").read_text()[-4000:]
    assert result.statuses.get(200, 0) > 0, "no generated request reached an answer"


@pytest.mark.parametrize(
    "filters",
    [
        '{"doc_id": {"$in": [1, "a"]}}',  # mixed types
        '{"doc_id": {"$in": [[1]]}}',  # nested list
        '{"doc_id": {"$in": [{"a": 1}]}}',
        '{"doc_id": {"$nin": [null]}}',
        '{"doc_id": NaN}',  # Python's JSON parser accepts NaN and Infinity
        '{"doc_id": {"$ne": Infinity}}',
        '{"doc_id": {"$eq": 9223372036854775808}}',  # beyond int64
    ],
)
def test_filter_values_chroma_cannot_compare_are_422_not_503(suite_api: Service, filters: str) -> None:
    """Found by fuzzing: these reached Chroma, failed the whole query and came back as 503 store_unavailable."""
    body = f'{{"question": "What is a shield volcano?", "filters": {filters}}}'
    response = httpx.post(
        f"{suite_api.url}/v1/query", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_input"


def test_unparseable_body_is_a_documented_400(suite_api: Service) -> None:
    response = httpx.post(
        f"{suite_api.url}/v1/ingest",
        content=b"m\xff\xfe{",
        headers={"content-type": "application/json", "X-API-Key": API_KEY},
        timeout=30,
    )
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] in PROBLEMS
    schema = httpx.get(f"{suite_api.url}/openapi.json", timeout=30).json()
    documented = schema["paths"]["/v1/ingest"]["post"]["responses"]
    assert str(response.status_code) in documented


def test_unknown_collection_is_404_and_creates_nothing(app_client: Client) -> None:
    client = app_client()
    services = client.app.state.services  # type: ignore[attr-defined]
    for name in ("no-such-collection", "another-made-up-one"):
        response = client.post("/v1/query", json={"question": "What is coral?", "collection": name})
        assert response.status_code == 404 and response.json()["code"] == "not_found", response.text
    assert set(services._pipelines) <= {services.settings.collection}
    names = {c.name for c in services.client.list_collections()}
    assert "no-such-collection" not in names


def test_every_error_subclass_maps_to_a_known_problem() -> None:
    assert code_for(GenerationTimeoutError("slow")) == "generation_timeout"
    assert PROBLEMS["generation_timeout"][0] == 504

    class BrandNewStoreError(StoreUnavailableError):
        code = "brand_new"

    assert code_for(BrandNewStoreError("x")) == "store_unavailable"  # the nearest known base, never a 500


def test_made_up_keys_do_not_buy_fresh_rate_limit_buckets(app_client: Client) -> None:
    client = app_client(rate_limit_per_minute=3)
    statuses = [
        client.post("/v1/query", json={"question": "What is coral?"}, headers={"X-API-Key": f"random-{i}"}).status_code
        for i in range(5)
    ]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429], statuses
