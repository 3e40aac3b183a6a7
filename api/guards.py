"""Request guards: API keys, per-client rate limits, body size and the bounded generation queue."""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.keys import KeyStore, ScopedKey
from api.problems import ApiError, problem
from rag.hashing import sha256_text
from rag.settings import Settings


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def key_fingerprint(key: str) -> str:
    """A short, non-reversible id for logs and rate-limit buckets; the key itself is never logged."""
    return sha256_text(key)[:12]


class KeyChecker:
    """Keys from RAG_API_KEYS (admin, every collection) and scoped keys stored hashed by ``rag keys`` (api/keys.py)."""

    def __init__(self, settings: Settings) -> None:
        self._keys = [k.get_secret_value() for k in settings.api_keys if k.get_secret_value()]
        self.store = KeyStore(settings)

    @property
    def configured(self) -> bool:
        return bool(self._keys) or self.store.any_live()

    def _env_key(self, key: str) -> bool:
        return any(hmac.compare_digest(key, known) for known in self._keys)

    def valid(self, key: str | None) -> bool:
        return key is not None and (self._env_key(key) or self.store.lookup(key) is not None)

    def scoped(self, request: Request) -> ScopedKey | None:
        """The stored key the request presents; None for a RAG_API_KEYS key, an unknown key or none."""
        key = presented_key(request)
        if key is None or self._env_key(key):
            return None
        return self.store.lookup(key)

    def require(self, request: Request) -> str:
        if not self.configured:
            raise ApiError(
                403, "auth_not_configured", "this route needs an API key but none is configured; set RAG_API_KEYS"
            )
        key = presented_key(request)
        if not self.valid(key):
            raise ApiError(
                401,
                "unauthorized",
                "missing or invalid API key; send it as X-API-Key or Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )
        assert key is not None
        return key


class RateLimiter:
    """Token bucket per client (API key fingerprint, else client address): ``per_minute`` requests, refilled evenly."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise ApiError(
                    429,
                    "rate_limited",
                    f"rate limit of {int(self.capacity)} requests/minute exceeded",
                    headers={"Retry-After": str(retry)},
                )
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > 10_000:  # forget idle clients so memory stays bounded
                cutoff = now - 120
                self._buckets = {k: v for k, v in self._buckets.items() if v[1] > cutoff}


def client_id(request: Request, keys: KeyChecker | None = None) -> str:
    """Rate-limit bucket and log id: the key's fingerprint, else the client address.

    With ``keys`` given (rate limiting), only a configured key gets its own bucket: an unknown key counts as no
    key, so sending made-up keys cannot buy fresh buckets.
    """
    key = presented_key(request)
    if key and (keys is None or keys.valid(key)):
        return f"key:{key_fingerprint(key)}"
    return f"ip:{request.client.host if request.client else 'unknown'}"


class GenerationGate:
    """At most ``concurrent`` generations at once and ``queued`` waiting; beyond that, fail fast with 503."""

    def __init__(self, concurrent: int, queued: int, wait_timeout_s: float) -> None:
        self._slots = threading.BoundedSemaphore(concurrent)
        self._limit = concurrent + queued
        self._inside = 0
        self._lock = threading.Lock()
        self.wait_timeout_s = wait_timeout_s

    @property
    def depth(self) -> int:
        return self._inside

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._inside >= self._limit:
                raise ApiError(503, "overloaded", "generation queue is full; retry shortly", {"Retry-After": "2"})
            self._inside += 1
        try:
            if not self._slots.acquire(timeout=self.wait_timeout_s):
                raise ApiError(503, "overloaded", "waited too long for a generation slot", {"Retry-After": "5"})
            try:
                yield
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._inside -= 1


class BodySizeLimit:
    """ASGI middleware: 413 when Content-Length or the streamed body exceeds ``max_bytes`` (or the limit
    ``path_limits`` gives the request's path prefix, e.g. a larger one for file uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        path = scope.get("path", "")
        max_bytes = next((n for prefix, n in self.path_limits.items() if path.startswith(prefix)), self.max_bytes)
        detail = f"request body is over the limit of {max_bytes} bytes; send a shorter body"
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await problem("payload_too_large", detail)(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise ApiError(413, "payload_too_large", detail)
            return message

        await self.app(scope, limited_receive, send)
