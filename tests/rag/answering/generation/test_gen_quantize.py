"""Requantized GGUF variants (rag/answering/generation/quantize.py) and the local backend's speed knobs, with the
tiny SmolLM2 model: a rewritten file keeps its metadata, converts exactly the tensors a recipe names, loads in
llama.cpp and answers; the cache is hash-checked, atomic and shows a progress bar."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from rag.answering.generation import quantize
from rag.answering.generation.backends import LocalBackend, LocalSpeed, make_backend, smollm2_path
from rag.answering.generation.quantize import QuantRecipe, requantized_model, variant_path, write_variant
from rag.errors import ConfigError, ModelError
from rag.hashing import file_sha256
from rag.settings import Settings

STORY = [{"role": "user", "content": "Write one sentence about a lighthouse keeper."}]
TO_Q8 = QuantRecipe("test-q8", (("Q4_1", "Q8_0"),), None, "SmolLM2's Q4_1 matrices to Q8_0")


def types(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def smol_q8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("requant") / "smol-q8.gguf"
    write_variant(smollm2_path(), target, TO_Q8, progress=False)
    return target


def test_a_recipe_converts_the_named_types_and_keeps_the_rest(smol_q8: Path) -> None:
    before, after = types(smollm2_path()), types(smol_q8)
    assert before.keys() == after.keys()
    converted = [name for name, kind in before.items() if kind == "Q4_1"]
    assert converted and all(after[name] == "Q8_0" for name in converted)
    assert all(after[name] == kind for name, kind in before.items() if kind != "Q4_1")
    assert after["token_embd.weight"] == before["token_embd.weight"]  # the embedding lookup is kept as shipped
    source, rewritten = gguf.GGUFReader(smollm2_path()), gguf.GGUFReader(smol_q8)
    for key in ("tokenizer.chat_template", "tokenizer.ggml.tokens", "llama.block_count"):
        assert rewritten.fields[key].contents() == source.fields[key].contents()


def test_the_requantized_model_loads_and_answers_deterministically(smol_q8: Path) -> None:
    backend = LocalBackend(smol_q8, context=1024)
    first = backend.chat(STORY, max_tokens=16)
    assert first.text and first.text == backend.chat(STORY, max_tokens=16).text
    assert backend.model_id == "smol-q8"


def test_the_cached_variant_is_made_once_with_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "smol.gguf"
    source.symlink_to(smollm2_path())
    monkeypatch.setitem(quantize.RECIPES, TO_Q8.name, TO_Q8)
    made = requantized_model(source, TO_Q8.name, source_sha256=file_sha256(smollm2_path()))
    assert made == variant_path(source, TO_Q8.name) and made.is_file()
    bar = capfd.readouterr().err
    assert "requantizing to test-q8" in bar and "100%" in bar and "<" in bar  # tqdm's elapsed<remaining (ETA)
    stamp = made.stat().st_mtime_ns
    assert requantized_model(source, TO_Q8.name, source_sha256=None) == made
    assert made.stat().st_mtime_ns == stamp  # trusted by name: not rewritten
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_wrong_source_or_result_hash_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "smol.gguf"
    source.symlink_to(smollm2_path())
    monkeypatch.setitem(quantize.RECIPES, TO_Q8.name, TO_Q8)
    with pytest.raises(ModelError, match="refusing to requantize"):
        requantized_model(source, TO_Q8.name, source_sha256="0" * 64)
    pinned = QuantRecipe("pinned", TO_Q8.convert, "f" * 64, "a result hash that cannot match")
    monkeypatch.setitem(quantize.RECIPES, pinned.name, pinned)
    with pytest.raises(ModelError, match=r"expected f{64}"):
        requantized_model(source, pinned.name, source_sha256=file_sha256(smollm2_path()), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smol.gguf"]


def test_unknown_quantization_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown generator quantization"):
        LocalBackend(models_dir=tmp_path, speed=LocalSpeed(quant="q3_x"))
    # another GGUF than the bundled one is never requantized
    other = LocalBackend(smollm2_path(), speed=LocalSpeed(quant="q4_0"))
    assert other.model_id == "SmolLM2-135M-Instruct.Q4_1"


def test_speed_settings_reach_the_backend_and_its_config(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path, generator="local")  # type: ignore[arg-type]
    fast = base.with_overrides(
        generator_quant="q4_0", generator_ubatch=128, generator_flash_attn="on", generator_draft="qwen-0.5b"
    )
    plain, tuned = make_backend(base), make_backend(fast)
    assert isinstance(tuned, LocalBackend)
    assert tuned.speed == LocalSpeed(quant="q4_0", ubatch=128, flash_attn="on", draft="qwen-0.5b")
    assert tuned.model_id == "qwen2.5-coder-1.5b-instruct-q4_k_m.requant-q4_0"
    assert tuned.sha256 == quantize.RECIPES["q4_0"].sha256
    config = tuned.to_dict()
    assert config["speed"]["ubatch"] == 128 and config["draft_sha256"]
    assert config != plain.to_dict() and plain.to_dict()["draft_sha256"] is None


def test_speed_knobs_load_and_generate(smol_q8: Path) -> None:
    """Small batches, flash attention, a quantized KV cache and n-gram speculation all run in llama.cpp."""
    speed = LocalSpeed(batch=256, ubatch=64, flash_attn="on", kv_type="q8_0", draft="ngram", draft_max=4)
    backend = LocalBackend(smol_q8, context=1024, speed=speed)
    prompt = [{"role": "user", "content": "Repeat exactly: the lighthouse keeper lit the lamp at dusk. " * 3}]
    result = backend.chat(prompt, max_tokens=24)
    assert result.text and result.prompt_tokens and result.prompt_tokens > 64  # more than one ubatch
    assert result.completion_tokens and result.completion_tokens > 0
