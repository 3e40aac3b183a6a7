"""Ingestion benchmark: this project against a LangChain pipeline doing the same job, and the encoder alone.

Every system runs in its own process (``bench.ingest_worker``) on the same corpus copy, one after another, with
the same thread count. Steps, in order:

- ``langchain``: RecursiveCharacterTextSplitter (same size, overlap, separators) → HuggingFaceEmbeddings (the
  bundled all-MiniLM-L6-v2, as before) → ``Chroma.from_documents`` into a fresh directory.
- ``langchain-bge``: the same pipeline with the same model as our default, bge-small-en-v1.5, in fp32 with
  sentence-transformers (weights rebuilt from the bundled int8 file: the only copy offline; same compute as the
  original), CLS pooling, 512 tokens.
- ``langchain-rerun``: the same script again on the same directory (what a user does after a change): it
  re-embeds everything and stores every chunk a second time.
- ``encoder-<backend>``: the raw encoder on exactly our chunks (the floor for our embedding work).
- ``ours-<backend>``: ``IngestionPipeline`` into a fresh data directory. Backends name embedder configurations
  (``bench.retrieval_study.EMBEDDERS``): ``bge-small-int8`` (the default settings), ``onnx-int8`` and ``torch``
  (all-MiniLM-L6-v2).
- ``ours-rerun``: the unchanged corpus again (skipped by content hash).
- ``ours-update``: 5% of the documents edited at the end (the content-hash cache re-embeds only changed chunks),
  then ``ours-revert`` puts the original text back so the index matches the corpus for the other benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.common import WORK_DIR, BenchError, Measured, machine_info, require_scifact, run_measured, table
from rag.indexing.embedding import Embedder
from rag.settings import Settings

BACKENDS = ("bge-small-int8", "torch", "onnx-int8")
DEFAULT_BACKEND = "bge-small-int8"  # what the default settings run
DEFAULT_SYSTEMS = (
    "langchain",
    "langchain-rerun",
    "langchain-bge",
    "encoder-bge-small-int8",
    "ours-bge-small-int8",
    "ours-onnx-int8",
    "ours-rerun",
    "ours-update",
    "ours-revert",
)
EDIT_EVERY = 20  # ours-update edits every 20th document (5%)
EDIT_SUFFIX = " This abstract was revised after publication."
QUICK_DOCS = 200


def prepare_corpus(source: Path | None, quick: bool, limit: int | None, work: Path) -> tuple[Path, dict[str, Any]]:
    """Copy the corpus into ``work`` as BEIR JSONL (a directory becomes one record per file)."""
    if source is None:
        source = require_scifact() / "corpus.jsonl"
    limit = limit or (QUICK_DOCS if quick else None)
    records: list[dict[str, Any]] = []
    if source.is_dir():
        records = directory_records(source)
    else:
        with source.open(encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    if limit:
        records = records[:limit]
    if not records:
        raise BenchError(f"no documents in {source}")
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    write_jsonl(corpus, records)
    info = {"source": str(source), "documents": len(records), "chars": sum(len(r.get("text", "")) for r in records)}
    return corpus, info


def directory_records(source: Path) -> list[dict[str, Any]]:
    """BEIR records from a directory, text extracted by the project's own loaders (ids: relative paths)."""
    from ingest.loaders import discover, load_file

    files, _ = discover(source)
    records = []
    for file in files:
        document = load_file(file, Settings().max_file_bytes)
        records.append({"_id": file.doc_id, "title": document.title, "text": document.text})
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def edit_corpus(corpus: Path, revert: bool) -> int:
    """Append (or remove) a sentence to every 20th document, in place: same path, so only those docs change."""
    records = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    edited = 0
    for i, record in enumerate(records):
        if i % EDIT_EVERY:
            continue
        text = str(record["text"])
        if revert and text.endswith(EDIT_SUFFIX):
            record["text"] = text[: -len(EDIT_SUFFIX)]
        elif not revert:
            record["text"] = text + EDIT_SUFFIX
        edited += 1
    write_jsonl(corpus, records)
    return edited


def ensure_onnx_export(models_dir: Path) -> float | None:
    """Export the int8 encoder once into the shared models directory; returns the seconds it took (None: cached)."""
    import time

    minilm = {"embedding_model": "all-MiniLM-L6-v2", "embedding_backend": "onnx-int8"}
    embedder = Embedder(Settings(data_dir=models_dir.parent, **minilm))  # type: ignore[arg-type]
    if (embedder.onnx_dir / "model.int8.onnx").is_file():
        return None
    tick = time.perf_counter()
    _ = embedder.model
    return round(time.perf_counter() - tick, 2)


def bge_fp32_sentence_transformer(models_dir: Path) -> Path:
    """A sentence-transformers directory for fp32 bge-small (CLS pooling, normalised, 512 tokens) for LangChain.

    The weights are rebuilt once from the bundled int8 file (``rag.indexing.tuning.rebuilt_base``); only the
    module configuration is added here.
    """
    from rag.indexing.tuning import rebuilt_base

    base = rebuilt_base(models_dir)
    target = models_dir / "bge-small-fp32-st"
    if (target / "modules.json").is_file():
        return target
    target.mkdir(parents=True, exist_ok=True)
    for item in base.iterdir():
        if item.is_file() and not (target / item.name).exists():
            (target / item.name).symlink_to(item.resolve())
    (target / "1_Pooling").mkdir(exist_ok=True)
    (target / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    (target / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": True}))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (target / "modules.json").write_text(json.dumps(modules))
    return target


def fresh_data_dir(path: Path, models_dir: Path) -> Path:
    """An empty data directory whose ``models`` is the shared one (no re-export, no re-hash per run)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "models").symlink_to(models_dir.resolve(), target_is_directory=True)
    return path


def run(
    *,
    quick: bool = False,
    corpus: Path | None = None,
    limit: int | None = None,
    systems: tuple[str, ...] = DEFAULT_SYSTEMS,
    threads: int = 0,
    backend: str = DEFAULT_BACKEND,
    batch_size: int = 32,
    ingest_batch_chunks: int | None = None,
    work_root: Path = WORK_DIR,
) -> dict[str, Any]:
    """Run the steps in ``systems`` (in that order) and return the result document."""
    machine = machine_info()
    base = Settings()
    threads = threads or len(os.sched_getaffinity(0))
    tag = "quick" if quick or corpus is not None or limit else "scifact-full"
    work = work_root / f"ingest-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    models_dir = work_root / "shared" / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    corpus_path, corpus_info = prepare_corpus(corpus, quick, limit, work)
    uses_export = any(s.endswith("onnx-int8") for s in systems) or backend == "onnx-int8"
    export_s = ensure_onnx_export(models_dir) if uses_export else None
    bge_st = bge_fp32_sentence_transformer(models_dir) if "langchain-bge" in systems else None

    def spec(system: str, data_dir: Path, step_backend: str, model_path: Path | None = None) -> str:
        return json.dumps(
            {
                "system": system,
                "model_path": str(model_path) if model_path else None,
                "corpus": str(corpus_path),
                "data_dir": str(data_dir),
                "threads": threads,
                "backend": step_backend,
                "chunk_size": base.chunk_size,
                "chunk_overlap": base.chunk_overlap,
                "batch_size": batch_size,
                "ingest_batch_chunks": ingest_batch_chunks or base.ingest_batch_chunks,
            }
        )

    # The same thread settings for every step: thread count in the spec, OpenMP's wait policy here.
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    step_env = {"OMP_WAIT_POLICY": policy} if policy else {}
    steps: list[Measured] = []
    ours_dir = work / f"ours-{backend}"
    for name in systems:
        print(f"[bench ingest] {name} ...", flush=True)
        if name == "langchain":
            shutil.rmtree(work / "langchain", ignore_errors=True)
            step = run_measured(
                name, "bench.ingest_worker", env=step_env, args=[spec("langchain", work / "langchain", "torch")]
            )
        elif name == "langchain-bge":
            shutil.rmtree(work / "langchain-bge", ignore_errors=True)
            args = [spec("langchain", work / "langchain-bge", "torch", bge_st)]
            step = run_measured(name, "bench.ingest_worker", env=step_env, args=args)
        elif name == "langchain-rerun":
            if not (work / "langchain").exists():
                raise BenchError("langchain-rerun needs the langchain step first")
            step = run_measured(
                name, "bench.ingest_worker", env=step_env, args=[spec("langchain", work / "langchain", "torch")]
            )
        elif name.startswith("encoder-"):
            step_backend = name.removeprefix("encoder-")
            data = fresh_data_dir(work / "encoder", models_dir)
            step = run_measured(name, "bench.ingest_worker", env=step_env, args=[spec("encoder", data, step_backend)])
        elif name in {f"ours-{b}" for b in BACKENDS}:
            step_backend = name.removeprefix("ours-")
            data = fresh_data_dir(work / name, models_dir)
            step = run_measured(name, "bench.ingest_worker", env=step_env, args=[spec("ours", data, step_backend)])
        elif name in {"ours-rerun", "ours-update", "ours-revert"}:
            if not ours_dir.exists():
                raise BenchError(f"{name} needs the ours-{backend} step first")
            edited = None
            if name != "ours-rerun":
                edited = edit_corpus(corpus_path, revert=name == "ours-revert")
            step = run_measured(name, "bench.ingest_worker", env=step_env, args=[spec("ours", ours_dir, backend)])
            if edited is not None:
                step.extra["documents_edited"] = edited
        else:
            raise BenchError(f"unknown step {name!r}; steps: {', '.join(DEFAULT_SYSTEMS)}")
        steps.append(step)
        print(f"[bench ingest] {name}: {step.result.get('seconds')} s", flush=True)
        # Steps done so far, in case a long run is interrupted.
        (work / "steps.partial.json").write_text(json.dumps([s.to_dict() for s in steps], indent=2, default=str))

    rows = [summarise(s) for s in steps]
    return {
        "benchmark": "ingest",
        "machine": machine,
        "config": {
            "quick": quick,
            "corpus": corpus_info,
            "threads": threads,
            "omp_wait_policy": policy or "(OpenMP default)",
            "backend": backend,
            "encoder_batch_size": batch_size,
            "chunk_size": base.chunk_size,
            "chunk_overlap": base.chunk_overlap,
            "ingest_batch_chunks": ingest_batch_chunks or base.ingest_batch_chunks,
            "onnx_export_seconds": export_s,
            "work_dir": str(work),
        },
        "steps": rows,
        "ratios": ratios(rows, backend),
    }


def summarise(step: Measured) -> dict[str, Any]:
    row = step.to_dict()
    seconds = row.get("seconds") or 0.0
    work_chunks = row.get("chunks_written") or row.get("chunks_embedded") or 0
    row["chunks_per_s"] = round(work_chunks / seconds, 2) if seconds and work_chunks else None
    row["cpu_s_per_1k_chunks"] = (
        round(1000 * row["process_cpu_s"] / work_chunks, 1) if work_chunks and step.name != "ours-rerun" else None
    )
    return row


def ratios(rows: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """Same-run ratios; None where a step was not run."""
    by = {r["name"]: r for r in rows}
    out: dict[str, Any] = {}

    def div(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    lc, ours = by.get("langchain"), by.get(f"ours-{backend}")
    if lc and ours:
        out["first_ingest_chunks_per_s_vs_langchain"] = div(ours["chunks_per_s"], lc["chunks_per_s"])
        out["first_ingest_wall_speedup_vs_langchain"] = div(lc["seconds"], ours["seconds"])
        out["first_ingest_cpu_speedup_vs_langchain"] = div(lc["process_cpu_s"], ours["process_cpu_s"])
        out["peak_rss_vs_langchain"] = div(ours["peak_rss_mib"], lc["peak_rss_mib"])
    lc_bge = by.get("langchain-bge")
    if lc_bge and ours:
        out["first_ingest_wall_speedup_vs_langchain_same_model"] = div(lc_bge["seconds"], ours["seconds"])
        out["first_ingest_cpu_speedup_vs_langchain_same_model"] = div(lc_bge["process_cpu_s"], ours["process_cpu_s"])
        out["peak_rss_vs_langchain_same_model"] = div(ours["peak_rss_mib"], lc_bge["peak_rss_mib"])
    torch_ours = by.get("ours-torch")
    if lc and torch_ours:
        out["first_ingest_chunks_per_s_vs_langchain_same_torch_encoder"] = div(
            torch_ours["chunks_per_s"], lc["chunks_per_s"]
        )
    rerun, lc_rerun = by.get("ours-rerun"), by.get("langchain-rerun")
    if rerun and lc_rerun:
        out["unchanged_reingest_speedup_vs_langchain_rerun"] = div(lc_rerun["seconds"], rerun["seconds"])
        out["unchanged_reingest_process_speedup_vs_langchain_rerun"] = div(
            lc_rerun["process_wall_s"], rerun["process_wall_s"]
        )
        out["langchain_duplicates_after_rerun"] = lc_rerun.get("duplicate_chunks_in_store")
        if ours:  # chunk ids are deterministic: a rerun can only find what the first run stored
            out["ours_extra_chunks_in_store_after_rerun"] = rerun.get("chunks_in_store", 0) - ours["chunks_written"]
    for b in BACKENDS:
        enc, mine = by.get(f"encoder-{b}"), by.get(f"ours-{b}")
        if enc and mine:
            out[f"ours_{b}_time_vs_raw_encoder"] = div(mine["seconds"], enc["seconds"])
    update = by.get("ours-update")
    if update:
        out["update_chunks_reused"] = update.get("chunks_reused")
        out["update_chunks_embedded"] = update.get("chunks_embedded")
    return out


COLUMNS = [
    ("name", "step"),
    ("chunks_written", "chunks written"),
    ("chunks_embedded", "embedded"),
    ("seconds", "time s"),
    ("chunks_per_s", "chunks/s"),
    ("process_wall_s", "process s"),
    ("process_cpu_s", "CPU s"),
    ("cpu_s_per_1k_chunks", "CPU s/1k chunks"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("load_average_mean", "load avg"),
    ("chunks_in_store", "in store"),
    ("duplicate_chunks_in_store", "duplicates"),
]


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    title = (
        f"Ingestion: {cfg['corpus']['documents']:,} documents, threads={cfg['threads']}, our backend={cfg['backend']}"
    )
    lines = [table(result["steps"], COLUMNS, title), "", "Same-run ratios:"]
    lines += [f"- {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)
