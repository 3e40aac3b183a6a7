"""Locust user for ``python -m bench query``: POST /v1/query with questions from a file, statuses counted.

Configured by environment variables (locust owns the command line):
BENCH_QUESTIONS (JSON list of questions), BENCH_MODE (dense|bm25|hybrid, optional), BENCH_STATUS_OUT (where the
status-code counts are written at the end). 429 and 503 are failures, counted apart from other errors.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from locust import HttpUser, events, task

QUESTIONS: list[str] = json.loads(Path(os.environ["BENCH_QUESTIONS"]).read_text())
MODE = os.environ.get("BENCH_MODE") or None
_next = itertools.cycle(range(len(QUESTIONS)))
_lock = threading.Lock()
STATUSES: Counter[str] = Counter()


class QueryUser(HttpUser):
    """No think time: each user sends its next question as soon as the previous answer arrives."""

    @task
    def query(self) -> None:
        with _lock:
            question = QUESTIONS[next(_next)]
        body: dict[str, Any] = {"question": question}
        if MODE:
            body["mode"] = MODE
        with self.client.post("/v1/query", json=body, catch_response=True, name="/v1/query") as response:
            code = str(response.status_code)
            STATUSES[code] += 1
            if response.status_code == 200:
                payload = response.json()
                STATUSES["abstained" if payload.get("abstained") else "answered"] += 1
                response.success()
            else:
                response.failure(f"HTTP {code}")


@events.quitting.add_listener
def _write_statuses(environment: Any, **_: Any) -> None:
    out = os.environ.get("BENCH_STATUS_OUT")
    if out:
        Path(out).write_text(json.dumps(dict(STATUSES)))
