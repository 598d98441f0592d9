"""``flights_delay_watch`` under ``dag.test()``: new rows announce once, a trickle or nothing announces nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagruns import REPO, asset_events, load_dag, open_registry, state, task_states

pytestmark = pytest.mark.slow


def append_flights(db: Path, frame) -> None:
    from mlpipe.demo import append_flights_sqlite

    append_flights_sqlite(db, frame)  # with the weather observed up to them


@pytest.fixture
def watch_env(airflow_db, mlpipe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flights_frame):
    """The first half of January in the source; a spec whose watch gives up after 10 s."""
    from mlpipe.demo import write_flights_sqlite

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / "flights_delay.yaml"
    text = spec.read_text()
    for old, new in (("poke_interval: 60", "poke_interval: 5"), ("timeout: 1500", "timeout: 10")):
        assert old in text
        text = text.replace(old, new)
    spec.write_text(text)
    monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    ordered = flights_frame.sort_values(["time_hour", "id"]).reset_index(drop=True)
    first = ordered[ordered["time_hour"] < "2013-01-16"]
    write_flights_sqlite(mlpipe_home / "source.db", first)
    return {"frame": ordered, "first_rows": len(first), "db": mlpipe_home / "source.db", "spec": spec}


def new_data(run_id: str | None = None) -> list[dict]:
    return asset_events("flights_delay.new_data", run_id)


def watermark() -> tuple:
    return tuple(open_registry().watermark("flights_delay"))


def test_new_rows_announce_once_and_a_trickle_waits(watch_env) -> None:
    """The poke fallback (rescheduled pokes) for executors without a triggerer."""
    spec = watch_env["spec"]
    spec.write_text(spec.read_text().replace("deferrable: true", "deferrable: false"))
    frame = watch_env["frame"]
    dag = load_dag("flights_delay_watch")
    assert dag.get_task("wait_for_new_data").deferrable is False

    first = dag.test()
    assert state(first) == "success"
    events = new_data(first.run_id)
    assert len(events) == 1
    assert events[0]["rows"] == watch_env["first_rows"]
    assert '"2013-01-15 ' in events[0]["watermark"] and events[0]["previous_watermark"] is None
    value, at_value, seen = watermark()
    assert value.startswith("2013-01-15 ") and seen == watch_env["first_rows"]
    assert at_value == (frame["time_hour"] == value).sum() > 1, "the newest hour's flights are all counted"

    # Nothing new: the sensor gives up (soft fail), no event, the watermark stays.
    idle = dag.test()
    assert task_states(idle) == {"wait_for_new_data": "skipped", "publish_new_data": "skipped"}
    assert new_data(idle.run_id) == []
    assert watermark() == (value, at_value, seen)

    # A trickle below min_new_rows (500) is not enough either.
    later = frame[frame["time_hour"] >= "2013-01-16"]
    append_flights(watch_env["db"], later.head(100))
    trickle = dag.test()
    assert new_data(trickle.run_id) == [] and watermark() == (value, at_value, seen)

    # A day's flights are, with two flights that arrive late carrying the watermark's own hour:
    # one event covering the trickle and the late ones too; the watermark moves past them.
    day = later[later["time_hour"] < "2013-01-17"]
    late = frame[frame["time_hour"] == value].head(2).assign(id=lambda f: f["id"] + 1_000_000)
    append_flights(watch_env["db"], day.iloc[100:])
    append_flights(watch_env["db"], late)
    batch = dag.test()
    (event,) = new_data(batch.run_id)
    assert event["rows"] == len(day) + len(late)
    assert event["previous_watermark"] == events[0]["watermark"]
    assert event["previous_rows_at_watermark"] == at_value
    assert '"2013-01-16 ' in event["watermark"]
    assert watermark()[2] == watch_env["first_rows"] + len(day) + len(late)
    assert len(new_data()) == 2


def test_deferrable_watch_waits_in_the_trigger(watch_env) -> None:
    dag = load_dag("flights_delay_watch")
    assert dag.get_task("wait_for_new_data").deferrable is True
    run = dag.test()
    assert state(run) == "success"
    (event,) = new_data(run.run_id)
    assert event["rows"] == watch_env["first_rows"]
    # Now nothing is new: the trigger polls until the timeout and the run announces nothing.
    idle = dag.test()
    assert task_states(idle)["publish_new_data"] == "skipped"
    assert new_data(idle.run_id) == []
