"""SHA-256 helpers shared by every job: content hashes, file hashes and config hashes.

A foundation module like ``settings`` and ``errors``: it imports nothing from ``rag``, so ``rag.ml`` may use it.
The hex digests it returns are persisted (manifests, index versions, run configs), so their byte recipes must
not change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text`` encoded as UTF-8."""
    return sha256_bytes(text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in blocks so multi-GB model files never sit in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of ``value`` as canonical JSON (sorted keys, ASCII; non-JSON values through ``str``).

    Used for config and version hashes, so two equal configs hash equally whatever their key order.
    """
    return sha256_text(json.dumps(value, sort_keys=True, default=str))
