"""The reliability suite: fuzzing, load and overload, faults, prompt-injection screening.

One command runs everything against real processes on loopback (uvicorn, `chroma run`, `mlflow server`,
locust, schemathesis) and prints one report::

    .venv/bin/python bench/reliability.py            # bounded: about 10 minutes on a busy 2-core box
    .venv/bin/python bench/reliability.py --long     # 300 fuzz examples per operation, a 10-minute soak

It exits 0 when every check held and 1 otherwise. The tests in ``tests/reliability/`` call the same functions
with smaller bounds, so CI and this report measure the same things. See docs/OPERATIONS.md for what each
result means and what to do when one fails.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the project importable without installing it
    sys.path.insert(0, str(REPO))

SAMPLES = REPO / "samples"
CASES = REPO / "tests" / "reliability" / "data"
SCHEMATHESIS_CONFIG = REPO / "tests" / "reliability" / "schemathesis.toml"
LOCUSTFILE = Path(__file__).with_name("reliability_locust.py")
BIN = Path(sys.executable).parent
QUESTION = "What kind of lens did Fresnel present for lighthouses?"

# ------------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without its RAG_* settings (a developer's config must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_") and k != "MLFLOW_TRACKING_URI"}
    env.update(HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="passive", RAGAS_DO_NOT_TRACK="true")
    env.update(extra)
    return env


def settings_env(**settings: Any) -> dict[str, str]:
    """``Settings`` fields as the RAG_* variables a server process reads."""
    env = {}
    for name, value in settings.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = json.dumps([str(v) if isinstance(v, Path) else v for v in value])
        elif isinstance(value, dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"RAG_{name.upper()}"] = text
    return env


@dataclass
class Service:
    """A server process on loopback with its log file; ``ready_path`` answers < 500 once it is up."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    ready_path: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )  # its own process group: `mlflow server` serves from child processes that must die with it
        return self

    def wait_ready(self, timeout_s: float = 180, *, require_ok: bool = False) -> Service:
        """Wait until ``ready_path`` answers (with 200 when ``require_ok``); fail early if the process died."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited before it was ready; see {self.log_path}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(self.url + self.ready_path, timeout=5).status_code
                if status == 200 or (status < 500 and not require_ok):
                    return self
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} was not ready within {timeout_s:.0f}s; see {self.log_path}")

    def _signal_group(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL to the whole process group: the crash being simulated, no clean shutdown."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)
        self.kill()  # whatever is left of the group

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def api_service(
    data_dir: Path, log_dir: Path, *, name: str = "api", port: int | None = None, **settings: Any
) -> Service:
    """`rag serve` as an operator starts it, configured by RAG_* variables."""
    port = port or free_port()
    env = clean_env(**settings_env(data_dir=data_dir, **settings))
    argv = [sys.executable, "-m", "rag", "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Service(name, argv, env, port, log_dir / f"{name}.log", "/readyz")


def chroma_service(path: Path, log_dir: Path, *, port: int | None = None) -> Service:
    port = port or free_port()
    argv = [str(BIN / "chroma"), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    return Service("chroma", argv, clean_env(), port, log_dir / "chroma.log", "/api/v2/heartbeat")


def mlflow_service(root: Path, log_dir: Path, *, port: int | None = None) -> Service:
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    argv = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return Service("mlflow", argv, clean_env(), port, log_dir / "mlflow.log", "/health")


def process_rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


# ------------------------------------------------------------------------------------------------ data


def write_sample_corpus(dest: Path, only: Sequence[str] | None = None) -> Path:
    """The sample corpus (or ``only`` these files of it) plus the poisoned notice (``poisoned/notice.md``)."""
    if only is None:
        shutil.copytree(SAMPLES / "corpus", dest, dirs_exist_ok=True)
    for name in only or ():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SAMPLES / "corpus" / name, dest / name)
    (dest / "poisoned").mkdir(exist_ok=True)
    shutil.copy2(SAMPLES / "poisoned" / "notice.md", dest / "poisoned" / "notice.md")
    return dest


def ingest(data_dir: Path, sources: Sequence[Path], *, embedder: Any = None, **settings: Any) -> Any:
    from ingest.pipeline import IngestionPipeline
    from rag.settings import Settings

    pipeline = IngestionPipeline(Settings(data_dir=data_dir, **settings), embedder=embedder, progress=False)
    return pipeline.run(list(sources))


# ------------------------------------------------------------------------------------------------ fuzzing


@dataclass
class FuzzResult:
    cases: int
    requests: int
    statuses: dict[int, int]
    failures: list[str]
    exit_code: int
    seconds: float
    report_dir: Path

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failures and self.server_errors == 0

    def line(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return (
            f"{self.cases} cases, {self.requests} requests, 5xx: {self.server_errors}, "
            f"schema failures: {len(self.failures)} ({self.seconds:.0f}s) [{statuses}]"
        )


def run_fuzz(
    base_url: str, *, api_key: str, max_examples: int, report_dir: Path, seed: int = 42, timeout_s: float = 900
) -> FuzzResult:
    """`st run` over the app's own OpenAPI schema with every check, then count what the server answered."""
    report_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(BIN / "st"), "--config-file", str(SCHEMATHESIS_CONFIG), "--no-color",
        "run", f"{base_url}/openapi.json",
        "--checks", "all", "--max-examples", str(max_examples), "--seed", str(seed),
        "--workers", "1", "--header", f"X-API-Key: {api_key}", "--request-timeout", "60",
        "--report", "json,ndjson", "--report-dir", str(report_dir),
        "--report-json-path", str(report_dir / "report.json"),
        "--report-ndjson-path", str(report_dir / "events.ndjson"),
    ]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=report_dir, env=clean_env())
    (report_dir / "output.txt").write_text(proc.stdout + proc.stderr)
    seconds = time.monotonic() - started
    try:
        report = json.loads((report_dir / "report.json").read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"schemathesis wrote no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}") from exc
    failures = [
        f"{f['code']} {f['title']}: {', '.join(f['operations'])}" for f in report.get("failures", [])
    ] + [f"error: {e}" for e in report.get("errors", [])]
    statuses: Counter[int] = Counter()
    for line in (report_dir / "events.ndjson").read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event:
            continue
        for interaction in (event.get("recorder", {}).get("interactions") or {}).values():
            response = interaction.get("response")
            statuses[int(response["status_code"]) if response else 0] += 1
    return FuzzResult(
        cases=int(report["test_cases"]["generated"]),
        requests=sum(statuses.values()),
        statuses=dict(statuses),
        failures=failures,
        exit_code=proc.returncode,
        seconds=seconds,
        report_dir=report_dir,
    )


# ------------------------------------------------------------------------------------------------ load


@dataclass
class LoadResult:
    mode: str
    users: int
    seconds: float
    requests: int
    failures: int
    statuses: dict[str, int]
    problems: dict[str, int]
    p50_ms: float
    p99_ms: float
    rps: float
    rss_mb: list[float] = field(default_factory=list)

    @property
    def shed(self) -> int:
        return self.statuses.get("429", 0) + self.statuses.get("503", 0)

    @property
    def timeouts(self) -> int:
        return self.problems.get("timeout", 0) + self.problems.get("connection_error", 0)

    @property
    def rss_growth_mb(self) -> float:
        return self.rss_mb[-1] - self.rss_mb[0] if len(self.rss_mb) >= 2 else 0.0

    def memory_line(self) -> str:
        """Resident memory over the run: a leak keeps growing in the second half, warm-up does not."""
        if len(self.rss_mb) < 4:
            return "too few memory samples"
        half = self.rss_mb[len(self.rss_mb) // 2]
        return (
            f"RSS start {self.rss_mb[0]:.0f} MB, midway {half:.0f}, end {self.rss_mb[-1]:.0f}, "
            f"max {max(self.rss_mb):.0f}; second-half growth {self.rss_mb[-1] - half:+.1f} MB "
            f"over {len(self.rss_mb)} samples"
        )

    @property
    def ok(self) -> bool:
        """Capacity: every answer a 200. Overload: only 200/429/503 with Retry-After, no timeout, some shed."""
        if self.requests == 0 or self.failures:
            return False
        return self.mode == "capacity" or (self.shed > 0 and self.timeouts == 0)

    def line(self) -> str:
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        memory = ""
        if self.rss_mb:
            memory = f", RSS {self.rss_mb[0]:.0f} -> {self.rss_mb[-1]:.0f} MB ({self.rss_growth_mb:+.1f})"
        return (
            f"{self.users} users x {self.seconds:.0f}s: {self.requests} requests, errors {self.failures}, "
            f"timeouts {self.timeouts}, p50 {self.p50_ms:.0f} ms, p99 {self.p99_ms:.0f} ms, "
            f"{self.rps:.1f} req/s [{statuses}]{memory}"
        )


def run_load(
    base_url: str,
    *,
    mode: str,
    users: int,
    seconds: int,
    out_dir: Path,
    keys: Sequence[str] = (),
    wait_s: tuple[float, float] = (0.2, 0.5),
    request_timeout_s: float = 60,
    pid: int | None = None,
    sample_every_s: float = 2.0,
) -> LoadResult:
    """Locust, headless, against a real server; ``pid`` is sampled for resident memory while it runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = out_dir / f"locust-{mode}"
    env = clean_env(
        RAG_LOAD_MODE=mode,
        RAG_LOAD_KEYS=",".join(keys),
        RAG_LOAD_WAIT=f"{wait_s[0]},{wait_s[1]}",
        RAG_LOAD_TIMEOUT=str(request_timeout_s),
        RAG_LOAD_OUT=str(prefix) + "-statuses.json",
    )
    argv = [
        str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
        "-u", str(users), "-r", str(users), "-t", f"{seconds}s", "--stop-timeout", str(int(request_timeout_s)),
        "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip
    rss: list[float] = []
    with (out_dir / f"locust-{mode}.log").open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + seconds + request_timeout_s + 60
        while proc.poll() is None:
            if pid is not None:
                with contextlib.suppress(Exception):
                    rss.append(process_rss_mb(pid))
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"locust did not stop; see {out_dir}")
            time.sleep(sample_every_s)
    if pid is not None:
        with contextlib.suppress(Exception):
            rss.append(process_rss_mb(pid))
    try:
        with Path(f"{prefix}_stats.csv").open() as handle:
            total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    except (OSError, StopIteration) as exc:
        output = (out_dir / f"locust-{mode}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"locust exited {proc.returncode} without statistics:\n{output}") from exc
    breakdown = json.loads(Path(str(prefix) + "-statuses.json").read_text())
    return LoadResult(
        mode=mode,
        users=users,
        seconds=seconds,
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        statuses=breakdown["statuses"],
        problems=breakdown["problems"],
        p50_ms=float(total["50%"] or 0),
        p99_ms=float(total["99%"] or 0),
        rps=float(total["Requests/s"] or 0),
        rss_mb=rss,
    )


# ------------------------------------------------------------------------------------------------ faults


@dataclass
class Outcome:
    """One fault scenario: did the system behave as promised, and what was seen."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name}: {self.detail}"

    @classmethod
    def judged(cls, name: str, detail: str, problems: list[str]) -> Outcome:
        """Passes when no problem was seen; the problems follow what was seen."""
        return cls(name, not problems, detail + "".join(f"; {p}" for p in problems))


def _ask(client: httpx.Client, url: str, question: str = QUESTION, timeout_s: float = 60) -> httpx.Response:
    return client.post(f"{url}/v1/query", json={"question": question}, timeout=timeout_s)


def chroma_outage(api_urls: Sequence[str], chroma: Service, *, recover_timeout_s: float = 120) -> Outcome:
    """SIGKILL the Chroma server mid-traffic, check every API answers 503 ``store_unavailable`` (not 500, not a
    hang), restart the server on the same port and data, and wait for every API to answer 200 again by itself."""
    problems: list[str] = []
    with httpx.Client() as client:
        for url in api_urls:
            if (status := _ask(client, url).status_code) != 200:
                problems.append(f"{url} answered {status} before the outage")
        chroma.kill()
        down = 0
        for url in api_urls:
            for _ in range(3):
                response = _ask(client, url, timeout_s=30)
                body = response.json()
                if response.status_code != 503 or body.get("code") != "store_unavailable":
                    problems.append(f"{url} answered {response.status_code} {body.get('code')} during the outage")
                elif not response.headers.get("Retry-After") or "Chroma" not in body.get("detail", ""):
                    problems.append(f"{url}: 503 without Retry-After or without naming Chroma: {body}")
                else:
                    down += 1
            ready = client.get(f"{url}/readyz", timeout=30)
            if ready.status_code != 503:
                problems.append(f"{url}/readyz answered {ready.status_code} while Chroma was down")
        started = time.monotonic()
        chroma.start().wait_ready(90)
        recovered: dict[str, float] = {}
        while len(recovered) < len(api_urls) and time.monotonic() - started < recover_timeout_s:
            for url in api_urls:
                if url not in recovered and _ask(client, url, timeout_s=30).status_code == 200:
                    recovered[url] = time.monotonic() - started
            time.sleep(0.5)
    problems += [f"{url} did not recover within {recover_timeout_s:.0f}s" for url in api_urls if url not in recovered]
    worst = max(recovered.values(), default=float("nan"))
    detail = (
        f"{down} answers 503 store_unavailable with Retry-After while down; "
        f"{len(recovered)}/{len(api_urls)} APIs answered 200 again {worst:.1f}s after Chroma restarted"
    )
    return Outcome.judged("Chroma server killed mid-traffic", detail, problems)


def _jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(i: int, version: int) -> dict[str, str]:
    weight = i if version == 1 else 1000 + i
    return {"_id": f"item-{i}", "title": f"Item {i}", "text": f"Item number {i} is a crate that weighs {weight} kg."}


def concurrent_ingestion(
    work_dir: Path, *, embedder: Any = None, docs: int = 120, changed: int = 60, added: int = 60, readers: int = 2
) -> Outcome:
    """Queries run while an ingestion changes, adds and prunes documents; no query may fail, and each one must
    use only chunks of the index version it reports (see ``rag.answering.retrieval``'s docstring)."""
    from ingest.pipeline import IngestionPipeline
    from rag.answering.retrieval import Retriever
    from rag.indexing.embedding import Embedder
    from rag.indexing.manifest import Manifest
    from rag.settings import Settings

    work_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=work_dir / "data", ingest_batch_chunks=4, generator="extractive")
    embedder = embedder or Embedder(settings)
    corpus = work_dir / "corpus.jsonl"
    _jsonl(corpus, [_record(i, 1) for i in range(docs)])
    first = IngestionPipeline(settings, embedder=embedder, progress=False).run([corpus])
    chunk_sets = {first.index_version: Manifest.load(settings.manifest_dir, "documents").chunk_ids()}
    # version 2: the first `changed` documents edited, the last 10 pruned, `added` new ones
    _jsonl(corpus, [_record(i, 2 if i < changed else 1) for i in range(docs - 10)] + [
        _record(i, 2) for i in range(docs, docs + added)
    ])  # fmt: skip
    retriever = Retriever(settings, embedder=embedder)
    results: list[tuple[float, float, str | None, list[str], str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def read(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            question = f"How much does item number {rng.randrange(docs + added)} weigh?"
            mode = rng.choice(["hybrid", "dense"])
            began = time.monotonic()
            try:
                result = retriever.retrieve(question, 4, mode)  # type: ignore[arg-type]
                row = (began, time.monotonic(), result.index_version, [c.chunk_id for c in result.chunks], "")
            except Exception as exc:
                row = (began, time.monotonic(), None, [], f"{type(exc).__name__}: {exc}")
            with lock:
                results.append(row)

    threads = [threading.Thread(target=read, args=(seed,), daemon=True) for seed in range(readers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    ingest_started = time.monotonic()
    second = IngestionPipeline(settings, embedder=embedder, progress=False).run([corpus])
    ingest_ended = time.monotonic()
    chunk_sets[second.index_version] = Manifest.load(settings.manifest_dir, "documents").chunk_ids()
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join(30)

    errors = [r[4] for r in results if r[4]]
    foreign = [r for r in results if not r[4] and (r[2] not in chunk_sets or not set(r[3]) <= chunk_sets[r[2]])]
    during = [r for r in results if r[0] >= ingest_started and r[1] <= ingest_ended]
    versions = Counter(r[2] for r in results if not r[4])
    latest = [r for r in results if r[0] > ingest_ended]
    problems = []
    if errors:
        problems.append(f"{len(errors)} queries failed, e.g. {errors[0]}")
    if foreign:
        problems.append(f"{len(foreign)} answers used chunks outside the version they reported")
    if len(during) < 10:
        problems.append(f"only {len(during)} queries ran during the ingestion: the check proves little")
    if latest and any(r[2] != second.index_version for r in latest):
        problems.append("queries after the ingestion still reported the old version")
    detail = (
        f"{len(results)} queries ({len(during)} during a {ingest_ended - ingest_started:.1f}s ingestion that "
        f"updated {second.documents_updated}, added {second.documents_added}, pruned {second.documents_deleted}); "
        f"{len(errors)} errors; versions seen {dict(versions)}; answers outside their version: {len(foreign)}"
    )
    return Outcome.judged("ingestion concurrent with queries", detail, problems)


def sigkill_ingestion() -> Outcome:
    """The kill -9 scenario lives in tests/ingest/test_cli.py; run that test rather than a copy of it."""
    test = "tests/ingest/test_cli.py::test_sigkill_mid_ingest_then_resume_gives_exact_counts"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True, env=clean_env(), timeout=600,
    )  # fmt: skip
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    detail = f"{test}: {last} (resume leaves exact document and chunk counts, no duplicates, no orphans)"
    return Outcome("SIGKILL during ingestion, then resume", proc.returncode == 0, detail)


def _stdout_to(path: Path) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def redirect() -> Iterator[None]:
        with path.open("a") as log, contextlib.redirect_stdout(log):
            yield

    return redirect


def mlflow_down_eval(
    work_dir: Path, mlflow: Service, *, embedder: Any = None, chroma_url: str | None = None, questions: int = 12
) -> Outcome:
    """An evaluation logs to the MLflow server; with the server killed, the next one keeps every per-sample
    result locally and says so, and once the server is back the saved run is logged complete."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from eval.runner import EvalOptions
    from eval.tracking import PENDING, SAMPLES_CSV, log_pending
    from eval.workflow import run_eval
    from rag.settings import Settings

    settings = Settings(
        data_dir=work_dir / "eval-data", generator="extractive", mlflow_tracking_uri=mlflow.url, chroma_url=chroma_url
    )
    options = EvalOptions(
        dataset=SAMPLES / "qa" / "sample_qa.jsonl", corpus=SAMPLES / "corpus", limit=questions, judge="none",
        modes=["hybrid"], progress=False, experiment="reliability",
    )  # fmt: skip
    client = MlflowClient(tracking_uri=mlflow.url)
    problems = []
    work_dir.mkdir(parents=True, exist_ok=True)
    quiet = _stdout_to(work_dir / "eval-stdout.log")  # MLflow prints a "View run" line per run
    with quiet():
        first = run_eval(settings, options, embedder=embedder)
    if first.mlflow_error or not first.result.mlflow_run_id:
        problems.append(f"the eval did not reach the running MLflow server: {first.mlflow_error}")
    else:
        logged = client.get_run(first.result.mlflow_run_id)
        if not logged.data.metrics:
            problems.append("the logged run has no metrics")

    mlflow.kill()
    with quiet():
        down = run_eval(settings, options, embedder=embedder)
    local = pd.read_csv(down.run_dir / SAMPLES_CSV)
    if not down.mlflow_error or "Nothing is lost" not in down.mlflow_error:
        problems.append(f"MLflow down was not reported clearly: {down.mlflow_error!r}")
    if len(local) != questions or not (down.run_dir / PENDING).exists():
        pending = (down.run_dir / PENDING).exists()
        problems.append(f"local results incomplete: {len(local)} rows, pending marker: {pending}")

    mlflow.start().wait_ready(120)
    with quiet():
        outcomes = log_pending(settings)
    run_ids = [o["run_id"] for o in outcomes if "run_id" in o]
    if len(run_ids) != 1 or any("error" in o for o in outcomes):
        problems.append(f"logging the pending run failed: {outcomes}")
    else:
        run = client.get_run(run_ids[0])
        artifacts = {a.path for a in client.list_artifacts(run_ids[0])}
        if SAMPLES_CSV not in artifacts or not run.data.metrics:
            problems.append(f"the late-logged run is incomplete: artifacts {sorted(artifacts)}")
        else:
            remote = pd.read_csv(client.download_artifacts(run_ids[0], SAMPLES_CSV, str(work_dir)))
            if len(remote) != len(local):
                problems.append(f"{len(local)} local rows but {len(remote)} logged")
        if (down.run_dir / PENDING).exists():
            problems.append("the run is still marked pending after it was logged")
    detail = (
        f"eval with MLflow up logged run {first.result.mlflow_run_id}; with the server killed the eval kept "
        f"{len(local)}/{questions} per-sample rows in {down.run_dir.name} and said: "
        f"{(down.mlflow_error or '')[:90]}...; after restart `rag eval --log-pending` logged {run_ids}"
    )
    return Outcome.judged("MLflow server down during an eval", detail, problems)


# ------------------------------------------------------------------------------------------------ injection


def read_cases(path: Path) -> list[tuple[str, str]]:
    """``category<TAB>text`` lines; ``\\n``, ``\\t`` and ``\\uXXXX`` escapes; ``#`` comments."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        category, _, text = line.partition("\t")
        text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)
        cases.append((category, text.replace("\\n", "\n").replace("\\t", "\t")))
    return cases


@dataclass
class ScreeningResult:
    split: str
    attacks: int
    blocked: int
    benign: int
    false_positives: list[str]
    misses: list[str]
    block_by_category: dict[str, float]

    @property
    def block_rate(self) -> float:
        return self.blocked / self.attacks

    @property
    def false_positive_rate(self) -> float:
        return len(self.false_positives) / self.benign

    def line(self) -> str:
        categories = ", ".join(f"{c} {r:.0%}" for c, r in sorted(self.block_by_category.items()))
        return (
            f"{self.split}: block rate {self.block_rate:.1%} ({self.blocked}/{self.attacks}; {categories}), "
            f"false-positive rate {self.false_positive_rate:.1%} ({len(self.false_positives)}/{self.benign})"
        )


def screen(split: str, max_chars: int = 1000) -> ScreeningResult:
    """Run the question screening (``rag.answering.sanitize.sanitize_question``) over one split of the case files."""
    from rag.answering.sanitize import sanitize_question
    from rag.errors import UnsafeInputError

    def blocked(text: str) -> bool:
        try:
            sanitize_question(text, max_chars)
        except UnsafeInputError:
            return True
        return False

    attacks = read_cases(CASES / f"injection_attacks_{split}.txt")
    benign = read_cases(CASES / f"benign_lookalikes_{split}.txt")
    hits = [(category, blocked(text)) for category, text in attacks]
    by_category = {
        c: sum(b for cat, b in hits if cat == c) / sum(1 for cat, _ in hits if cat == c) for c, _ in hits
    }
    return ScreeningResult(
        split=split,
        attacks=len(attacks),
        blocked=sum(b for _, b in hits),
        benign=len(benign),
        false_positives=[text for _, text in benign if blocked(text)],
        misses=[text for (_, text), (_, b) in zip(attacks, hits, strict=True) if not b],
        block_by_category=by_category,
    )


# ------------------------------------------------------------------------------------------------ topology


def wait_for_job(
    client: httpx.Client, url: str, status_url: str, api_key: str, timeout_s: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(url + status_url, headers={"X-API-Key": api_key}, timeout=30).json()
        if job["state"] not in {"queued", "running"}:
            return job
        time.sleep(0.5)
    raise RuntimeError(f"ingestion job {status_url} did not finish within {timeout_s:.0f}s")


def scale_out(api_urls: Sequence[str], api_key: str, source: str) -> Outcome:
    """Ingest through the first API, then query through every one: all answer from the same index version."""
    with httpx.Client() as client:
        accepted = client.post(
            f"{api_urls[0]}/v1/ingest", json={"paths": [source]}, headers={"X-API-Key": api_key}, timeout=60
        )
        if accepted.status_code != 202:
            return Outcome("scale-out topology", False, f"ingest answered {accepted.status_code}: {accepted.text}")
        job = wait_for_job(client, api_urls[0], accepted.json()["status_url"], api_key)
        if job["state"] != "succeeded":
            return Outcome("scale-out topology", False, f"ingestion job failed: {job.get('error')}")
        version = job["summary"]["index_version"]
        seen = {}
        for url in api_urls:
            response = _ask(client, url)
            body = response.json()
            cited = [c["doc_id"] for c in body.get("citations", [])]
            seen[url] = (response.status_code, body.get("versions", {}).get("index"), "lighthouses.txt" in cited)
    ok = all(s == (200, version, True) for s in seen.values())
    detail = (
        f"ingested {job['summary']['documents_added']} documents through {api_urls[0]} (version {version}); "
        + "; ".join(f"{url}: HTTP {s[0]}, version {s[1]}, cites lighthouses.txt: {s[2]}" for url, s in seen.items())
    )
    return Outcome("scale-out topology (2 APIs, Chroma server, shared data dir)", ok, detail)


# ------------------------------------------------------------------------------------------------ the suite


API_KEY = "reliability-key"
TOPOLOGY_DOCS = ("lighthouses.txt", "science/volcanoes.txt", "history/telephone.html")  # small: quick to embed
LOAD_KEYS = [f"load-key-{i:02d}" for i in range(16)]


def suite_server_settings() -> dict[str, Any]:
    """The API under fuzz and load: SmolLM2 as the local model (same code path as the default model, fast
    enough for a bounded run), one generation slot and 3 queued: a capacity of 4 requests in flight."""
    from rag.answering.generation.backends import smollm2_path

    return {
        "generator": "local",
        "generator_model_path": smollm2_path(),
        "max_answer_tokens": 16,
        "context_chars": 400,
        "generator_context": 2048,
        "max_concurrent_generations": 1,
        "max_queued_requests": 3,
        "rate_limit_per_minute": 600,
        "api_keys": [API_KEY, *LOAD_KEYS],
        "log_questions": "hash",
    }


SUITE_CAPACITY_USERS = 4  # = max_concurrent_generations + max_queued_requests above
PARTS = ("fuzz-load", "faults", "injection")


class Report:
    def __init__(self) -> None:
        self.ok = True

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def check(self, ok: bool, text: str) -> None:
        self.ok &= ok
        print(f"  {'PASS' if ok else 'FAIL'}  {text}", flush=True)

    def info(self, text: str) -> None:
        print(f"        {text}", flush=True)


def _section(report: Report, title: str, body: Callable[[], None]) -> None:
    """Run one part of the suite; a part that cannot run is a failed check, and the rest still runs."""
    try:
        body()
    except Exception as exc:
        report.check(False, f"{title} could not run: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def running(*services: Service, timeout_s: float = 240) -> Iterator[None]:
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready(timeout_s)
        yield
    finally:
        for service in services:
            service.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--long", action="store_true", help="300 fuzz examples per operation and a 10-minute soak")
    parser.add_argument("--fuzz-examples", type=int, help="examples per operation (default 25, --long 300)")
    parser.add_argument("--load-seconds", type=int, default=30, help="length of the capacity and overload runs")
    parser.add_argument("--soak-seconds", type=int, help="length of the soak run (default 0, --long 600)")
    parser.add_argument("--work-dir", type=Path, help="keep servers' data and logs here (default: a temp dir)")
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only these parts (repeat the option; default: all)"
    )
    args = parser.parse_args(argv)
    parts = set(args.only or PARTS)
    fuzz_examples = args.fuzz_examples or (300 if args.long else 25)
    soak_seconds = args.soak_seconds if args.soak_seconds is not None else (600 if args.long else 0)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="rag-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    report = Report()
    print(f"rag reliability suite — work dir {work}", flush=True)

    from rag.indexing.embedding import Embedder
    from rag.settings import Settings

    embedder = Embedder(Settings(data_dir=work / "embedder"))

    def fuzz_and_load() -> None:
        data_dir = work / "api-data"
        ingest(data_dir, [write_sample_corpus(work / "corpus")], embedder=embedder)
        api = api_service(data_dir, logs, **suite_server_settings())
        with running(api):
            fuzz = run_fuzz(api.url, api_key=API_KEY, max_examples=fuzz_examples, report_dir=work / "fuzz")
            report.section(f"fuzzing (schemathesis, every check, {fuzz_examples} examples per operation)")
            report.check(fuzz.ok, fuzz.line())
            for failure in fuzz.failures:
                report.info(failure)
            report.section("load (locust against uvicorn on loopback)")
            capacity = run_load(
                api.url, mode="capacity", users=SUITE_CAPACITY_USERS, seconds=args.load_seconds,
                out_dir=work / "load", keys=LOAD_KEYS, pid=api.pid,
            )  # fmt: skip
            report.check(capacity.ok, f"at capacity: {capacity.line()}")
            overload = run_load(
                api.url, mode="overload", users=6 * SUITE_CAPACITY_USERS, seconds=args.load_seconds,
                out_dir=work / "load", wait_s=(0.0, 0.05), pid=api.pid,
            )  # fmt: skip
            report.check(overload.ok, f"overload: {overload.line()}")
            if soak_seconds:
                soak = run_load(
                    api.url, mode="capacity", users=SUITE_CAPACITY_USERS, seconds=soak_seconds,
                    out_dir=work / "soak", keys=LOAD_KEYS, pid=api.pid, sample_every_s=10,
                )  # fmt: skip
                report.check(soak.ok, f"soak: {soak.line()}")
                report.info(soak.memory_line())

    if "fuzz-load" in parts:
        _section(report, "fuzzing and load", fuzz_and_load)

    if "faults" in parts:
        report.section("faults")
        _section(report, "SIGKILL during ingestion", lambda: report.check(*_outcome(sigkill_ingestion())))
        _section(
            report,
            "ingestion concurrent with queries",
            lambda: report.check(*_outcome(concurrent_ingestion(work / "concurrent", embedder=embedder))),
        )
        _section(report, "topology faults", lambda: topology_faults(report, work, embedder))

    if "injection" in parts:
        report.section("prompt injection (rag.answering.sanitize screening; held-out cases never used for tuning)")
        for split in ("dev", "holdout"):
            result = screen(split)
            report.check(result.block_rate >= 0.75 and result.false_positive_rate <= 0.05, result.line())
            if split == "holdout":
                for miss in result.misses:
                    report.info(f"missed: {miss!r}")
                for text in result.false_positives:
                    report.info(f"false positive: {text!r}")

    print(f"\n{'ALL CHECKS PASSED' if report.ok else 'SOME CHECKS FAILED'} (logs and reports: {work})", flush=True)
    return 0 if report.ok else 1


def _outcome(outcome: Outcome) -> tuple[bool, str]:
    return outcome.ok, f"{outcome.name}: {outcome.detail}"


def topology_services(root: Path, logs: Path) -> tuple[Service, Service, list[Service]]:
    """Chroma server + MLflow server + two API processes sharing them and ``root/data`` (not started yet).

    The sample corpus is written under ``root/sources/corpus`` for ingestion through the API. Readiness needs an
    index, which is made through the API once they run, so the APIs are waited for on liveness.
    """
    sources = root / "sources"
    write_sample_corpus(sources / "corpus", only=TOPOLOGY_DOCS)
    chroma = chroma_service(root / "chroma", logs)
    mlflow = mlflow_service(root / "mlflow", logs)
    common = {
        "chroma_url": chroma.url,
        "mlflow_tracking_uri": mlflow.url,
        "generator": "extractive",
        "api_keys": [API_KEY],
        "ingest_roots": [sources],
    }
    apis = [api_service(root / "data", logs, name=f"api-{i}", **common) for i in (1, 2)]
    for service in apis:
        service.ready_path = "/healthz"
    return chroma, mlflow, apis


def topology_faults(report: Report, work: Path, embedder: Any) -> None:
    """Scale-out and outages on the shared topology (``topology_services``)."""
    root = work / "topology"
    chroma, mlflow, apis = topology_services(root, work / "logs")
    with running(chroma, mlflow, *apis):
        report.check(*_outcome(scale_out([a.url for a in apis], API_KEY, "corpus")))
        report.check(*_outcome(chroma_outage([a.url for a in apis], chroma)))
        report.check(*_outcome(mlflow_down_eval(root, mlflow, embedder=embedder, chroma_url=chroma.url)))


if __name__ == "__main__":
    sys.exit(main())
