"""Operators, sensor and trigger on an S3 source: ``execute(context)`` with a real Airflow AWS Connection to
moto's server over HTTP, the trigger's ``run()`` on an event loop as the triggerer drives it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from conftest import put_daily_flights, s3_connection_uri

from mlpipe.errors import SourceUnavailableError
from mlpipe.operators.training import SnapshotExtractOperator, SnapshotValidateOperator
from mlpipe.operators.watch import NewDataPublishOperator
from mlpipe.registry import Registry
from mlpipe.sensors.new_data import NewDataSensor
from mlpipe.triggers.new_data import NewObjectsTrigger

PIPELINE = "flights_delay_s3"
PREFIX = "sources/flights/"


def make_context(run_id: str = "manual__s3", as_of: datetime = datetime(2013, 1, 21, tzinfo=UTC)) -> dict[str, Any]:
    dag_run = SimpleNamespace(
        dag_id=f"{PIPELINE}_train", run_id=run_id, run_type="manual", logical_date=as_of, run_after=as_of, conf={}
    )
    return {
        "run_id": run_id,
        "dag_run": dag_run,
        "logical_date": as_of,
        "params": {},
        "triggering_asset_events": {},
        "outlet_events": defaultdict(lambda: SimpleNamespace(extra=None)),
    }


@pytest.fixture
def s3_pipeline(
    s3_demo_include: Path, mlpipe_home: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, bucket: str
):
    """The documented S3 variant of the demo spec, on a fresh bucket, read through the Connection mlpipe_s3."""
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_S3", s3_connection_uri(s3_endpoint))
    return SimpleNamespace(bucket=bucket, home=mlpipe_home)


def january(flights_frame: pd.DataFrame, end: str = "2013-01-21") -> pd.DataFrame:
    return flights_frame[flights_frame["time_hour"] < end]


class TestSnapshotExtractOperator:
    def test_extracts_the_run_s_objects_and_the_demo_suite_passes(
        self, s3_pipeline, s3_client, flights_frame: pd.DataFrame
    ) -> None:
        keys = put_daily_flights(s3_client, s3_pipeline.bucket, january(flights_frame))
        context = make_context()

        snap = SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE).execute(context)
        report = SnapshotValidateOperator(task_id="validate_snapshot", pipeline=PIPELINE, snapshot=snap).execute(
            context
        )

        assert snap["rows"] == len(january(flights_frame)) and snap["as_of"] == "2013-01-21T00:00:00"
        manifest = json.loads((s3_pipeline.home / "artifacts" / snap["key"].replace(".parquet", ".json")).read_text())
        assert [o["key"] for o in manifest["source"]["objects"]] == keys
        # The same suite as the SQL demo: same columns, same types, is_late derived the same way.
        assert report["success"] is True

    def test_a_malformed_object_fails_at_once_naming_it(self, s3_pipeline, s3_client, flights_frame) -> None:
        put_daily_flights(s3_client, s3_pipeline.bucket, january(flights_frame, "2013-01-04"))
        bad = f"{PREFIX}date=2013-01-02/flights.parquet"
        s3_client.put_object(Bucket=s3_pipeline.bucket, Key=bad, Body=b"not parquet at all")

        with pytest.raises(AirflowFailException, match=rf"ExtractError: s3://{s3_pipeline.bucket}/{bad} is not"):
            SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE).execute(make_context())

        assert not list((s3_pipeline.home / "artifacts").rglob("snapshot.*"))

    def test_an_unreachable_endpoint_is_left_to_airflow_s_retries(
        self, s3_pipeline, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_S3", s3_connection_uri(dead))

        with pytest.raises(SourceUnavailableError, match=f"the S3 endpoint {dead} is unreachable"):
            SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE).execute(make_context())


class TestNewDataWatch:
    def test_poke_then_publish_moves_the_watermark_by_objects(self, s3_pipeline, s3_client, flights_frame) -> None:
        keys = put_daily_flights(s3_client, s3_pipeline.bucket, january(flights_frame, "2013-01-04"))
        sensor = NewDataSensor(task_id="wait_for_new_data", pipeline=PIPELINE, deferrable=False)

        poked = sensor.poke(make_context())
        assert poked.is_done and poked.xcom_value["objects"] == 3
        asset = Asset(name=f"{PIPELINE}.new_data", uri=f"x-mlpipe://{PIPELINE}/new_data")
        context = make_context(run_id="scheduled__watch")
        publish = NewDataPublishOperator(
            task_id="publish_new_data", pipeline=PIPELINE, found=poked.xcom_value, outlets=[asset]
        )
        extra = publish.execute(context)
        publish.registry.dispose()

        assert context["outlet_events"][asset].extra == extra
        assert extra["objects"] == 3 and "rows" not in extra
        assert extra["newest_object"] == f"s3://{s3_pipeline.bucket}/{keys[-1]}"
        registry = Registry.from_url(f"sqlite:///{s3_pipeline.home / 'registry.db'}")
        try:
            value, at_value, seen = registry.watermark(PIPELINE)
        finally:
            registry.dispose()
        # The keys at the watermark's instant live in its value: no row count at the value.
        assert seen == 3 and at_value is None and keys[-1] in json.loads(value)["keys"]
        # Announced: the next check finds nothing new.
        assert sensor.poke(make_context()).is_done is False

    def test_deferred_trigger_resolves_the_connection_itself(
        self, s3_pipeline, s3_client, flights_frame, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sensor = NewDataSensor(task_id="wait_for_new_data", pipeline=PIPELINE, deferrable=True, poke_interval=5)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(make_context())  # nothing under the prefix yet: wait in the triggerer
        trigger = deferred.value.trigger
        assert isinstance(trigger, NewObjectsTrigger)
        classpath, kwargs = trigger.serialize()
        assert classpath == "mlpipe.triggers.new_data.NewObjectsTrigger"
        assert kwargs["source"]["connection_id"] == "mlpipe_s3" and "testing" not in json.dumps(kwargs)
        put_daily_flights(s3_client, s3_pipeline.bucket, january(flights_frame, "2013-01-03"))

        event = asyncio.run(anext(NewObjectsTrigger(**kwargs).run()))

        assert event.payload["status"] == "found" and event.payload["objects"] == 2
        done = sensor.execute_complete(make_context(), event.payload)
        assert done["objects"] == 2 and done["watermark_from"] is None
