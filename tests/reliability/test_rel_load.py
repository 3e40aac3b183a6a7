"""Load with locust against a real uvicorn: zero errors at capacity, fast 429/503 beyond it, memory reported."""

from __future__ import annotations

from pathlib import Path

from bench.reliability import LOAD_KEYS, SUITE_CAPACITY_USERS, Service, run_load


def test_zero_errors_at_documented_capacity(suite_api: Service, tmp_path: Path) -> None:
    """Capacity = 1 generation slot + 3 queued (the suite server's settings): 4 users, each with its own key."""
    result = run_load(
        suite_api.url,
        mode="capacity",
        users=SUITE_CAPACITY_USERS,
        seconds=15,
        out_dir=tmp_path,
        keys=LOAD_KEYS,
        pid=suite_api.pid,
    )
    print(f"\ncapacity: {result.line()}")
    assert result.requests > 0 and result.failures == 0, result.line()
    assert set(result.statuses) == {"200"}, result.statuses


def test_overload_is_shed_with_retry_after_not_timeouts(suite_api: Service, tmp_path: Path) -> None:
    """Six times the capacity without think time, all from one address: the excess must be answered quickly
    with 429 (rate limit) or 503 (generation queue full), each with Retry-After, and nothing may time out."""
    result = run_load(
        suite_api.url,
        mode="overload",
        users=6 * SUITE_CAPACITY_USERS,
        seconds=15,
        out_dir=tmp_path,
        wait_s=(0.0, 0.05),
        request_timeout_s=60,
        pid=suite_api.pid,
    )
    print(f"\noverload: {result.line()}")
    assert result.timeouts == 0 and result.failures == 0, (result.line(), result.problems)
    assert set(result.statuses) <= {"200", "429", "503"}, result.statuses
    assert result.shed > 0, "the load never exceeded capacity; the test proves nothing"
