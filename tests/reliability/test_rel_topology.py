"""The scale-out topology without Docker: `chroma run` and `mlflow server` on loopback, two API processes
sharing them and one data directory; ingestion through one API, queries through both; the Chroma server killed
mid-traffic and brought back; evaluations logged to the MLflow server, also across its outage."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.reliability import (
    API_KEY,
    Outcome,
    Service,
    chroma_outage,
    mlflow_down_eval,
    running,
    scale_out,
    topology_services,
)
from rag.indexing.embedding import Embedder


@dataclass
class Topology:
    chroma: Service
    mlflow: Service
    apis: list[Service]
    data_dir: Path
    ingested: Outcome

    @property
    def urls(self) -> list[str]:
        return [api.url for api in self.apis]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    root = tmp_path_factory.mktemp("topology")
    chroma, mlflow, apis = topology_services(root, root / "logs")
    with running(chroma, mlflow, *apis):
        ingested = scale_out([api.url for api in apis], API_KEY, "corpus")
        yield Topology(chroma, mlflow, apis, root / "data", ingested)


def test_ingest_through_one_api_query_through_both(topology: Topology) -> None:
    print(f"\n{topology.ingested.line()}")
    assert topology.ingested.ok, topology.ingested.detail
    assert not (topology.data_dir / "chroma").exists(), "chunks went to an embedded store, not the server"


def test_chroma_server_killed_mid_traffic_then_back(topology: Topology) -> None:
    """503 store_unavailable with Retry-After while Chroma is down; 200 again, by itself, once it is back."""
    outcome = chroma_outage(topology.urls, topology.chroma)
    print(f"\n{outcome.line()}")
    assert outcome.ok, outcome.detail


def test_eval_logs_to_the_mlflow_server_and_survives_its_outage(
    topology: Topology, embedder: Embedder, tmp_path: Path
) -> None:
    """An eval logs to the MLflow server; with the server killed the next one keeps its per-sample results
    locally and says how to log them; after the restart `--log-pending` logs the complete run."""
    outcome = mlflow_down_eval(
        tmp_path, topology.mlflow, embedder=embedder, chroma_url=topology.chroma.url, questions=8
    )
    print(f"\n{outcome.line()}")
    assert outcome.ok, outcome.detail
