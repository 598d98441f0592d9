"""A service that is down when a task starts: the attempt fails naming the endpoint, and a retry completes.

The training DAG's operators run one attempt at a time as Airflow runs them: a fresh operator per
attempt (a retry is a new process), Connections from ``AIRFLOW_CONN_*``. The source and the
registry are PostgreSQL databases and the artifact store a bucket on moto's S3 server over HTTP,
each behind a :class:`servers.TcpProxy` that the test takes down just before an attempt and brings
back once it has failed. Every failed attempt must raise an error Airflow retries (not
``AirflowFailException``) whose message names the endpoint; the attempt after it must succeed, and
the run must end with one version, one champion change and one model copy.

Airflow's side of a retry (the delay with backoff, the next attempt on a worker) is exercised for
real by tests/integration/test_stack.py, where a Celery worker dies mid-task; here the failed
attempts are the point, and the scheduler would only add its 30 s+ delay to each.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from conftest import make_s3_client, s3_connection_uri
from servers import TcpProxy
from test_training import PIPELINE, RUN_ID, execute, make_context, promote_operator
from unit.conftest import new_pg_database

from mlpipe.demo import write_flights_postgres
from mlpipe.operators.training import (
    CandidatesEvaluateOperator,
    CandidateTrainOperator,
    FeaturesBuildOperator,
    SnapshotExtractOperator,
    SnapshotValidateOperator,
)
from mlpipe.registry import Registry
from mlpipe.storage import S3Store

SAMPLE_ROWS = 13_000  # the suite wants >= 10,000 rows before the run's as-of time (December is out)


class Services:
    """The run's three backends, each behind a proxy the test can take down."""

    def __init__(self, *, source: TcpProxy, registry: TcpProxy, s3: TcpProxy, registry_url: str, store: S3Store):
        self.source, self.registry, self.s3 = source, registry, s3
        self.registry_url = registry_url
        self.store = store  # straight to moto, not through the proxy


def _through(proxy: TcpProxy, url: str) -> str:
    """An ``AIRFLOW_CONN_*`` URI for the database of ``url``, reached through ``proxy``."""
    database = sa.make_url(url).database
    return f"postgresql://postgres@{proxy.address}/{database}"


@pytest.fixture
def services(s3_endpoint: str, flights_frame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    with new_pg_database("mlpipe_outage_source") as source_url, new_pg_database("mlpipe_outage_registry") as reg_url:
        engine = sa.create_engine(source_url)
        write_flights_postgres(engine, flights_frame.sample(n=SAMPLE_ROWS, random_state=11))
        engine.dispose()
        client = make_s3_client(s3_endpoint)
        bucket = f"outage-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        host, port = s3_endpoint.removeprefix("http://").split(":")
        proxies = [TcpProxy(("127.0.0.1", 5432)), TcpProxy(("127.0.0.1", 5432)), TcpProxy((host, int(port)))]
        source, registry, s3 = proxies
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_SOURCE", _through(source, source_url))
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_REGISTRY", _through(registry, reg_url))
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_STORE", s3_connection_uri(f"http://{s3.address}", bucket=bucket, prefix="artifacts")
        )
        monkeypatch.setenv("MLPIPE_HOME", str(tmp_path / "mlpipe"))
        store = S3Store(bucket, "artifacts", client)
        try:
            yield Services(source=source, registry=registry, s3=s3, registry_url=reg_url, store=store)
        finally:
            for proxy in proxies:
                proxy.close()
            store.delete_prefix(PIPELINE)
            client.delete_bucket(Bucket=bucket)


def failed_attempt(proxy: TcpProxy, make_op: Callable[[], BaseOperator], context: dict[str, Any]) -> str:
    """One attempt of a fresh operator while ``proxy``'s service is down; the error's message."""
    proxy.down()
    try:
        with pytest.raises(Exception) as caught:
            execute(make_op(), context)
    finally:
        proxy.up()
    assert not isinstance(caught.value, AirflowFailException), "Airflow must retry an unreachable service"
    return str(caught.value)


def test_each_service_down_at_a_task_start_fails_that_attempt_only(services: Services) -> None:
    context = make_context()
    source_at = f'"127.0.0.1", port {services.source.port}'
    registry_at = f'"127.0.0.1", port {services.registry.port}'
    s3_at = f"endpoint http://{services.s3.address}"

    def extract() -> BaseOperator:
        return SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE)

    assert source_at in failed_attempt(services.source, extract, context)
    snapshot = execute(extract(), context)
    assert snapshot["reused"] is False and snapshot["rows"] >= 10_000

    def validate() -> BaseOperator:
        return SnapshotValidateOperator(task_id="validate_snapshot", pipeline=PIPELINE, snapshot=snapshot)

    message = failed_attempt(services.s3, validate, context)
    assert s3_at in message and "unreachable" in message
    validation = execute(validate(), context)
    features = execute(FeaturesBuildOperator(task_id="build_features", pipeline=PIPELINE, snapshot=snapshot), context)
    trained = [
        execute(
            CandidateTrainOperator(
                task_id="train", pipeline=PIPELINE, candidate=c, features=features, validation=validation
            ),
            context,
        )
        for c in ("logreg", "hgb")
    ]

    def evaluate() -> BaseOperator:
        return CandidatesEvaluateOperator(
            task_id="evaluate_candidates", pipeline=PIPELINE, features=features, trained=trained
        )

    assert registry_at in failed_attempt(services.registry, evaluate, context)
    verdict = execute(evaluate(), context)
    assert verdict["blessed"], verdict["reasons"]

    def promote() -> BaseOperator:
        return promote_operator(verdict, trained, snapshot, features)

    assert s3_at in failed_attempt(services.s3, promote, context)
    assert registry_at in failed_attempt(services.registry, promote, context)
    result = execute(promote(), context)
    assert (result["action"], result["version"]) == ("first", 1)
    assert execute(promote(), context)["action"] == "already_done"  # a retry after a lost report

    registry = Registry.from_url(services.registry_url, create=False)
    versions, history = registry.list_versions(PIPELINE), registry.champion_history(PIPELINE)
    registry.dispose()
    assert [(v.version, v.run_id) for v in versions] == [(1, RUN_ID)]
    assert [(e.seq, e.version, e.action) for e in history] == [(1, 1, "first")]
    store = services.store
    assert store.list(f"{PIPELINE}/models") == [versions[0].artifact_key]
    assert store.sha256(versions[0].artifact_key) == versions[0].artifact_sha256
