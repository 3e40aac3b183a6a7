"""Fixtures for the shared ML modules: the vendored German Credit table, an isolated MLflow store and
query logs built from real all-MiniLM-L6-v2 embeddings of questions on two unrelated topics."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rag.hashing import sha256_text
from rag.indexing.embedding import Embedder
from rag.ml.query_log import QueryLogRecord
from rag.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[3]
GERMAN_CSV = REPO_ROOT / "samples" / "german_credit" / "german.csv"

COOKING: dict[str, list[str]] = {
    "t": [
        "How long should I {v} {f} at {n} degrees?",
        "What can I use instead of {i} in {d}?",
        "Why did my {d} turn out {p}?",
        "How do I keep {f} fresh for {w}?",
        "Is it safe to {v} frozen {f} without thawing it first?",
        "What spices go well with {f} in a {d}?",
    ],
    "v": ["bake", "roast", "grill", "steam", "fry", "braise"],
    "f": ["chicken thighs", "salmon", "potatoes", "carrots", "pork shoulder", "tofu", "broccoli", "mushrooms"],
    "n": ["160", "180", "200", "220"],
    "i": ["butter", "eggs", "buttermilk", "heavy cream", "baking soda", "yeast"],
    "d": ["banana bread", "pancakes", "lasagna", "risotto", "sourdough loaf", "curry", "stew"],
    "p": ["too dry", "gummy", "flat", "burnt on the bottom", "bland", "soggy"],
    "w": ["a week", "two days", "a month"],
}
NETWORKING: dict[str, list[str]] = {
    "t": [
        "How do I configure {proto} on a {dev}?",
        "Why does my {dev} drop the {proto} connection every {w}?",
        "What port does {svc} use by default?",
        "How can I debug {prob} between a {dev} and a {dev2}?",
        "How do I read the {svc} logs on a {dev}?",
    ],
    "proto": ["OSPF", "BGP", "IPv6", "VLAN tagging", "WPA3", "DHCP relay", "IPsec"],
    "dev": ["Cisco router", "Linux firewall", "managed switch", "Wi-Fi access point", "load balancer"],
    "dev2": ["DNS server", "VPN gateway", "NAS", "proxy"],
    "svc": ["SSH", "PostgreSQL", "SMTP", "LDAP", "NTP"],
    "prob": ["packet loss", "high latency", "MTU mismatches", "TLS handshake failures"],
    "w": ["few minutes", "hour", "night"],
}
# A small "corpus" about cooking: the top-1 retrieval score of a question is its best cosine similarity here.
COOKING_CORPUS = [
    "Roast root vegetables such as carrots and potatoes at 200 degrees for about 40 minutes.",
    "Buttermilk can be replaced by milk with a spoon of lemon juice left to stand for ten minutes.",
    "Bread turns out flat when the yeast is old or the dough proofed too long.",
    "Store cooked stew in the fridge for up to three days or freeze it for a month.",
    "Chicken thighs are done when the inside reaches 75 degrees.",
    "Risotto becomes gummy when the rice is stirred too long after it is cooked.",
    "Cumin, coriander and turmeric are the base of many curries.",
    "Thaw frozen salmon in the fridge overnight before grilling it.",
]
MIN_RELEVANCE = Settings.model_fields["min_relevance"].default  # the product's own threshold for its default embedder
START = datetime(2025, 3, 1, tzinfo=UTC)


def questions(spec: dict[str, list[str]], n: int, seed: int) -> list[str]:
    """``n`` distinct questions filled from a template grammar, in a seeded order."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        template = rng.choice(spec["t"])
        out.add(template.format(**{k: rng.choice(v) for k, v in spec.items() if k != "t"}))
    ordered = sorted(out)
    rng.shuffle(ordered)
    return ordered


def query_records(
    texts: list[str], vectors: np.ndarray, corpus: np.ndarray, *, start: datetime, model: str = "all-MiniLM-L6-v2"
) -> list[dict[str, Any]]:
    """Query-log lines in the API's record format (``QueryLogRecord``); top score = best cosine to the corpus."""
    lines = []
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        top = float(np.max(corpus @ vector))
        record = QueryLogRecord(
            ts=start + timedelta(minutes=i),
            request_id=f"r{i}",
            question_hash=sha256_text(text),
            question_chars=len(text),
            mode="hybrid",
            top_score=top,
            abstained=top < MIN_RELEVANCE,
            confidence=max(0.0, top),
            latency_ms={"retrieval": 5.0, "generation": 800.0, "total": 805.0},  # type: ignore[arg-type]
            versions={"index": "idx1", "embedding_model": model, "generator": "g", "prompt": "p1"},  # type: ignore[arg-type]
            query_embedding=[round(float(x), 6) for x in vector],
        )
        lines.append(record.model_dump(mode="json"))
    return lines


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def german() -> pd.DataFrame:
    return pd.read_csv(GERMAN_CSV)


@pytest.fixture(scope="session")
def german_csv() -> Path:
    return GERMAN_CSV


@pytest.fixture(scope="session")
def topic_embeddings(embedder: Embedder) -> dict[str, Any]:
    """Real embeddings: 300 cooking questions, 100 networking questions and the cooking corpus."""
    cooking = questions(COOKING, 300, seed=1)
    networking = questions(NETWORKING, 100, seed=2)
    return {
        "cooking": (cooking, embedder.embed(cooking)),
        "networking": (networking, embedder.embed(networking)),
        "corpus": embedder.embed(COOKING_CORPUS),
    }


@pytest.fixture
def ml_settings(tmp_path: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path / "data")
        return Settings(**overrides)

    return factory


@pytest.fixture(scope="session")
def query_logs(topic_embeddings: dict[str, Any]) -> dict[str, Any]:
    """Query-log lines: 300 cooking questions from ``start``, then 100 networking questions."""
    cooking_text, cooking_vec = topic_embeddings["cooking"]
    net_text, net_vec = topic_embeddings["networking"]
    corpus = topic_embeddings["corpus"]
    cooking = query_records(cooking_text, cooking_vec, corpus, start=START)
    networking = query_records(net_text, net_vec, corpus, start=START + timedelta(minutes=len(cooking)))
    return {"cooking": cooking, "networking": networking, "start": START}


@pytest.fixture(scope="session")
def jsonl_writer() -> Callable[[Path, list[dict[str, Any]]], Path]:
    return write_jsonl
