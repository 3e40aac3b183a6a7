"""What every benchmark shares: machine info, subprocess measurement, tables, JSON output and data locations."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / ".bench"
WORK_DIR = BENCH_DIR / "work"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SCIFACT = SHARED_DATA / "scifact"
PACKAGES = (
    "torch",
    "onnxruntime",
    "sentence-transformers",
    "transformers",
    "chromadb",
    "bm25s",
    "langchain-core",
    "langchain-community",
    "langchain-chroma",
    "langchain-text-splitters",
    "xllamacpp",
    "fastapi",
    "uvicorn",
    "locust",
)


class BenchError(RuntimeError):
    """A benchmark cannot run (missing data, a failed worker); the message says what to do."""


def require_scifact() -> Path:
    """The shared SciFact copy (../shared/data/scifact relative to the repository root)."""
    if not (SCIFACT / "corpus.jsonl").is_file():
        raise BenchError(
            f"SciFact is not at {SCIFACT}: put the BEIR SciFact files (corpus.jsonl, queries.jsonl, qrels/) there, "
            "or use --quick with --corpus for a small corpus"
        )
    return SCIFACT


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty_tracked_files": dirty}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """Enough to tell whether two result files are comparable."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": ram_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": git_commit(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "the CPU may be shared with other processes: compare ratios measured in the same run",
    }


@dataclass
class Measured:
    """One benchmark step run in its own process: its JSON result plus wall time and CPU time."""

    name: str
    result: dict[str, Any]
    wall_s: float
    cpu_s: float
    load_before: float
    load_after: float
    load_mean: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "process_wall_s": round(self.wall_s, 3),
            "process_cpu_s": round(self.cpu_s, 3),
            "load_average_1m": [round(self.load_before, 2), round(self.load_after, 2)],
            "load_average_mean": round(self.load_mean, 2),
            **self.result,
            **self.extra,
        }


def run_measured(
    name: str, module: str, args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout_s: float = 7200
) -> Measured:
    """Run ``python -m module args...`` alone and measure it; the worker prints its result as the last stdout line.

    Wall time and CPU time (user + system) come from ``wait4`` on that very child, so each step is measured on
    its own; the worker reports its own peak RSS (see ``own_peak_rss_mib``). CPU time is less sensitive than wall
    time to other load on a shared machine.
    """
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=full_env, stdout=out, stderr=err, text=True
        )
        timer = threading.Timer(timeout_s, process.kill)
        timer.start()
        samples: list[float] = []
        done = threading.Event()

        def sample_load() -> None:  # the 1-minute load average every 10 s: how shared the CPU was during the step
            while not done.wait(10):
                samples.append(os.getloadavg()[0])

        sampler = threading.Thread(target=sample_load, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
            done.set()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        killed = " (killed at the time limit)" if wall >= timeout_s else ""
        raise BenchError(f"{name} failed with exit code {process.returncode}{killed}:\n{stderr[-3000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{name} printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    return Measured(
        name=name,
        result=json.loads(lines[-1]),
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_before=load_before,
        load_after=os.getloadavg()[0],
        load_mean=sum(samples) / len(samples) if samples else os.getloadavg()[0],
    )


def own_peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM), in MiB.

    Workers report it themselves: the ``ru_maxrss`` that ``wait4`` returns for a child also counts the parent's
    resident set at fork/exec time, which would credit every step with the orchestrator's memory.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


def emit(result: Mapping[str, Any]) -> None:
    """A worker's last stdout line: its JSON result."""
    print(json.dumps(dict(result), default=str), flush=True)


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in points}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(array, p)), 3) for p in points}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[Any, ...]], title: str = "") -> str:
    """A Markdown table (readable in a terminal and pasteable into docs); a column is (key, label[, digits])."""
    header = [column[1] for column in columns]
    body = [[fmt(row.get(column[0]), *column[2:]) for column in columns] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in body:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def write_result(kind: str, payload: Mapping[str, Any], out: Path | None) -> Path:
    """JSON under ``.bench/`` (or ``out``), one file per run plus ``<kind>-latest.json``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = out or BENCH_DIR / f"{kind}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, indent=2, default=str)
    path.write_text(text)
    if out is None:
        (BENCH_DIR / f"{kind}-latest.json").write_text(text)
    return path
