"""Smoke test of ``python -m bench tuned-embedder`` on the sample corpus: the split, the choices, their reuse."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bench import tuned_embedder as study
from eval.datasets import load_dataset, read_qrels
from eval.tune import training_data
from rag.indexing.tuning import TuneConfig, tune_embedder
from rag.settings import Settings


def _small(sample_beir: Path, root: Path, train: int, test: int) -> Path:
    """The sample BEIR folder with only the first ``train`` / ``test`` queries of each split (a fast run)."""
    root.mkdir()
    for name in ("corpus.jsonl", "queries.jsonl"):
        shutil.copy(sample_beir / name, root / name)
    (root / "qrels").mkdir()
    for split, keep in (("train", train), ("test", test)):
        header, *rows = (sample_beir / "qrels" / f"{split}.tsv").read_text().splitlines()
        first = list(dict.fromkeys(r.split("\t")[0] for r in rows))[:keep]
        kept = [r for r in rows if r.split("\t")[0] in first]
        (root / "qrels" / f"{split}.tsv").write_text("\n".join([header, *kept]) + "\n")
    return root


def test_tuned_embedder_bench_chooses_on_dev_and_reuses_those_choices_for_a_model_that_saw_dev(
    sample_beir: Path, tmp_path: Path
) -> None:
    dataset = _small(sample_beir, tmp_path / "beir", train=20, test=5)
    folder = tmp_path / "split"
    counts = study.split(folder, source=dataset)
    train, dev = (read_qrels(folder / "qrels" / f"{name}.tsv") for name in ("train", "dev"))
    assert counts == {"train_queries": len(train), "dev_queries": len(dev), "seed": 2026}
    assert len(dev) == 4 and not set(train) & set(dev)  # 20 % held out, disjoint

    settings = Settings(data_dir=tmp_path / "data")
    samples, corpus, related = training_data(settings, load_dataset(folder, split="train"))
    config = TuneConfig(epochs=1, batch_size=4, max_seq_length=64, train_layers=1, mini_batch_size=0)
    tuned, _ = tune_embedder(settings.models_dir, samples, corpus, config, related=related, progress=False)

    result = study.run(model=tuned.model_path, dev_folder=folder, work_root=tmp_path / "work", dataset=dataset)
    assert result["queries"] == {"dev": 4, "test": 5} and result["choices_from"] is None
    for name in ("default", "tuned"):
        rows = result[name]
        chosen = rows["chosen_on_dev"]
        # the headline is the configuration best on dev, and its test figure is that configuration's
        dev_scores = {k.split("/", 1)[1]: v["ndcg_at_10"] for k, v in rows.items() if k.startswith("dev/")}
        assert dev_scores[chosen] == max(dev_scores[c] for c in dev_scores if c not in ("dense", "bm25"))
        assert rows["test/chosen"]["ndcg_at_10"] == rows[f"test/{chosen}"]["ndcg_at_10"]
    assert set(result["tuned_minus_default"]) >= {"test/dense", "test/hybrid", "dev/hybrid, fusion tuned"}

    # a model tuned on train + dev takes the tuned side's choices from the earlier run; the default still chooses
    earlier = json.loads(json.dumps(result, default=str))
    fixed = {"fusion": "rrf", "rrf_k": 60, "dense_weight": 1.0, "bm25_weight": 1.0, "candidate_k": 20}
    earlier["tuned"].update(fusion_tuned_on_dev=fixed, chosen_on_dev="rerank N=10,w=0.25")
    saved = tmp_path / "earlier.json"
    saved.write_text(json.dumps(earlier))
    again = study.run(model=tuned.model_path, dev_folder=folder, work_root=tmp_path / "work", dataset=dataset,
                      choices_from=saved)
    assert again["choices_from"] == str(saved)
    assert again["tuned"]["fusion_tuned_on_dev"] == fixed and again["tuned"]["chosen_on_dev"] == "rerank N=10,w=0.25"
    assert again["tuned"]["test/chosen"] == again["tuned"]["test/rerank N=10,w=0.25"]
    assert again["default"]["chosen_on_dev"] == result["default"]["chosen_on_dev"]
    assert "Tuned embedder on SciFact test" in study.render(again)
