"""``flights_delay_monitor`` under ``dag.test()``: a drifted week announces drift once, with its figures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dagruns import REPO, asset_events, load_dag, open_registry, state, task_states

pytestmark = pytest.mark.slow


def drift_events(run_id: str) -> list[dict]:
    return asset_events("flights_delay.drift", run_id)


@pytest.fixture
def champion_home(airflow_db, mlpipe_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flights_frame):
    """A champion trained on January-February; performance tolerance wide, so drift alone decides."""
    from mlpipe.demo import write_flights_sqlite

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / "flights_delay.yaml"
    spec.write_text(spec.read_text().replace("performance_tolerance: 0.03", "performance_tolerance: 0.5"))
    monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    ordered = flights_frame.sort_values(["time_hour", "id"]).reset_index(drop=True)
    write_flights_sqlite(mlpipe_home / "source.db", ordered[ordered["time_hour"] < "2013-03-01"])
    run = load_dag("flights_delay_train").test()
    assert state(run) == "success"
    assert open_registry().champion("flights_delay").version == 1
    return {"home": mlpipe_home, "frame": ordered, "spec": spec}


def append(db: Path, frame) -> None:
    from mlpipe.demo import append_flights_sqlite

    append_flights_sqlite(db, frame)  # with the weather observed up to them


def test_monitor_announces_a_drifted_week_once(champion_home) -> None:
    dag = load_dag("flights_delay_monitor")

    quiet = dag.test()
    assert task_states(quiet) == {"check_drift": "success", "announce_drift": "skipped"}
    assert drift_events(quiet.run_id) == []
    (first,) = open_registry().drift_checks("flights_delay")
    assert first["verdict"] in {"ok", "warn"} and first["breach"] is False and first["emitted"] is False

    # A week of March flights, all out of JFK and three times as far: the world moved.
    frame = champion_home["frame"]
    week = frame[(frame["time_hour"] >= "2013-03-01") & (frame["time_hour"] < "2013-03-08")].copy()
    week["origin"] = "JFK"
    week["distance"] = week["distance"] * 3
    append(champion_home["home"] / "source.db", week)

    drifted = dag.test()
    assert task_states(drifted) == {"check_drift": "success", "announce_drift": "success"}
    (event,) = drift_events(drifted.run_id)
    assert event["verdict"] == "drift" and event["champion_version"] == 1
    assert event["window_end"].startswith("2013-03-07") and event["window_rows"] >= len(week)
    checks = open_registry().drift_checks("flights_delay")
    figures = checks[-1]["figures"]["drift"]
    by_name = {f["feature"]: f for f in figures["features"]}
    assert by_name["distance"]["status"] == "act" and by_name["distance"]["psi"] > 0.2
    assert by_name["origin"]["status"] == "act" and by_name["origin"]["js"] > 0.1
    report = Path(event["report_uri"].removeprefix("file://"))
    assert report.is_file() and "distance" in report.read_text()
    assert list(report.parent.glob("*.png")), "the drift report has its distribution plots"

    again = dag.test()
    assert task_states(again)["announce_drift"] == "skipped"
    assert drift_events(again.run_id) == []
    same_window = [
        c for c in open_registry().drift_checks("flights_delay") if c["window_end"] == checks[-1]["window_end"]
    ]
    assert len(same_window) == 2 and [c["emitted"] for c in same_window] == [True, False]


def test_too_small_a_window_draws_no_verdict(champion_home) -> None:
    spec = champion_home["spec"]
    spec.write_text(spec.read_text().replace("window_days: 7", "window_days: 0.01"))
    run = load_dag("flights_delay_monitor").test()
    assert task_states(run)["announce_drift"] == "skipped"
    (check,) = open_registry().drift_checks("flights_delay")
    assert check["verdict"] == "insufficient_data" and check["breach"] is False
    assert json.dumps(check["figures"])  # stored figures are plain JSON
