"""Locust users for ``bench/reliability.py`` (run headless by ``run_load``; not the benchmark's locustfile).

Environment (set by the suite):
- ``RAG_LOAD_MODE``: ``capacity`` (every answer must be a 200) or ``overload`` (200, or 429/503 with Retry-After).
- ``RAG_LOAD_KEYS``: comma-separated API keys, one per user, so each user has its own rate-limit bucket;
  empty means every user shares the client address's bucket.
- ``RAG_LOAD_WAIT``: ``min,max`` seconds of think time between a user's requests.
- ``RAG_LOAD_TIMEOUT``: per-request timeout in seconds; a request that runs into it counts as a timeout.
- ``RAG_LOAD_OUT``: where the status breakdown is written as JSON when the run stops.

Locust's own failure count holds everything the mode does not allow; the JSON adds what locust does not
record: every status seen, sheds without Retry-After, timeouts and connection errors.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from locust import HttpUser, between, events, task

QUESTIONS = [
    "What kind of lens did Fresnel present for lighthouses?",
    "How do honeybees communicate where flowers are?",
    "What is a shield volcano?",
    "Who made the first telephone call and what was said?",
    "What causes coral bleaching?",
    "When did Apollo 11 land on the Moon?",
    "Who deciphered the Egyptian hieroglyphs?",
    "How does evaporation drive the water cycle?",
    "How do vaccines train the immune system?",
    "When did Gutenberg build his printing press?",
    "Best pizza in Naples?",  # off-topic: answered by abstaining, without the model
]

MODE = os.environ.get("RAG_LOAD_MODE", "capacity")
KEYS = [k for k in os.environ.get("RAG_LOAD_KEYS", "").split(",") if k]
_low, _high = (float(x) for x in os.environ.get("RAG_LOAD_WAIT", "0.2,0.5").split(","))
TIMEOUT_S = float(os.environ.get("RAG_LOAD_TIMEOUT", "60"))
OUT = os.environ.get("RAG_LOAD_OUT")

_lock = threading.Lock()
_statuses: Counter[str] = Counter()
_problems: Counter[str] = Counter()
_user_numbers = itertools.count()


def _record(status: str | None = None, problem: str | None = None) -> None:
    with _lock:
        if status:
            _statuses[status] += 1
        if problem:
            _problems[problem] += 1


@events.test_stop.add_listener
def _write_report(**_: Any) -> None:
    if OUT:
        with _lock:
            Path(OUT).write_text(json.dumps({"statuses": dict(_statuses), "problems": dict(_problems)}))


class QueryUser(HttpUser):
    wait_time = between(_low, _high)

    def on_start(self) -> None:
        number = next(_user_numbers)
        self.headers = {"X-API-Key": KEYS[number % len(KEYS)]} if KEYS else {}
        self.random = random.Random(number)

    @task
    def query(self) -> None:
        question = self.random.choice(QUESTIONS)
        with self.client.post(
            "/v1/query",
            json={"question": question},
            headers=self.headers,
            timeout=TIMEOUT_S,
            catch_response=True,
            name="/v1/query",
        ) as response:
            status = response.status_code
            if status == 0:  # no HTTP answer at all
                error = str(response.error or "")
                kind = "timeout" if "timed out" in error.lower() or "timeout" in error.lower() else "connection_error"
                _record(kind, kind)
                response.failure(f"{kind}: {error[:200]}")
                return
            _record(str(status))
            if status == 200:
                response.success()
            elif MODE == "overload" and status in (429, 503):
                if response.headers.get("Retry-After"):
                    response.success()
                else:
                    _record(problem="shed_without_retry_after")
                    response.failure(f"{status} without Retry-After")
            else:
                _record(problem="unexpected_status")
                response.failure(f"unexpected {status}: {response.text[:200]}")
