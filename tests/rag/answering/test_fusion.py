"""Hybrid fusion (``rag.answering.retrieval.fuse``): convex combination of normalised scores, or RRF."""

from __future__ import annotations

import pytest

from rag.answering.retrieval import fuse

DENSE = [("a", 0.80), ("b", 0.60), ("c", 0.40)]
BM25 = [("c", 12.0), ("d", 9.0), ("a", 3.0)]


def test_convex_is_the_weighted_mean_of_min_max_normalised_scores() -> None:
    fused = fuse(DENSE, BM25, method="convex", rrf_k=60, dense_weight=1.0, bm25_weight=1.0)
    assert fused == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.5, "d": (6 / 9) / 2})
    dense_heavy = fuse(DENSE, BM25, method="convex", rrf_k=60, dense_weight=3.0, bm25_weight=1.0)
    assert dense_heavy["a"] == pytest.approx(0.75) and dense_heavy["c"] == pytest.approx(0.25)


def test_convex_keeps_score_gaps_that_ranks_lose() -> None:
    # BM25 is sure about "x" (a wide margin); dense barely prefers "y". RRF sees two first places and ties them;
    # the convex combination lets the confident retriever win.
    dense = [("y", 0.61), ("x", 0.60), ("z", 0.10)]
    bm25 = [("x", 20.0), ("y", 2.0), ("z", 1.0)]
    convex = fuse(dense, bm25, method="convex", rrf_k=60, dense_weight=1.0, bm25_weight=1.0)
    rrf = fuse(dense, bm25, method="rrf", rrf_k=60, dense_weight=1.0, bm25_weight=1.0)
    assert convex["x"] > convex["y"]
    assert rrf["x"] == pytest.approx(rrf["y"])


def test_rrf_weights_reciprocal_ranks() -> None:
    fused = fuse(DENSE, BM25, method="rrf", rrf_k=10, dense_weight=2.0, bm25_weight=1.0)
    assert fused["a"] == pytest.approx(2 / 11 + 1 / 13)
    assert fused["d"] == pytest.approx(1 / 12)


def test_degenerate_lists() -> None:
    one = fuse([("a", 0.5)], [], method="convex", rrf_k=60, dense_weight=1.0, bm25_weight=1.0)
    assert one == {"a": 0.5}  # a single candidate normalises to 1, then weighted
    assert fuse([], [], method="convex", rrf_k=60, dense_weight=1.0, bm25_weight=1.0) == {}
    zero = fuse(DENSE, BM25, method="convex", rrf_k=60, dense_weight=0.0, bm25_weight=0.0)
    assert set(zero.values()) == {0.0}
