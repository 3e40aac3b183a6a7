"""Encoder microbenchmark: backend, threads, batching (unbatched, padded batches with and without length
bucketing) and ONNX Runtime spinning, measured on real chunks, with the int8 quality guard (cosine to the fp32
torch vectors of the same chunks).

All variants run in one process, interleaved over ``rounds`` so that load from other processes hits them alike;
each variant's best round is reported (the least disturbed), with every round kept in the JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import WORK_DIR, machine_info, require_scifact, table
from rag.indexing.embedding import Embedder, OnnxEncoder, export_onnx_int8
from rag.settings import Settings


def sample_chunks(n_docs: int, offset: int, settings: Settings, embedder: Embedder) -> list[str]:
    """Our chunk texts (title prefix included) for SciFact documents [offset, offset + n_docs)."""
    from ingest.loaders import iter_jsonl
    from rag.indexing.chunking import Chunker, ChunkerConfig

    chunker = Chunker(
        ChunkerConfig(settings.chunk_size, settings.chunk_overlap, settings.embed_titles),
        embedder.count_tokens,
        embedder.max_tokens,
    )
    texts: list[str] = []
    for i, record in enumerate(iter_jsonl(require_scifact() / "corpus.jsonl", settings.max_file_bytes)):
        if i < offset or record.document is None:
            continue
        if i >= offset + n_docs:
            break
        texts.extend(c.embed_text for c in chunker.split(record.document))
    return texts


def padded_batches(encoder: OnnxEncoder, texts: list[str], batch: int, bucketing: bool) -> np.ndarray:
    """The batched alternative to the product's unbatched ONNX encoding: padded batches, optionally sorted by
    length (what sentence-transformers does), mean pooling over the attention mask."""
    encoded = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_seq_length)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    order = np.argsort([-len(r) for r in ids], kind="stable") if bucketing else np.arange(len(ids))
    result = np.zeros((len(texts), encoder.get_embedding_dimension()), dtype=np.float32)
    for start in range(0, len(ids), batch):
        rows = order[start : start + batch]
        width = max(len(ids[r]) for r in rows)
        feeds = {
            name: np.zeros((len(rows), width), dtype=np.int64)
            for name in ("input_ids", "attention_mask", "token_type_ids")
        }
        for i, r in enumerate(rows):
            feeds["input_ids"][i, : len(ids[r])] = ids[r]
            feeds["token_type_ids"][i, : len(ids[r])] = types[r]
            feeds["attention_mask"][i, : len(ids[r])] = 1
        hidden = encoder.session.run(None, {k: v for k, v in feeds.items() if k in encoder.input_names})[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / mask.sum(axis=1)
        result[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return result


def run(
    *, quick: bool = False, rounds: int = 2, n_docs: int | None = None, work_root: Path = WORK_DIR
) -> dict[str, Any]:
    import torch

    machine = machine_info()
    n_docs = n_docs or (30 if quick else 120)
    data_dir = work_root / "shared"
    settings = Settings(data_dir=data_dir)
    torch_embedder = Embedder(settings)
    onnx_embedder = Embedder(settings.with_overrides(embedding_backend="onnx-int8"))
    model_file = export_onnx_int8(onnx_embedder.model_dir, onnx_embedder.onnx_dir)
    texts = sample_chunks(n_docs, 2000, settings, torch_embedder)  # away from the first docs used elsewhere
    model = torch_embedder.model
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    reference = torch_embedder.embed(texts)

    def torch_variant(threads: int, batch: int) -> Callable[[], np.ndarray]:
        def encode() -> np.ndarray:
            torch.set_num_threads(threads)
            return np.asarray(model.encode(texts, batch_size=batch, normalize_embeddings=True))

        return encode

    def onnx_variant(
        threads: int, batch: int | None = None, *, bucketing: bool = True, spinning: bool = False
    ) -> Callable[[], np.ndarray]:
        """The product's unbatched encoder, or (``batch``) padded batches on the same session for comparison."""
        encoder = OnnxEncoder(model_file, onnx_embedder.model_dir, onnx_embedder.max_tokens, threads)
        if spinning:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "1")
            encoder.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        if batch is None:
            return lambda: encoder.encode(texts)
        return lambda: padded_batches(encoder, texts, batch, bucketing)

    cores = max(1, len(os.sched_getaffinity(0)))
    variants: dict[str, Callable[[], np.ndarray]] = {}
    for threads in sorted({1, cores}):
        variants[f"torch fp32, {threads} thr, batch 32"] = torch_variant(threads, 32)
        variants[f"onnx int8, {threads} thr, unbatched (default)"] = onnx_variant(threads)
    variants[f"onnx int8, {cores} thr, unbatched, spinning on"] = onnx_variant(cores, spinning=True)
    for batch in (8, 32):
        variants[f"onnx int8, {cores} thr, batch {batch}, length-bucketed"] = onnx_variant(cores, batch)
    variants[f"onnx int8, {cores} thr, batch 32, not bucketed"] = onnx_variant(cores, 32, bucketing=False)
    variants[f"torch fp32, {cores} thr, batch 8"] = torch_variant(cores, 8)

    timings: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    cosines: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for name, encode in variants.items():
            tick, cpu_tick = time.perf_counter(), time.process_time()
            vectors = encode()
            timings[name].append(time.perf_counter() - tick)
            cpu[name].append(time.process_time() - cpu_tick)
            cosines[name] = np.sum(vectors * reference, axis=1)
    rows = []
    for name in variants:
        best = min(timings[name])
        cos = cosines[name]
        rows.append(
            {
                "variant": name,
                "chunks_per_s": round(len(texts) / best, 2),
                "rounds_s": [round(t, 2) for t in timings[name]],
                "cpu_ms_per_chunk": round(1000 * min(cpu[name]) / len(texts), 1),
                "rounds_cpu_s": [round(t, 2) for t in cpu[name]],
                "cosine_min": round(float(cos.min()), 4),
                "cosine_p1": round(float(np.percentile(cos, 1)), 4),
                "cosine_mean": round(float(cos.mean()), 4),
            }
        )
    base = rows[0]["chunks_per_s"]
    for row in rows:
        row["speedup_vs_first"] = round(row["chunks_per_s"] / base, 2)
    tokens = torch_embedder.count_tokens(texts)
    return {
        "benchmark": "encoder",
        "machine": machine,
        "config": {
            "quick": quick,
            "documents": n_docs,
            "chunks": len(texts),
            "tokens_mean": round(float(np.mean(tokens)), 1),
            "tokens_max": int(max(tokens)),
            "rounds": rounds,
            "onnx_model": str(model_file),
            "onnx_recipe": json.loads((Path(model_file).parent / "recipe.json").read_text()),
        },
        "variants": rows,
    }


def render(result: dict[str, Any]) -> str:
    cfg = result["config"]
    title = (
        f"Encoder: {cfg['chunks']} SciFact chunks (mean {cfg['tokens_mean']} tokens), best of {cfg['rounds']} rounds; "
        "CPU ms/chunk counts every thread (user + system)"
    )
    columns = [
        ("variant", "variant"),
        ("chunks_per_s", "chunks/s"),
        ("speedup_vs_first", "vs first row"),
        ("cpu_ms_per_chunk", "CPU ms/chunk"),
        ("cosine_min", "cos min", 4),
        ("cosine_p1", "cos p1", 4),
        ("cosine_mean", "cos mean", 4),
    ]
    return table(result["variants"], columns, title)
