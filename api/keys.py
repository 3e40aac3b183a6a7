"""Scoped API keys: a role (query or admin) and the collections a key may read, stored hashed in SQLite.

Keys from ``RAG_API_KEYS`` stay what they were (admin, every collection). Keys made with ``rag keys create`` live
in ``data_dir/keys.sqlite`` as sha256 hashes (the secret is printed once and never stored); ``rag keys revoke``
disables one at once, for every process sharing the data directory. A scoped key confines every route that reads
documents to its collections (answers, chat, the OpenAI models, document listings, uploads, ingestion).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import typer

from rag.errors import InvalidInputError
from rag.settings import Settings

Role = Literal["query", "admin"]
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, "
    "role TEXT NOT NULL, collections TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT)"
)


@dataclass(frozen=True)
class ScopedKey:
    """A stored key's grants; ``collections`` empty means every collection."""

    id: str
    name: str
    role: Role
    collections: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    def allows(self, collection: str) -> bool:
        return not self.collections or collection in self.collections

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class KeyStore:
    """The key table; one short connection per call (safe across threads and processes)."""

    def __init__(self, settings: Settings) -> None:
        self.path: Path = settings.data_dir / "keys.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=10)
        db.execute(SCHEMA)
        return db

    def create(self, name: str, role: Role, collections: list[str]) -> tuple[ScopedKey, str]:
        if role not in ("query", "admin"):
            raise InvalidInputError(f"role {role!r} is not query or admin")
        secret = "rk_" + secrets.token_urlsafe(32)
        key = ScopedKey(
            uuid.uuid4().hex[:12],
            name,
            role,
            tuple(sorted(set(collections))),
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (key.id, name, key_hash(secret), role, json.dumps(list(key.collections)), key.created_at),
            )
        return key, secret

    def list(self) -> list[ScopedKey]:
        if not self.path.exists():
            return []
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT id, name, role, collections, created_at, revoked_at FROM keys ORDER BY created_at"
            ).fetchall()
        return [ScopedKey(i, n, r, tuple(json.loads(c)), at, rev) for i, n, r, c, at, rev in rows]

    def revoke(self, key_id: str) -> bool:
        if not self.path.exists():
            return False
        with closing(self._connect()) as db, db:
            done = db.execute(
                "UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(timespec="seconds"), key_id),
            ).rowcount
        return bool(done)

    def lookup(self, secret: str) -> ScopedKey | None:
        """The live key with this secret; None when unknown or revoked (no file: no stored keys, nothing made)."""
        if not self.path.exists():
            return None
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT id, name, role, collections, created_at FROM keys WHERE hash = ? AND revoked_at IS NULL",
                (key_hash(secret),),
            ).fetchone()
        if row is None:
            return None
        key_id, name, role, collections, created = row
        return ScopedKey(key_id, name, role, tuple(json.loads(collections)), created)

    def any_live(self) -> bool:
        if not self.path.exists():
            return False
        with closing(self._connect()) as db:
            return db.execute("SELECT 1 FROM keys WHERE revoked_at IS NULL LIMIT 1").fetchone() is not None


def register(app: typer.Typer) -> None:
    """``rag keys create|list|revoke`` (added to the core CLI by api/cli.py)."""
    keys = typer.Typer(help="Scoped API keys (hashed in data_dir/keys.sqlite).", no_args_is_help=True)
    app.add_typer(keys, name="keys")

    @keys.command("create")
    def create(
        name: str = typer.Option(..., help="What the key is for (shown by `rag keys list`)."),
        role: str = typer.Option("query", help="query (answers only) or admin (also documents and ingestion)."),
        collection: list[str] = typer.Option(
            [], "--collection", "-c", help="A collection it may read (repeat); none = every collection."
        ),
    ) -> None:
        """Create a key and print its secret once."""
        from rag.console import load_settings

        key, secret = KeyStore(load_settings()).create(name, role, collection)  # type: ignore[arg-type]
        typer.echo(json.dumps({**key.to_dict(), "secret": secret}))

    @keys.command("list")
    def list_keys() -> None:
        """Every key (never the secrets)."""
        from rag.console import load_settings

        for key in KeyStore(load_settings()).list():
            typer.echo(json.dumps(key.to_dict()))

    @keys.command("revoke")
    def revoke(key_id: str = typer.Argument(..., help="The id shown by `rag keys list`.")) -> None:
        """Revoke a key at once (exit 1 when no live key has this id)."""
        from rag.console import load_settings

        if not KeyStore(load_settings()).revoke(key_id):
            typer.echo(f"no live key with id {key_id!r}", err=True)
            raise typer.Exit(1)
        typer.echo(f"revoked {key_id}")
