"""End to end: validation against the champion's training snapshot under ``dag.test()``.

A champion (v1) is trained on the demo's seed (January-February 2013). Then the issue's four
corruptions of the source, each keeping the schema (the GX suite passes them), must stop the next
run at ``validate_snapshot`` with the reference check that names them, no retry and v1 still the
champion; while the demo's seasonal drift (``demo feed``: the months that follow) passes validation
and is judged by the gate. The spec is the demo's with one cheap candidate: the checks look at data.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagruns import REPO, load_dag, open_registry, state, task_states

from mlpipe.demo import WEATHER_FEATURES
from mlpipe.storage import LocalStore, run_key
from mlpipe.summary import render_summary

DAG_ID = "flights_delay_train"
pytestmark = pytest.mark.slow
FIRST = datetime(2026, 3, 1, tzinfo=UTC)
COLUMNS = (
    "year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, "
    "flight, tailnum, origin, dest, air_time, distance, hour, minute, time_hour, epoch_hour"
)

# case: (the SQL that corrupts the source, the failed check and column, words of its line)
CORRUPTIONS: dict[str, tuple[str, tuple[str, str | None], list[str]]] = {
    "label_leaks_into_dest": (
        "UPDATE flights SET dest = 'UNK' WHERE arr_delay IS NULL",
        ("leakage", "dest"),
        ["leakage in 'dest': dest = UNK", "100.00 %", "reference: absent or rare"],
    ),
    "null_target_30_percent": (
        "UPDATE flights SET arr_delay = NULL WHERE id % 10 < 3",
        ("target_shift", "is_late"),
        ["target 'is_late': share of class", "limit 0.1)"],
    ),
    "unknown_codes_10_percent": (
        "UPDATE flights SET dest = 'QQQ' WHERE id % 10 = 1; UPDATE flights SET carrier = 'Q9' WHERE id % 10 = 2",
        ("unseen_categories", "carrier"),
        ["unseen categories in 'carrier'", "limit 2.00 %", "Q9"],
    ),
    "duplicated_flights_under_new_ids": (
        f"INSERT INTO flights (id, {COLUMNS}) SELECT id + 1000000, {COLUMNS} FROM flights WHERE id % 5 = 0",
        ("duplicates", None),
        ["duplicates: 16.", "key columns ['id']", "limit +2.00 %"],
    ),
}


@pytest.fixture(scope="module")
def champion_home(airflow_db, tmp_path_factory, flights_frame):
    """The demo's seed as the source, a cheap spec, and v1 trained on it."""
    import os

    from mlpipe.demo import seed_flights, write_flights_sqlite

    home = tmp_path_factory.mktemp("reference-home")
    include = tmp_path_factory.mktemp("reference-include") / "include"
    shutil.copytree(REPO / "include", include)
    spec_path = include / "pipelines" / "flights_delay.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["candidates"] = [{"name": "logreg", "estimator": "sklearn.linear_model.LogisticRegression"}]
    spec_path.write_text(yaml.safe_dump(spec))
    saved = {k: os.environ.get(k) for k in ("MLPIPE_HOME", "MLPIPE_INCLUDE")}
    os.environ.update(MLPIPE_HOME=str(home), MLPIPE_INCLUDE=str(include))
    # What `demo seed` makes: the whole year shipped, January-February in the source.
    write_flights_sqlite(home / "flights-2013.db", flights_frame.sort_values(["time_hour", "id"]))
    seed_flights(home)
    shutil.copyfile(home / "source.db", home / "seed.db")
    dag = load_dag(DAG_ID)
    first = dag.test(logical_date=FIRST)
    assert state(first) == "success", task_states(first)
    assert open_registry().champion("flights_delay").version == 1
    yield {"home": home, "dag": dag, "first": first}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def validation_summary(home: Path, run: Any) -> dict[str, Any]:
    return json.loads(
        (home / "artifacts/flights_delay/runs" / run_key(run.run_id) / "validate/summary.json").read_text()
    )


def tries(run: Any, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id).one()
        return ti.try_number


def test_the_first_run_had_nothing_to_compare_with(champion_home) -> None:
    summary = validation_summary(champion_home["home"], champion_home["first"])
    assert summary["reference"]["status"] == "no_reference"
    assert summary["reference"]["line"] == "no reference: no champion yet (first run), nothing to compare with"


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_corruption_that_keeps_the_schema_stops_at_validation(champion_home, case: str) -> None:
    home, dag = champion_home["home"], champion_home["dag"]
    sql, (check, column), words = CORRUPTIONS[case]
    shutil.copyfile(home / "seed.db", home / "source.db")
    with closing(sqlite3.connect(home / "source.db")) as conn, conn:
        conn.executescript(sql)

    run = dag.test(logical_date=FIRST + timedelta(days=1 + list(CORRUPTIONS).index(case)))
    states = task_states(run)
    assert state(run) == "failed"
    assert states["validate_snapshot"] == "failed", states
    assert tries(run, "validate_snapshot") == 1, "a data error is not retried"
    # The split ran beside validation; nothing after it did, and nothing of the run was trained.
    stopped = ("train_candidates", "evaluate_candidates", "promote_model")
    assert all(states.get(t) in (None, "upstream_failed") for t in stopped), states
    assert states["build_features"] == "success", states
    run_dir = home / "artifacts/flights_delay/runs" / run_key(run.run_id)
    assert not (run_dir / "train").exists() and not (run_dir / "evaluate").exists()

    summary = validation_summary(home, run)
    assert summary["success"] is True, "the schema suite passes: only the reference sees it"
    reference = summary["reference"]
    assert reference["status"] == "failed" and reference["reference"]["version"] == 1
    assert reference["line"].startswith("failed: ") and "against v1's snapshot" in reference["line"]
    found = {(f["check"], f["column"]): f["detail"] for f in reference["failures"]}
    assert (check, column) in found, found
    for word in words:
        assert word in found[(check, column)], found[(check, column)]
    html = Path(reference["html_uri"].removeprefix("file://"))
    assert html.is_file() and html.parent.name == "validate"

    registry = open_registry()
    assert registry.champion("flights_delay").version == 1
    told = render_summary("flights_delay", LocalStore(home / "artifacts"), registry, run_id=run.run_id)
    assert "holdout rows (unused: the data failed validation)" in told and "\nverdict" not in told, told
    assert [v.version for v in registry.list_versions("flights_delay")] == [1]


def test_seasonal_drift_passes_validation_and_is_judged_by_the_gate(champion_home) -> None:
    from mlpipe.demo import feed_flights

    home, dag = champion_home["home"], champion_home["dag"]
    shutil.copyfile(home / "seed.db", home / "source.db")
    added, newest = feed_flights(home, days=31)  # `demo feed --days 31`: March (later months: tests/stages)
    assert added > 25_000 and newest.startswith("2013-03-31")

    run = dag.test(logical_date=FIRST + timedelta(days=30))
    states = task_states(run)
    assert states["validate_snapshot"] == "success", states
    assert states["evaluate_candidates"] == "success", states
    reference = validation_summary(home, run)["reference"]
    assert reference["status"] == "passed" and reference["failed"] == 0
    assert reference["line"].startswith(f"passed: {reference['checks']} checks against v1's snapshot (")
    figures = json.loads(Path(reference["json_uri"].removeprefix("file://")).read_text())
    distances = {f["column"]: f["figure"] for f in figures["findings"] if f["check"] == "distance"}
    features = {"carrier", "origin", "dest", "distance", *WEATHER_FEATURES}
    assert set(distances) == features and all(d >= 0 for d in distances.values())
    assert all(distances[c] > 0 for c in ("carrier", "origin", "dest", "distance")), distances
    verdict = json.loads(
        (home / "artifacts/flights_delay/runs" / run_key(run.run_id) / "evaluate/verdict.json").read_text()
    )
    assert verdict["champion_version"] == 1 and verdict["champion_status"] == "scored"
    assert verdict["rules"], "the gate judged the candidate against v1"
