"""Smoke test of ``python -m bench quality`` on the sample corpus as a BEIR dataset; structure only."""

from __future__ import annotations

import math
from pathlib import Path

from bench import quality as bench_quality
from bench import retrieval_study
from rag.indexing.embedding import Embedder

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def test_quality_benchmark_scores_every_mode_and_tunes_on_train_only(
    sample_beir: Path, tmp_path: Path, embedder: Embedder
) -> None:
    result = bench_quality.run(
        dataset_dir=sample_beir,
        backends=("bge-small-int8",),
        work_root=tmp_path,
        embedders={"bge-small-int8": embedder},
        rerank=True,
        train_limit=3,
        test_limit=3,
        labelled=(SAMPLES / "qa" / "sample_qa.jsonl",),
        labelled_limit=3,
    )

    info = result["backends"]["bge-small-int8"]
    assert set(info["test"]) == {"dense", "bm25", "hybrid", "hybrid-rrf60", "hybrid-tuned"}
    for values in info["test"].values():
        for metric in ("ndcg_at_10", "recall_at_100"):
            assert 0 <= values[metric] <= 1
            low, high = values[f"{metric}_ci95"]
            assert math.isnan(low) or low <= values[metric] <= high
    # Ten documents: every relevant one is within the top 100.
    assert info["test"]["dense"]["recall_at_100"] == 1.0
    best = info["tuned_on_train"]
    assert best["train_ndcg_at_10"] == max(t["train_ndcg_at_10"] for t in info["top_trials"])
    assert info["grid_size"] == len(bench_quality.grid()) > math.prod(len(v) for v in bench_quality.GRID.values())
    assert info["default_on_train"] is not None and info["rrf60_on_train"] is not None
    # The offline fusion used for tuning ranks exactly like the product's Retriever.
    check = info["retriever_check"]
    assert check["queries_checked"] > 0 and check["identical_top10"] == check["queries_checked"]
    assert result["config"]["train_queries"] > 0 and result["config"]["test_queries"] > 0
    assert result["published_ndcg_at_10"] == {} and result["int8_quality_guard"] is None
    assert "nDCG@10" in bench_quality.render(result)
    # The reranker grid: tuned on train only, every configuration scored on test with its difference to "off".
    study = result["rerank"]
    assert study["train_questions"] == 3 and study["tuned_on_train"] in retrieval_study.grid_configs()
    assert set(study["test"]) == {retrieval_study.label(c) for c in retrieval_study.grid_configs()}
    assert "minus_off" in study["test"]["N=20,w=0.5"] and "minus_off" not in study["test"]["off"]
    assert study["latency"]["questions"] == 3 and study["latency"]["p50_ms"] > 0
    assert set(study["sample_qa"]) == set(study["test"])
    labelled = result["labelled_sets"]["sample_qa"]["bge-small-int8"]
    assert 0 <= labelled["hit_at_3"]["mean"] <= 1 and "Reranking on test" in bench_quality.render(result)


def test_doc_ranking_takes_each_documents_best_chunk() -> None:
    dense = [("c1", "a", 0.9), ("c2", "b", 0.8), ("c3", "a", 0.7)]
    bm25 = [("c3", "a", 5.0), ("c4", "c", 4.0)]
    assert bench_quality.rank_docs(dense, bm25, mode="dense", pool=10) == ["a", "b"]
    assert bench_quality.rank_docs(dense, bm25, mode="bm25", pool=10) == ["a", "c"]
    # RRF with k=1: c3 = 1/4 + 1/2 beats c1 = 1/2; c2 = 1/3 and c4 = 1/3 tie, broken by chunk id.
    assert bench_quality.rank_docs(dense, bm25, mode="hybrid", pool=10, fusion="rrf", rrf_k=1) == ["a", "b", "c"]
    # Convex: c1 = (1 + 0) / 2, c2 = (0.5 + 0) / 2, c3 = (0 + 1) / 2, c4 = 0: a, then b (c2 0.25 > c4 0).
    assert bench_quality.rank_docs(dense, bm25, mode="hybrid", pool=10, fusion="convex") == ["a", "b", "c"]
    assert bench_quality.rank_docs(dense, bm25, mode="hybrid", pool=1) == ["a"]
