"""Smoke test of ``python -m bench colbert`` on the sample corpus as a BEIR dataset; structure only."""

from __future__ import annotations

from pathlib import Path

from bench import colbert as bench_colbert


def test_colbert_benchmark_scores_each_configuration_beside_the_hybrid_and_tunes_on_train(
    sample_beir: Path, tmp_path: Path
) -> None:
    options = {"dataset_dir": sample_beir, "work_root": tmp_path, "queries": 4, "train_queries": 4,
               "rerank_ns": (3, 5), "weights": (0.5, 1.0), "sanity_queries": 3}
    result = bench_colbert.run(**options)

    assert result["config"]["test_queries"] == 4 and result["config"]["train_queries"] == 4
    assert set(result["test"]) == {"hybrid", "bm25", "colbert", "rerank", "interpolated"}
    for values in result["test"].values():
        for metric in ("ndcg_at_10", "recall_at_100"):
            low, high = values[f"{metric}_ci95"]
            assert 0.0 <= low <= values[metric] <= high <= 1.0
    # a rerank or a blend of the fused top N keeps the hybrid's deep pool, so recall@100 cannot change
    assert result["test"]["rerank"]["recall_at_100"] == result["test"]["hybrid"]["recall_at_100"]
    assert set(result["paired_vs_hybrid"]) == {"bm25", "colbert", "rerank", "interpolated"}
    # N and w come from the grid, the best on train; the offline fusion ranks as the product does
    tuned = result["tuned_on_train"]
    assert tuned["rerank"]["weight"] == 1.0 and tuned["interpolated"]["weight"] in (0.5, 1.0)
    assert tuned["interpolated"]["rerank_n"] in (3, 5)
    best = max(t["train_ndcg_at_10"] for t in result["train_grid"])
    assert tuned["interpolated"]["train_ndcg_at_10"] == best
    assert result["hybrid_order_mismatches"] == 0
    assert result["cost"]["document_encoding"]["from_cache"] is False
    # the document vectors are cached per corpus and model: a rerun encodes nothing
    assert bench_colbert.run(**options)["cost"]["document_encoding"]["from_cache"] is True
    assert "ColBERT" in bench_colbert.render(result)
