"""Requantized variants of the pinned generator GGUF, made once on first use with the ``gguf`` package.

Why: the xllamacpp wheel runs some weight types through repacked CPU kernels (its ``REPACK = 1`` build has
``q4_0_8x8``, ``q8_0_4x8``, ``iq4_nl_8x8`` and ``q4_K_8x8`` GEMMs, compiled for AVX2; it exposes no quantize API),
and the shipped Qwen Q4_K_M file also holds Q6_K matrices that have no repacked kernel. A recipe maps the
source type of each weight matrix to a target type; the token embedding (a row lookup, not a matmul) and the output
head are kept as shipped. The result is written to a temporary file, hash-checked against a pinned sha256 and
renamed into place, so a later start trusts it by name (like the assembled model). Rewriting takes about a
minute per GB on two cores and shows a tqdm progress bar with its ETA.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import ConfigError, ModelError
from rag.hashing import file_sha256

log = logging.getLogger(__name__)

KEEP_TENSORS = ("token_embd.weight", "output.weight")


@dataclass(frozen=True)
class QuantRecipe:
    """Which source weight types become which target type; ``sha256`` pins the result made from the pinned source."""

    name: str
    convert: tuple[tuple[str, str], ...]
    sha256: str | None
    description: str

    def target(self, tensor_name: str, source_type: str) -> str:
        if tensor_name in KEEP_TENSORS:
            return source_type
        return dict(self.convert).get(source_type, source_type)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "convert": dict(self.convert), "sha256": self.sha256}


# sha256 observed for the result of each recipe applied to the pinned Qwen2.5-Coder-1.5B Q4_K_M file
# (DEFAULT_GGUF_SHA256 in backends.py); numpy's rounding is deterministic, so every machine gets these bytes.
RECIPES: dict[str, QuantRecipe] = {
    "q8_0": QuantRecipe(
        "q8_0",
        (("Q4_K", "Q8_0"), ("Q6_K", "Q8_0")),
        "d5ce807f91ce1acb404c072f28c3358d4a5211cb85a7f24889e98fc2969a2d27",
        "every Q4_K/Q6_K weight matrix to Q8_0 (near-lossless re-encoding of the shipped weights; larger file)",
    ),
    "q4_0": QuantRecipe(
        "q4_0",
        (("Q4_K", "Q4_0"), ("Q6_K", "Q8_0")),
        "204a0f653fc346453bdfa49f9dfd142b723e4225cbd502142b5852f2b7b31d69",
        "Q4_K matrices to Q4_0 (a second, lossy quantization), Q6_K matrices to Q8_0",
    ),
    "q4_k_q8": QuantRecipe(
        "q4_k_q8",
        (("Q6_K", "Q8_0"),),
        "cbfdb0e32a5856f9dd113b1ead18ab158d439bf9abf47ebaf6fc6fc904130b7e",
        "only the Q6_K matrices (no repacked kernel) to Q8_0; Q4_K matrices unchanged",
    ),
}


def recipe(name: str) -> QuantRecipe:
    if name not in RECIPES:
        raise ConfigError(
            f"unknown generator quantization {name!r}",
            hint=f"use 'q4_k_m' (the shipped file) or one of {sorted(RECIPES)}",
        )
    return RECIPES[name]


def variant_path(source: Path, name: str) -> Path:
    """Where the ``name`` variant of ``source`` is cached (next to it, in the models directory)."""
    return source.with_name(f"{source.name.removesuffix('.gguf')}.requant-{name}.gguf")


def requantized_model(source: Path, name: str, *, source_sha256: str | None, progress: bool = True) -> Path:
    """The cached ``name`` variant of ``source``, made now if missing; ``source_sha256`` is checked first."""
    spec = recipe(name)
    target = variant_path(source, name)
    if target.is_file():
        return target
    if source_sha256 is not None and (seen := file_sha256(source)) != source_sha256:
        raise ModelError(
            f"{source} has sha256 {seen}, expected {source_sha256}; refusing to requantize another file",
            hint="delete it so the pinned model is assembled again",
        )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            write_variant(source, tmp, spec, progress=progress)
        except OSError as exc:
            raise ModelError(
                f"cannot write the {name} variant of {source.name} to {target.parent}: {exc}",
                hint="make the models directory writable (or prepare the file at install) or set "
                "RAG_GENERATOR_QUANT=q4_k_m",
            ) from exc
        digest = file_sha256(tmp)
        if spec.sha256 is not None and source_sha256 is not None and digest != spec.sha256:
            raise ModelError(
                f"requantized {target.name} has sha256 {digest}, expected {spec.sha256}",
                hint="check the pinned gguf and numpy versions (constraints.txt)",
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("requantized %s -> %s (%s, sha256 %s)", source.name, target.name, name, digest)
    return target


def write_variant(source: Path, target: Path, spec: QuantRecipe, *, progress: bool = True) -> None:
    """Copy every metadata field of ``source`` and write each tensor converted as ``spec`` says, one at a time."""
    try:
        import gguf
        from gguf.quants import dequantize, quant_shape_to_byte_shape, quantize
    except ImportError as exc:
        raise ModelError("package gguf is not installed", hint="pip install gguf (see constraints.txt)") from exc
    from tqdm import tqdm

    reader = gguf.GGUFReader(source)
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(target, arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    plan = []
    for tensor in reader.tensors:
        qtype = gguf.GGMLQuantizationType[spec.target(tensor.name, tensor.tensor_type.name)]
        shape = [int(n) for n in reversed(tensor.shape.tolist())]  # numpy order
        nbytes = _nbytes(shape, qtype, gguf)
        dtype = _dtype(qtype)
        info_shape = shape if dtype != "uint8" else quant_shape_to_byte_shape(shape, qtype)
        writer.add_tensor_info(tensor.name, info_shape, dtype, nbytes, raw_dtype=qtype)
        plan.append((tensor, qtype, shape, nbytes))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = sum(int(t.n_bytes) for t, *_ in plan)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"requantizing to {spec.name}", disable=not progress) as bar:
        for tensor, qtype, shape, nbytes in plan:
            data = tensor.data
            if qtype != tensor.tensor_type:
                values = dequantize(data, tensor.tensor_type).reshape(shape)
                data = quantize(values, qtype)
            if data.nbytes != nbytes:
                raise ModelError(f"tensor {tensor.name} came out at {data.nbytes} bytes, expected {nbytes}")
            writer.write_tensor_data(data)
            bar.update(int(tensor.n_bytes))
    writer.close()


def _nbytes(shape: list[int], qtype: Any, gguf: Any) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    count = 1
    for n in shape:
        count *= n
    return count // block * type_size


def _dtype(qtype: Any) -> Any:
    """The numpy dtype ``GGUFWriter`` expects for tensor info: float32 for F32, raw bytes for quantized types."""
    import numpy as np

    return np.dtype(np.float32) if qtype.name == "F32" else np.dtype(np.uint8)
