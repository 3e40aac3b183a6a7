"""The optional ONNX Runtime int8 export of all-MiniLM-L6-v2 (RAG_EMBEDDING_MODEL=all-MiniLM-L6-v2,
RAG_EMBEDDING_BACKEND=onnx-int8): exported locally, close to fp32, and a distinct vector identity so that switching
backends re-embeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import IngestionPipeline
from ingest.report import IngestionSummary
from rag.indexing.embedding import Embedder
from rag.settings import Settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
TEXTS = [
    "The printing press spread through Europe in the fifteenth century.",
    "Coral reefs are built by colonies of tiny animals called polyps, which secrete calcium carbonate skeletons "
    "over thousands of years and shelter a quarter of all marine species.",
    "Honeybee workers perform a waggle dance to tell their sisters where flowers are.",
    "Lighthouses use Fresnel lenses.",
    "Vaccines train the immune system " * 60,  # longer than the encoder's 256 tokens: truncated like torch
]


@pytest.fixture(scope="module")
def onnx_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("onnx"), embedding_model="all-MiniLM-L6-v2", embedding_backend="onnx-int8"
    )


@pytest.fixture(scope="module")
def minilm_torch(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    """The fp32 reference: the bundled all-MiniLM-L6-v2 with sentence-transformers (no longer the default)."""
    model = Embedder(Settings(data_dir=tmp_path_factory.mktemp("minilm"), embedding_model="all-MiniLM-L6-v2"))
    _ = model.model
    return model


@pytest.fixture(scope="module")
def onnx_embedder(onnx_settings: Settings) -> Embedder:
    model = Embedder(onnx_settings)
    _ = model.model  # exports and quantizes once (tens of seconds), from the bundled weights only
    return model


def test_int8_vectors_stay_close_to_fp32(onnx_embedder: Embedder, minilm_torch: Embedder) -> None:
    embedder = minilm_torch
    int8, fp32 = onnx_embedder.embed(TEXTS), embedder.embed(TEXTS)
    assert int8.shape == fp32.shape == (len(TEXTS), 384) and int8.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(int8 * fp32, axis=1)) >= 0.99
    # Same nearest neighbour for every text: the quantized space ranks like the original.
    assert (np.argmax(int8 @ fp32.T, axis=1) == np.arange(len(TEXTS))).all()
    assert onnx_embedder.count_tokens(TEXTS) == embedder.count_tokens(TEXTS)
    assert onnx_embedder.dimension == 384


def test_a_texts_vector_does_not_depend_on_the_texts_beside_it(onnx_embedder: Embedder) -> None:
    # Dynamic int8 quantization shares one activation scale per call, so the encoder runs one text per call:
    # order, company and padding must not move any vector.
    forward = onnx_embedder.embed(TEXTS)
    backward = onnx_embedder.embed(TEXTS[::-1])[::-1]
    one_by_one = np.stack([onnx_embedder.embed_query(t) for t in TEXTS])
    np.testing.assert_allclose(forward, backward, atol=1e-6)
    np.testing.assert_allclose(forward, one_by_one, atol=1e-6)


def test_export_is_cached_and_identity_names_the_backend(
    onnx_embedder: Embedder, onnx_settings: Settings, minilm_torch: Embedder
) -> None:
    embedder = minilm_torch
    model_file = onnx_embedder.onnx_dir / "model.int8.onnx"
    stamp = model_file.stat().st_mtime_ns
    again = Embedder(onnx_settings)
    _ = again.model
    assert model_file.stat().st_mtime_ns == stamp  # loaded from the cache, not exported again
    assert onnx_embedder.onnx_dir.is_relative_to(onnx_settings.models_dir)
    assert again.weights_sha256 == onnx_embedder.weights_sha256 != embedder.weights_sha256
    assert onnx_embedder.name.endswith("(onnx-int8)") and onnx_embedder.to_dict()["backend"] == "onnx-int8"


def test_switching_backend_re_embeds_on_the_next_ingest(
    onnx_embedder: Embedder, onnx_settings: Settings, minilm_torch: Embedder
) -> None:
    embedder = minilm_torch
    corpus = SAMPLES / "corpus" / "science"

    def ingest(settings: Settings, model: Embedder) -> IngestionSummary:
        return IngestionPipeline(settings, embedder=model, progress=False).run([corpus])

    first = ingest(onnx_settings, onnx_embedder)
    assert first.chunks_embedded == first.chunks_written > 0
    unchanged = ingest(onnx_settings, onnx_embedder)
    assert unchanged.chunks_embedded == 0 and unchanged.documents_unchanged == first.documents_added
    switched = ingest(onnx_settings.with_overrides(embedding_backend="torch"), embedder)
    assert switched.chunks_embedded == first.chunks_written
    assert switched.index_version != first.index_version
