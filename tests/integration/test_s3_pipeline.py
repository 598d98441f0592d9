"""The S3 variant of the demo under ``dag.test()``: daily Parquet objects on moto's server over HTTP, read through
an Airflow AWS Connection by the watch (deferred: its trigger runs inline), the training and the monitor DAGs.

The Connection is kept in Airflow's metadata database, not in the environment, so tasks and the
trigger can only get it the way a deployment's workers and triggerer do: through the supervisor
and the execution API, by its id.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import put_daily_flights
from dagruns import asset_events, load_dag, open_registry, state, task_states

pytestmark = pytest.mark.slow

PIPELINE = "flights_delay_s3"


@pytest.fixture
def s3_connection(airflow_db, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch):
    """The AWS Connection ``mlpipe_s3`` in the metadata database (and not in the environment)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_MLPIPE_S3", raising=False)
    extra = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "mlpipe_s3").delete()
        session.add(
            Connection(
                conn_id="mlpipe_s3", conn_type="aws", login="testing", password="testing", extra=json.dumps(extra)
            )
        )
    yield "mlpipe_s3"
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "mlpipe_s3").delete()


@pytest.fixture
def s3_demo(s3_connection, s3_demo_include: Path, mlpipe_home: Path, bucket: str):
    """docs/examples/flights_delay_s3.yaml installed in a copy of include/, on a fresh bucket."""
    return {"bucket": bucket, "home": mlpipe_home}


def test_watch_train_and_monitor_an_s3_source(s3_demo, s3_client, flights_frame) -> None:
    bucket = s3_demo["bucket"]
    first = flights_frame[flights_frame["time_hour"] < "2013-01-25"]
    keys = put_daily_flights(s3_client, bucket, first)
    watch = load_dag(f"{PIPELINE}_watch")
    assert watch.get_task("wait_for_new_data").deferrable is True

    # Every object is new at first: one event with their count, then nothing while nothing arrives.
    announced = watch.test()
    assert state(announced) == "success"
    (event,) = asset_events(f"{PIPELINE}.new_data", announced.run_id)
    assert event["objects"] == len(keys) == 24
    assert event["newest_object"] == f"s3://{bucket}/{keys[-1]}"
    idle = watch.test()
    assert task_states(idle) == {"wait_for_new_data": "skipped", "publish_new_data": "skipped"}

    # Training reads the run's objects (listed in the snapshot's manifest) and passes the demo's suite.
    trained = load_dag(f"{PIPELINE}_train").test()
    assert state(trained) == "success", task_states(trained)
    champion = open_registry().champion(PIPELINE)
    assert champion is not None and champion.version == 1
    snapshot = champion.lineage["snapshot"]
    assert snapshot["rows"] == len(first)
    manifest = json.loads(Path(snapshot["uri"].removeprefix("file://")).with_name("snapshot.json").read_text())
    assert [o["key"] for o in manifest["source"]["objects"]] == keys

    # The monitor's window: the newest 7 daily objects, by their partition date.
    monitored = load_dag(f"{PIPELINE}_monitor").test()
    assert task_states(monitored)["check_drift"] == "success"
    (check,) = open_registry().drift_checks(PIPELINE)
    assert (check["window_start"], check["window_end"]) == ("2013-01-18 00:00:00", "2013-01-25 00:00:00")
    # A week of weather against the 17 days the champion saw may drift (the readings are most of the
    # features now); what this checks is that the monitor judged the S3 window at all.
    assert check["verdict"] in {"ok", "warn", "drift"}, check

    # A new day arrives: one object announced, the watermark moves past it.
    (day,) = put_daily_flights(
        s3_client, bucket, flights_frame[flights_frame["time_hour"].str.startswith("2013-01-25")]
    )
    later = watch.test()
    (event,) = asset_events(f"{PIPELINE}.new_data", later.run_id)
    assert event["objects"] == 1 and event["newest_object"] == f"s3://{bucket}/{day}"
