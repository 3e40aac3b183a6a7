"""Generator speed on this CPU: candidate llama.cpp configurations against today's default, in one interleaved run.

Every configuration answers the same labelled sample questions (samples/qa over samples/corpus) through the real
``QueryPipeline`` (retrieval done once per question and shared, sentence selection, the real RAG prompt, citation
checks). Questions are interleaved across configurations (A B C, B C A, ...), so a change in machine load hits
all of them alike; speed is reported as ratios against the ``today`` configuration measured in the same run.

Per configuration: prompt tokens/s (prompt tokens / the model's time to its first token), generation tokens/s
(tokens after the first / the time after it), time to first token, full-answer time, and answer quality (token F1
to the reference, a cited reference document, correct abstention) with paired differences and bootstrap 95% CIs.
The table also records the CPU's flags and what the llama.cpp build itself was compiled for.
"""

from __future__ import annotations

import ctypes
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO_ROOT, WORK_DIR, BenchError, machine_info, percentiles, table
from bench.context import pick_questions
from eval.metrics import abstention_correct, token_f1
from rag.ml.slices import bootstrap_ci
from rag.settings import Settings

SAMPLES = REPO_ROOT / "samples"

# Today's default (before issue 14), pinned here so the baseline stays the same when the defaults change.
TODAY: dict[str, Any] = {
    "generator_quant": "q4_k_m",
    "generator_threads": 2,
    "generator_batch": 2048,
    "generator_ubatch": 512,
    "generator_flash_attn": "auto",
    "generator_kv_type": "f16",
    "generator_draft": "none",
    "generator_cache_prompt": False,
    "context_chars": 1000,
}
CANDIDATES: dict[str, dict[str, Any]] = {
    "today": {},
    "threads1": {"generator_threads": 1},
    "ubatch128": {"generator_ubatch": 128},
    "ubatch256": {"generator_ubatch": 256},
    "batch256": {"generator_batch": 256, "generator_ubatch": 256},
    "fa_on": {"generator_flash_attn": "on"},
    "fa_off": {"generator_flash_attn": "off"},
    "kv_q8": {"generator_kv_type": "q8_0", "generator_flash_attn": "on"},
    "prefix_cache": {"generator_cache_prompt": True},
    "q8_0": {"generator_quant": "q8_0"},
    "q4_0": {"generator_quant": "q4_0"},
    "q4_k_q8": {"generator_quant": "q4_k_q8"},
    "draft05b": {"generator_draft": "qwen-0.5b"},
    "ngram": {"generator_draft": "ngram"},
    "ctx600": {"context_chars": 600},
    "ctx400": {"context_chars": 400},
}
BUNDLED_ONLY = ("generator_quant", "generator_draft")  # need the bundled Qwen model
QUICK_CONFIGS = ("today", "ubatch128", "threads1", "ctx600")
DEFAULT_CONFIGS = ("today", "prefix_cache+ctx400", "prefix_cache+ctx600", "q4_0", "default")
FLAGS = ("avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8")
BUILD_FEATURES = ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx_int8", "avx_vnni")


def config_overrides(name: str, defaults: Settings) -> dict[str, Any]:
    """A configuration by name; ``a+b`` merges named candidates; ``default`` is the current Settings default."""
    overrides = dict(TODAY)
    for part in name.split("+"):
        if part == "default":
            overrides.update({key: getattr(defaults, key) for key in TODAY})
        elif part in CANDIDATES:
            overrides.update(CANDIDATES[part])
        else:
            raise BenchError(f"unknown generator configuration {part!r}; use one of {sorted(CANDIDATES)} or default")
    return overrides


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    present = set(line.split(":", 1)[-1].split())
    return [flag for flag in FLAGS if flag in present]


def runtime_info() -> dict[str, Any]:
    """llama.cpp's own system info plus the CPU features its kernels were compiled for (ggml_cpu_has_*)."""
    import xllamacpp

    info: dict[str, Any] = {"system_info": xllamacpp.get_system_info().strip()}
    try:
        library = ctypes.CDLL(xllamacpp.xllamacpp.__file__)
        info["compiled_for"] = {f: bool(getattr(library, f"ggml_cpu_has_{f}")()) for f in BUILD_FEATURES}
    except (OSError, AttributeError) as exc:
        info["compiled_for"] = f"unknown: {exc}"
    return info


def run(
    *,
    quick: bool = False,
    configs: Sequence[str] | None = None,
    n_questions: int | None = None,
    models_dir: Path | None = None,
    backend: str = "onnx-int8",
    work_root: Path = WORK_DIR,
) -> dict[str, Any]:
    from rag.answering.generation.backends import smollm2_path

    questions = pick_questions(n_questions or (2 if quick else 16))
    names = list(configs or (QUICK_CONFIGS if quick else DEFAULT_CONFIGS))
    if "today" not in names:
        names.insert(0, "today")
    data_dir = work_root / "generator" / f"data-{backend}"
    data_dir.mkdir(parents=True, exist_ok=True)
    models = (models_dir or work_root / "shared" / "models").resolve()
    models.mkdir(parents=True, exist_ok=True)
    link = data_dir / "models"
    if link.is_symlink() and link.resolve() != models:
        link.unlink()
    if not link.exists():
        link.symlink_to(models, target_is_directory=True)
    base = Settings(data_dir=data_dir, embedding_backend=backend, generator="local")
    base = base.with_overrides(generator_model_path=smollm2_path() if quick else None)
    variants = {name: config_overrides(name, Settings()) for name in names}
    if quick:
        for name, overrides in variants.items():
            if any(overrides[key] != TODAY[key] for key in BUNDLED_ONLY):
                raise BenchError(f"configuration {name!r} needs the bundled Qwen model: not in --quick")
    runner = Runner(base, variants)
    records = runner.measure(questions)
    return assemble(quick, base, questions, variants, records, runner.load_s)


class Runner:
    """One loaded model per distinct backend configuration (configurations that differ only in the prompt share
    one, unless the prompt cache is on), the sample corpus indexed once, and one retrieval per question shared by
    every configuration."""

    def __init__(self, base: Settings, variants: dict[str, dict[str, Any]]) -> None:
        from ingest.pipeline import IngestionPipeline
        from rag.answering.generation.answerer import make_answerer
        from rag.answering.generation.backends import LocalBackend
        from rag.answering.pipeline import QueryPipeline
        from rag.indexing.embedding import Embedder
        from rag.indexing.store import VectorStore

        self.embedder = Embedder(base)
        IngestionPipeline(base, embedder=self.embedder, progress=False).run([SAMPLES / "corpus"])
        self.store = VectorStore(base)
        self.retrievals: dict[str, Any] = {}
        self.pipelines: dict[str, Any] = {}
        self.load_s: dict[str, float] = {}
        backends: dict[str, LocalBackend] = {}
        for name, overrides in variants.items():
            settings = base.with_overrides(**overrides)
            # a prompt cache must not see another configuration's prompt for the same question (a repeat hit)
            shared = {k: v for k, v in overrides.items() if k != "context_chars" or overrides["generator_cache_prompt"]}
            key = json.dumps(shared, sort_keys=True)
            if key not in backends:
                backends[key] = LocalBackend.from_settings(settings)
                tick = time.perf_counter()
                backends[key].load()  # a first run that must requantize shows its progress bar here
                backends[key].chat([{"role": "user", "content": "Say OK."}], max_tokens=2)  # warm-up, not timed
                self.load_s[name] = round(time.perf_counter() - tick, 1)
            answerer = make_answerer(settings, backend=backends[key])
            pipeline = QueryPipeline(settings, embedder=self.embedder, store=self.store, answerer=answerer)
            pipeline.retrieve = self._cached(pipeline.retrieve)  # type: ignore[method-assign]
            self.pipelines[name] = pipeline

    def _cached(self, retrieve: Any) -> Any:
        def cached(question: str, *args: Any) -> Any:
            if question not in self.retrievals:
                self.retrievals[question] = retrieve(question, *args)
            return self.retrievals[question]

        return cached

    def measure(self, questions: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Question by question, every configuration in a rotated order (A B C, B C A, C A B, ...)."""
        names = list(self.pipelines)
        records: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for i, row in enumerate(questions):
            self.pipelines[names[0]].retrieve(row["question"])  # retrieval outside every timed call
            for name in names[i % len(names) :] + names[: i % len(names)]:
                try:
                    records[name].append(self.answer(name, row))
                except Exception as exc:  # a failure downstream of the model must not lose the whole run
                    print(f"[bench generator] {name} {row['id']} failed: {type(exc).__name__}: {exc}", flush=True)
                    records[name].append(failed(row, exc))
            print(f"[bench generator] question {i + 1}/{len(questions)} done", flush=True)
        return records

    def answer(self, name: str, row: dict[str, Any]) -> dict[str, Any]:
        from rag.answering.pipeline import ResultEvent, TokenEvent

        started = time.perf_counter()
        first: float | None = None
        result = None
        for event in self.pipelines[name].stream(row["question"]):
            if isinstance(event, TokenEvent) and first is None:
                first = time.perf_counter() - started
            elif isinstance(event, ResultEvent):
                result = event.result
        total = time.perf_counter() - started
        assert result is not None
        measured = record(row, result, first, total)
        print(
            f"[bench generator] {name} {row['id']}: {measured['prompt_tokens']} prompt tokens, first token "
            f"{first or 0:.1f}s, answer {total:.1f}s",
            flush=True,
        )
        return measured


def failed(row: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """A question that raised: kept in the records (with its error), left out of every summary and pair."""
    nan = float("nan")
    return {
        "id": row["id"],
        "answerable": row["answerable"],
        "generated": False,
        "error": f"{type(exc).__name__}: {exc}",
        "ttft_s": None,
        "total_s": None,
        "prompt_tokens": None,
        "cached_tokens": 0,
        "completion_tokens": None,
        "prompt_s": None,
        "decode_s": None,
        "abstained": None,
        "f1": nan,
        "cited_reference_doc": nan,
        "abstention_correct": nan,
        "answer": "",
    }


def record(row: dict[str, Any], result: Any, first: float | None, total: float) -> dict[str, Any]:
    """One answer's speed and quality; token rates come from the model's own counts and its first-token time."""
    response, generated = result.response, result.generated
    cited_docs = {c.doc_id for c in response.citations if c.cited_in_answer}
    prompt_tokens = generated.prompt_tokens if generated else None
    cached = (generated.cached_tokens or 0) if generated else 0
    completion = generated.completion_tokens if generated else None
    model_first = generated.first_token_seconds if generated else None
    model_total = generated.seconds if generated else None
    decode_s = model_total - model_first if model_total and model_first else None
    return {
        "id": row["id"],
        "answerable": row["answerable"],
        "generated": prompt_tokens is not None,
        "ttft_s": first,
        "total_s": total,
        "prompt_tokens": prompt_tokens,
        "cached_tokens": cached,
        "completion_tokens": completion,
        "prompt_s": model_first,
        "decode_s": decode_s,
        "abstained": response.abstained,
        "f1": token_f1(response.answer, row["reference"]) if row["answerable"] else float("nan"),
        "cited_reference_doc": (
            float(bool(cited_docs & set(row["reference_doc_ids"]))) if row["answerable"] else float("nan")
        ),
        "abstention_correct": abstention_correct(response.abstained, row["answerable"]),
        "answer": response.answer[:300],
    }


def assemble(
    quick: bool,
    base: Settings,
    questions: list[dict[str, Any]],
    variants: dict[str, dict[str, Any]],
    records: dict[str, list[dict[str, Any]]],
    load_s: dict[str, float],
) -> dict[str, Any]:
    rows = [summarise(name, recs) for name, recs in records.items()]
    baseline = next(r for r in rows if r["config"] == "today")
    for row in rows:
        add_ratios(row, baseline)
    return {
        "benchmark": "generator",
        "machine": {**machine_info(), "cpu_flags": cpu_flags(), "runtime": runtime_info()},
        "config": {
            "quick": quick,
            "questions": len(questions),
            "answerable": sum(1 for q in questions if q["answerable"]),
            "model": str(base.generator_model_path or "bundled Qwen2.5-Coder-1.5B-Instruct"),
            "max_answer_tokens": base.max_answer_tokens,
            "top_k": base.top_k,
            "retrieval_mode": base.retrieval_mode,
            "interleaved": "per question, rotated order",
            "load_s": load_s,
            "variants": variants,
        },
        "configs": rows,
        "paired_vs_today": paired_differences(records, "today"),
        "records": records,
    }


def summarise(name: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    gen = [r for r in records if r["generated"] and r["prompt_s"]]
    prompt_tokens = sum(r["prompt_tokens"] for r in gen)
    processed = prompt_tokens - sum(r.get("cached_tokens") or 0 for r in gen)
    prompt_s = sum(r["prompt_s"] for r in gen)
    decoded = sum(max((r["completion_tokens"] or 0) - 1, 0) for r in gen if r["decode_s"])
    decode_s = sum(r["decode_s"] for r in gen if r["decode_s"])

    def mean(key: str) -> float | None:
        values = np.asarray([r[key] for r in records], dtype=float)
        return None if np.all(np.isnan(values)) else round(float(np.nanmean(values)), 3)

    return {
        "config": name,
        "generated": len(gen),
        "prompt_tokens_p50": percentiles([r["prompt_tokens"] for r in gen], (50,))["p50"],
        "prompt_tps": round(prompt_tokens / prompt_s, 1) if prompt_s else None,
        "processed_tps": round(processed / prompt_s, 1) if prompt_s else None,
        "cached_tokens_p50": percentiles([r.get("cached_tokens") or 0 for r in gen], (50,))["p50"],
        "gen_tps": round(decoded / decode_s, 1) if decode_s else None,
        "ttft_p50_s": percentiles([r["ttft_s"] for r in gen if r["ttft_s"] is not None], (50,))["p50"],
        "answer_p50_s": percentiles([r["total_s"] for r in records if r["total_s"] is not None], (50,))["p50"],
        "answer_p90_s": percentiles([r["total_s"] for r in records if r["total_s"] is not None], (90,))["p90"],
        "failed": sum(1 for r in records if r.get("error")),
        "token_f1": mean("f1"),
        "cited_reference_doc": mean("cited_reference_doc"),
        "abstention_correct": mean("abstention_correct"),
    }


def add_ratios(row: dict[str, Any], baseline: dict[str, Any]) -> None:
    """Against ``today`` in the same run: >1 is faster for rates, <1 is faster for times."""
    for key in ("prompt_tps", "processed_tps", "gen_tps", "ttft_p50_s", "answer_p50_s"):
        ours, theirs = row.get(key), baseline.get(key)
        row[f"{key}_ratio"] = round(ours / theirs, 2) if ours and theirs else None


def paired_differences(records: dict[str, list[dict[str, Any]]], baseline: str) -> dict[str, Any]:
    """Each configuration minus ``baseline``, question by question: mean and bootstrap 95% CI; for times, the
    geometric mean of per-question ratios with its CI."""
    base = {r["id"]: r for r in records[baseline] if not r.get("error")}
    result: dict[str, Any] = {}
    for name, recs in records.items():
        if name == baseline:
            continue
        result[name] = {}
        for key in ("f1", "cited_reference_doc", "abstention_correct"):
            diffs = np.asarray(
                [float(r[key]) - float(base[r["id"]][key]) for r in recs if r["id"] in base], dtype=float
            )
            diffs = diffs[np.isfinite(diffs)]
            if len(diffs):
                low, high = bootstrap_ci(diffs, n_resamples=1000, seed=0)
                result[name][key] = {"mean": round(float(diffs.mean()), 3), "ci95": [round(low, 3), round(high, 3)]}
        for key in ("ttft_s", "total_s"):
            pairs = [(r[key], base[r["id"]][key]) for r in recs if r["id"] in base and r[key] and base[r["id"]][key]]
            if pairs:
                logs = np.log(np.asarray([a / b for a, b in pairs], dtype=float))
                low, high = bootstrap_ci(logs, n_resamples=1000, seed=0)
                result[name][f"{key}_ratio"] = {
                    "geo_mean": round(float(np.exp(logs.mean())), 3),
                    "ci95": [round(float(np.exp(low)), 3), round(float(np.exp(high)), 3)],
                }
    return result


def render(result: dict[str, Any]) -> str:
    cfg, machine = result["config"], result["machine"]
    columns = [
        ("config", "config"),
        ("prompt_tokens_p50", "prompt tok p50"),
        ("cached_tokens_p50", "cached tok p50"),
        ("prompt_tps", "prompt tok/s", 1),
        ("prompt_tps_ratio", "x today"),
        ("processed_tps", "processed tok/s", 1),
        ("processed_tps_ratio", "x today"),
        ("gen_tps", "gen tok/s", 1),
        ("gen_tps_ratio", "x today"),
        ("ttft_p50_s", "first token p50 s"),
        ("ttft_p50_s_ratio", "x today"),
        ("answer_p50_s", "answer p50 s"),
        ("answer_p50_s_ratio", "x today"),
        ("token_f1", "token F1", 3),
        ("cited_reference_doc", "cites ref doc", 3),
        ("abstention_correct", "abstention ok", 3),
    ]
    title = (
        f"Generator configurations: {cfg['questions']} labelled sample questions ({cfg['answerable']} answerable), "
        f"{cfg['model']}, interleaved {cfg['interleaved']}"
    )
    lines = [table(result["configs"], columns, title), ""]
    runtime = machine["runtime"]
    lines.append(f"- CPU: {machine['cpu_model']}, flags: {' '.join(machine['cpu_flags']) or '-'}")
    lines.append(f"- llama.cpp system info: {runtime['system_info']}; compiled for: {runtime['compiled_for']}")
    for name, diffs in result["paired_vs_today"].items():
        shown = [
            f"{k} {v['mean']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" for k, v in diffs.items() if "mean" in v
        ]
        shown += [
            f"{k} x{v['geo_mean']:.2f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]"
            for k, v in diffs.items()
            if "geo_mean" in v
        ]
        lines.append(f"- {name} vs today, paired: {', '.join(shown)}")
    return "\n".join(lines)
