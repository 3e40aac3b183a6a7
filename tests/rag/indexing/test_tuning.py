"""The tuning core: fp32 rebuild of the bundled int8 bge-small, negative mining, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.errors import InvalidInputError
from rag.indexing.tuning import (
    BGE_QUERY_PREFIX,
    TrainingPair,
    TuneConfig,
    build_pairs,
    bundled_bge_small_dir,
    data_sha256,
    dequantized_state_dict,
    mine_hard_negatives,
    no_duplicate_batches,
    rebuild_bert,
    verify_rebuild,
)


def test_rebuilt_fp32_bge_small_matches_the_int8_onnx(tmp_path: Path) -> None:
    source = bundled_bge_small_dir()
    state = dequantized_state_dict(source / "model.onnx")
    # 12 layers x 6 linear weights come from MatMulInteger nodes, stored as nn.Linear expects (out x in)
    assert state["encoder.layer.0.intermediate.dense.weight"].shape == (1536, 384)
    assert state["encoder.layer.11.output.dense.weight"].shape == (384, 1536)
    assert state["embeddings.word_embeddings.weight"].shape == (30522, 384)
    rebuilt = rebuild_bert(source, tmp_path / "fp32")
    texts = [
        "How a Honeybee Colony Works › The waggle dance\nA forager that finds food returns to the hive and dances.",
        BGE_QUERY_PREFIX + "How do honeybees communicate the location of flowers?",
        "Vaccines train the immune system to recognise a pathogen without causing the disease.",
        "The Rosetta Stone carries the same decree in hieroglyphic, Demotic and Greek scripts.",
    ]
    agreement = verify_rebuild(source, rebuilt, texts)
    assert agreement["min"] >= 0.99, agreement


def test_hard_negatives_are_never_gold_and_come_from_the_configured_ranks() -> None:
    corpus = {f"d{i:02d}": f"honeybee colony queen worker drone note {i} " + "filler " * (i % 5) for i in range(40)}
    corpus["gold"] = "honeybee waggle dance tells the direction of food"
    config = TuneConfig(negative_ranks=(3, 10))
    picks = mine_hard_negatives(["honeybee waggle dance direction"], [{"gold", "d01"}], corpus, config)
    assert picks[0] is not None and picks[0] not in {"gold", "d01"}
    again = mine_hard_negatives(["honeybee waggle dance direction"], [{"gold", "d01"}], corpus, config)
    assert again == picks  # seeded
    pairs = build_pairs([("honeybee waggle dance direction", {"gold", "missing"})], corpus, config)
    assert len(pairs) == 1 and pairs[0].positive == corpus["gold"] and pairs[0].query.startswith(BGE_QUERY_PREFIX)
    assert pairs[0].negative and pairs[0].negative != corpus["gold"]


def test_dense_negatives_are_the_base_embedders_near_misses_never_gold() -> None:
    corpus = {
        "gold": "Honeybees perform a waggle dance to tell nestmates the direction and distance of food.",
        "near1": "Bumblebees find flowers by scent and colour; they do not dance.",
        "near2": "Forager honeybees learn the position of the sun to navigate back to the hive.",
        "near3": "Ants lay pheromone trails that lead nestmates to food sources.",
        **{f"far{i}": f"The {w} market closed higher on Tuesday after quarterly earnings." for i, w in
           enumerate(["stock", "bond", "oil", "gold", "grain", "currency"])},
    }
    config = TuneConfig(negative_ranks=(1, 2), negative_miner="dense")
    question = "How do honeybees communicate where flowers are?"
    picks = mine_hard_negatives([question] * 3, [{"gold"}] * 3, corpus, config)
    # ranks 1-2 among non-gold documents by the untuned embedder: insects, never finance, never the gold one
    assert all(p in {"near1", "near2", "near3"} for p in picks), picks
    assert picks == mine_hard_negatives([question] * 3, [{"gold"}] * 3, corpus, config)  # seeded
    with pytest.raises(InvalidInputError, match="negative miner 'colbert'"):
        TuneConfig(negative_miner="colbert")


def test_batches_never_repeat_a_text_and_use_every_pair_once() -> None:
    pairs = [TrainingPair(f"q{i % 7}", f"p{i % 5}", f"n{i}") for i in range(30)]
    batches = no_duplicate_batches(pairs, 4, seed=1)
    flat = [p for batch in batches for p in batch]
    assert sorted(flat, key=repr) == sorted(pairs, key=repr)
    for batch in batches:
        texts = [t for p in batch for t in (p.query, p.positive, p.negative)]
        assert len(texts) == len(set(texts)) and len(batch) <= 4
    assert no_duplicate_batches(pairs, 4, seed=1) == batches
    assert data_sha256(pairs) == data_sha256(list(reversed(pairs)))
    assert data_sha256(pairs[:-1]) != data_sha256(pairs)


def test_no_usable_pair_is_a_clear_error() -> None:
    with pytest.raises(InvalidInputError, match="relevant document in the corpus"):
        build_pairs([("q", {"absent"})], {"d": "text"}, TuneConfig(hard_negatives=False))
    assert np.isfinite(TuneConfig().scale)
