"""SciFact with the default embedder and with one tuned by ``rag tune-embedder``, side by side, in one run.

Protocol (no choice sees the test split):
- ``split`` writes a BEIR folder whose ``qrels/train.tsv`` holds a seeded 80 % of SciFact's train queries and
  ``qrels/dev.tsv`` the other 20 %; tune on that folder's train split.
- ``run`` ingests SciFact with each embedder (the product's pipeline), then on the dev queries chooses the fusion
  settings (``bench.quality``'s grid) and the reranker's N and weight (``bench.retrieval_study``'s grid), and which
  of {hybrid at the defaults, hybrid with the fusion tuned on dev, each reranker setting} is the headline. Every
  configuration is then scored once on the 300 test queries; tuned minus default is paired per query.
- A model tuned on all of SciFact train (dev included, after its recipe was chosen on dev) cannot choose anything
  on dev: ``choices_from`` then takes the tuned side's fusion settings and headline configuration from the
  earlier run of the same recipe on the 80 % split.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import SCIFACT, WORK_DIR, machine_info, require_scifact, table
from bench.quality import GRID, fusion_args, gather, paired, score, summarise, tune
from bench.retrieval_study import CachedScorer, Question, collect, grid_configs, label, metrics, replay
from eval.datasets import read_qrels
from rag.settings import Settings

DEV_SHARE = 0.2


def split(out: Path, seed: int = 2026, source: Path | None = None) -> dict[str, int]:
    """A BEIR folder over SciFact's corpus and queries with train.tsv (80 % of train queries) and dev.tsv."""
    source = source or require_scifact()
    lines = (source / "qrels" / "train.tsv").read_text().splitlines()
    header, body = lines[0], [line for line in lines[1:] if line.strip()]
    queries = sorted({line.split("\t")[0] for line in body}, key=lambda q: int(q) if q.isdigit() else q)
    random.Random(seed).shuffle(queries)
    dev = set(queries[: int(len(queries) * DEV_SHARE)])
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        target = out / name
        if not target.exists():
            target.symlink_to((source / name).resolve())
    for name, keep in (("train", False), ("dev", True)):
        rows = [line for line in body if (line.split("\t")[0] in dev) == keep]
        (out / "qrels" / f"{name}.tsv").write_text("\n".join([header, *rows]) + "\n")
    return {"train_queries": len(queries) - len(dev), "dev_queries": len(dev), "seed": seed}


def _index(data_dir: Path, model_path: Path | None, corpus: Path) -> Settings:
    from ingest.pipeline import IngestionPipeline
    from rag.indexing.embedding import Embedder

    settings = Settings(data_dir=data_dir, **({"embedding_model_path": model_path} if model_path else {}))
    started = time.perf_counter()
    summary = IngestionPipeline(settings, embedder=Embedder(settings), progress=False).run([corpus])
    print(f"[bench tuned-embedder] {data_dir}: {summary.total_chunks} chunks, {summary.chunks_embedded} embedded "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    return settings


def run(
    *,
    model: Path,
    dev_folder: Path,
    work_root: Path = WORK_DIR,
    seed: int = 0,
    choices_from: Path | None = None,
    dataset: Path = SCIFACT,
) -> dict[str, Any]:
    from rag.indexing.embedding import Embedder

    fixed = json.loads(choices_from.read_text())["tuned"] if choices_from else None

    queries = {}
    for line in (dataset / "queries.jsonl").read_text().splitlines():
        record = json.loads(line)
        queries[record["_id"]] = record["text"]
    splits = {"dev": read_qrels(dev_folder / "qrels" / "dev.tsv"), "test": read_qrels(dataset / "qrels" / "test.tsv")}
    ids = {name: sorted(q) for name, q in splits.items()}
    qrels = {name: [splits[name][q] for q in ids[name]] for name in splits}
    result: dict[str, Any] = {"kind": "tuned_embedder", "machine": machine_info(), "model": str(model),
                              "queries": {name: len(v) for name, v in ids.items()},
                              "choices_from": str(choices_from) if choices_from else None}
    per: dict[str, np.ndarray] = {}
    for name, model_path in (("default", None), ("tuned", model)):
        settings = _index(work_root / "tuned-embedder" / name, model_path, dataset / "corpus.jsonl")
        embedder = Embedder(settings)
        cands = {s: gather(settings, embedder, ids[s], queries, pools=GRID["candidate_k"]) for s in splits}
        default = {"fusion": settings.fusion, "rrf_k": settings.rrf_k, "dense_weight": settings.dense_weight,
                   "bm25_weight": settings.bm25_weight}
        rows: dict[str, Any] = {"embedder": embedder.to_dict()}
        for s in splits:
            for mode in ("dense", "bm25", "hybrid"):
                values = score(cands[s], qrels[s], mode=mode, candidate_k=settings.candidate_k, **default)
                rows[f"{s}/{mode}"] = summarise(values, seed)
                per[f"{name}/{s}/{mode}"] = values["ndcg_at_10"]
        held_out = fixed if fixed and name == "tuned" else None
        best = held_out["fusion_tuned_on_dev"] if held_out else tune(cands["dev"], qrels["dev"])[0]
        rows["fusion_tuned_on_dev"] = best
        for s in splits:
            values = score(cands[s], qrels[s], mode="hybrid", candidate_k=best["candidate_k"], **fusion_args(best))
            rows[f"{s}/hybrid, fusion tuned"] = summarise(values, seed)
            per[f"{name}/{s}/hybrid, fusion tuned"] = values["ndcg_at_10"]
        scorer = CachedScorer(settings, work_root / "tuned-embedder" / "rerank-cache.sqlite")
        for s in splits:
            questions = [Question(queries[q], dict(splits[s][q])) for q in ids[s]]
            fused = collect(settings, embedder, scorer, questions)
            for config in grid_configs():
                if config["weight"]:
                    values = metrics(replay(settings, scorer, fused, **config), fused)
                    per[f"{name}/{s}/rerank {label(config)}"] = values["ndcg_at_10"]
                    rows[f"{s}/rerank {label(config)}"] = summarise({"ndcg_at_10": values["ndcg_at_10"]}, seed)
        candidates = ["hybrid", "hybrid, fusion tuned"] + [f"rerank {label(c)}" for c in grid_configs() if c["weight"]]
        chosen = held_out["chosen_on_dev"] if held_out else max(
            candidates, key=lambda c: float(np.nanmean(per[f"{name}/dev/{c}"]))
        )
        rows["chosen_on_dev"] = chosen
        rows["test/chosen"] = summarise({"ndcg_at_10": per[f"{name}/test/{chosen}"]}, seed)
        result[name] = rows
    result["tuned_minus_default"] = {
        f"{s}/{mode}": paired(per[f"tuned/{s}/{mode}"], per[f"default/{s}/{mode}"], seed)
        for s in splits for mode in ("dense", "hybrid", "hybrid, fusion tuned")
    }
    return result


def render(result: dict[str, Any]) -> str:
    columns = [("config", "SciFact test"), ("default", "default embedder nDCG@10 [95% CI]"),
               ("tuned", "tuned nDCG@10 [95% CI]"), ("diff", "tuned - default")]

    def cell(entry: dict[str, Any] | None) -> str:
        if not entry:
            return ""
        low, high = entry["ndcg_at_10_ci95"]
        return f"{entry['ndcg_at_10']:.3f} [{low:.3f}, {high:.3f}]"

    keys = [k.split("/", 1)[1] for k in result["default"] if k.startswith("test/")]
    rows = []
    for key in keys:
        diff = result["tuned_minus_default"].get(f"test/{key}")
        rows.append({"config": key, "default": cell(result["default"][f"test/{key}"]),
                     "tuned": cell(result["tuned"][f"test/{key}"]),
                     "diff": f"{diff['mean']:+.4f} [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]" if diff else ""})
    chosen = ", ".join(f"{name}: {result[name]['chosen_on_dev']}" for name in ("default", "tuned"))
    return table(rows, columns, "Tuned embedder on SciFact test") + f"\n\nchosen on dev: {chosen}"
