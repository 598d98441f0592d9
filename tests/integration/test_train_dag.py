"""End to end: ``flights_delay_train`` run by Airflow's ``dag.test()`` on a temporary MLPIPE_HOME.

The good path trains on all 336,776 real flights and promotes a first champion; the bad-input
cases feed data that breaks the GX suite and check the run stops at ``validate_snapshot`` with no
model registered and the champion untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagruns import REPO, load_dag, open_registry, run_note, state, task_states

from mlpipe.storage import run_key

DAG_ID = "flights_delay_train"
FIRST_LOGICAL = datetime(2026, 3, 1, tzinfo=UTC)
FIRST_RUN_AFTER = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
pytestmark = pytest.mark.slow


def open_store():
    from mlpipe import config
    from mlpipe.storage import LocalStore

    return LocalStore(config.default_store_root())


# -- the good path ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_home(airflow_db, tmp_path_factory, flights_frame):
    """One real training run over the whole demo table, shared by the assertions below."""
    import os

    from mlpipe.demo import write_flights_sqlite

    home = tmp_path_factory.mktemp("e2e-home")
    old = os.environ.get("MLPIPE_HOME")
    os.environ["MLPIPE_HOME"] = str(home)
    write_flights_sqlite(home / "source.db", flights_frame)
    dag = load_dag(DAG_ID)
    run = dag.test(run_after=FIRST_RUN_AFTER, logical_date=FIRST_LOGICAL)
    yield {"home": home, "run": run, "dag": dag, "states": task_states(run)}
    if old is None:
        os.environ.pop("MLPIPE_HOME", None)
    else:
        os.environ["MLPIPE_HOME"] = old


def test_run_succeeds_with_every_task(trained_home) -> None:
    states = trained_home["states"]
    assert state(trained_home["run"]) == "success", states
    assert states["extract_snapshot"] == "success"
    assert states["train_candidates[0]"] == "success" and states["train_candidates[1]"] == "success"
    assert set(states.values()) == {"success"}, states


def test_first_champion_registered_with_lineage(trained_home) -> None:
    from mlpipe.storage import sha256_file

    registry, store = open_registry(), open_store()
    run = trained_home["run"]
    champion = registry.champion("flights_delay")
    assert champion is not None and champion.version == 1
    assert champion.run_id == run.run_id
    assert champion.data_rows == 336_776
    assert champion.metrics["roc_auc"] >= 0.6
    snapshot = next(Path(trained_home["home"]).glob("artifacts/flights_delay/runs/*/extract/snapshot.parquet"))
    assert champion.data_sha256 == sha256_file(snapshot)
    assert champion.artifact_key == f"flights_delay/models/v1/{run_key(run.run_id)}/model.joblib"
    artifact = store.path(champion.artifact_key)
    assert artifact.is_file() and sha256_file(artifact) == champion.artifact_sha256
    assert champion.lineage["trigger"]["run_id"] == run.run_id
    assert champion.lineage["snapshot"]["rows"] == 336_776
    history = registry.champion_history("flights_delay")
    assert [(e.seq, e.action, e.previous_version) for e in history] == [(1, "first", None)]
    assert len(champion.spec_sha256) == 64 and champion.code_version
    assert store.exists(champion.artifact_key)


def test_the_run_note_says_what_started_it(trained_home) -> None:
    # Written by mlpipe's DagRun listener as the run finished (`dags test` starts no scheduler).
    assert run_note(trained_home["run"]) == "**Started manually** by dag_test via airflow dags test"
    record = json.loads(
        (
            Path(trained_home["home"])
            / "artifacts/flights_delay/runs"
            / run_key(trained_home["run"].run_id)
            / "run.json"
        ).read_text()
    )
    assert record["trigger"] == "manual" and record["triggering_user"] == "dag_test"


def test_champion_artifact_is_a_whole_pipeline_that_scores_raw_rows(trained_home, flights_frame) -> None:
    from mlpipe.stages.train import load_model

    registry, store = open_registry(), open_store()
    champion = registry.champion("flights_delay")
    model = load_model(store, champion.artifact_key, champion.artifact_sha256)
    from mlpipe.demo import WEATHER_FEATURES, extract_frame

    columns = ["time_hour", "carrier", "origin", "dest", "distance", *WEATHER_FEATURES]
    rows = extract_frame(flights_frame.head(50))[columns]
    proba = model.predict_proba(rows)
    assert proba.shape == (50, 2)
    assert ((proba >= 0) & (proba <= 1)).all()


def test_run_artifacts_written(trained_home) -> None:
    run_dir = Path(trained_home["home"]) / "artifacts/flights_delay/runs" / run_key(trained_home["run"].run_id)
    validation = json.loads((run_dir / "validate" / "summary.json").read_text())
    assert validation["success"] is True
    assert list((run_dir / "validate" / "data_docs" / "validations").rglob("*.html"))
    verdict = json.loads((run_dir / "evaluate" / "verdict.json").read_text())
    assert verdict["blessed"] and verdict["decision"] == "first"
    assert set(verdict["candidates"]) == {"logreg", "hgb"}
    assert {"roc_auc", "average_precision", "log_loss", "brier"} <= set(verdict["candidates"]["hgb"])
    assert (run_dir / "features" / "train.parquet").is_file()
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_rerun_of_the_same_run_registers_nothing_new(trained_home) -> None:
    registry = open_registry()
    before = [v.version for v in registry.list_versions("flights_delay")]
    run = trained_home["dag"].test(run_after=FIRST_RUN_AFTER, logical_date=FIRST_LOGICAL)
    assert run.run_id == trained_home["run"].run_id, "same run id: the run is re-run, not a new one"
    assert state(run) == "success"
    assert [v.version for v in registry.list_versions("flights_delay")] == before
    assert len(registry.champion_history("flights_delay")) == 1
    assert run_note(run) == "**Started manually** by dag_test via airflow dags test", "the note is written once"
    run_dir = Path(trained_home["home"]) / "artifacts/flights_delay/runs" / run_key(run.run_id)
    result = json.loads((run_dir / "promote/result.json").read_text())
    assert result["promoted"] is True and result["version"] == 1, "the first result record is kept"


def test_next_run_on_the_same_data_does_not_replace_the_champion(trained_home) -> None:
    registry = open_registry()
    run = trained_home["dag"].test(
        run_after=datetime(2026, 3, 2, 2, 0, tzinfo=UTC), logical_date=datetime(2026, 3, 2, tzinfo=UTC)
    )
    assert state(run) == "success"
    assert registry.champion("flights_delay").version == 1
    assert len(registry.list_versions("flights_delay")) == 1
    second = Path(trained_home["home"]) / "artifacts/flights_delay/runs" / run_key(run.run_id)
    first = json.loads(next(second.parent.glob("*2026-03-01*/extract/snapshot.json")).read_text())
    assert json.loads((second / "extract/snapshot.json").read_text())["sha256"] == first["sha256"]
    verdict = json.loads((second / "evaluate/verdict.json").read_text())
    assert verdict["champion_status"] == "scored" and verdict["blessed"] is False
    assert any(r["rule"] == "improvement" and not r["passed"] for r in verdict["rules"])


def test_cli_reports_the_champion(trained_home) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "mlpipe", "registry", "champion", "flights_delay", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout)
    assert data["version"] == 1 and data["run_id"] == trained_home["run"].run_id
    assert data["data_sha256"] and data["metrics"]["roc_auc"] >= 0.6
    summary = subprocess.run(
        [sys.executable, "-m", "mlpipe", "demo", "summary", "flights_delay"], capture_output=True, text=True, check=True
    ).stdout
    assert "validation  passed" in summary and "logreg" in summary and "hgb" in summary
    # The summary is of the latest run; its report is a page on disk.
    (latest,) = re.findall(r"^report      file://(\S+/evaluate/report/index\.html)$", summary, re.M)
    assert Path(latest).is_file()
    report = Path(trained_home["home"]) / "artifacts/flights_delay/runs" / run_key(data["run_id"]) / "evaluate/report"
    assert {"roc.png", "pr.png", "calibration.png", "confusion.png", "importance.png"} <= {
        p.name for p in report.glob("*.png")
    }
    opened = subprocess.run(
        [sys.executable, "-m", "mlpipe", "report", "open", "flights_delay"], capture_output=True, text=True, check=True
    ).stdout
    assert f"evaluation report  {report}/index.html" in opened and "data docs" in opened


# -- bad input ----------------------------------------------------------------------------------


def _seed_champion(home: Path) -> None:
    """A pre-existing champion (v7 of nothing in particular) that bad runs must leave alone."""
    from mlpipe.registry import ModelVersion

    registry = open_registry()
    registry.register_and_promote(
        ModelVersion(
            pipeline="flights_delay",
            version=7,
            run_id="earlier",
            candidate="logreg",
            estimator="sklearn.linear_model.LogisticRegression",
            params={},
            metrics={"roc_auc": 0.61},
            data_sha256="0" * 64,
            data_rows=1,
            spec_sha256="0" * 64,
            code_version="test",
            artifact_key="flights_delay/models/v7/earlier/model.joblib",
            artifact_sha256="0" * 64,
        ),
        expected_seq=0,
        action="first",
        reason="seeded by the test",
        actor="test",
    )


def _corrupt(frame, case: str):
    frame = frame.sample(n=20_000, random_state=1).sort_values("id").reset_index(drop=True)
    if case == "wrong_type":
        frame["distance"] = frame["distance"].astype(str) + " mi"
    elif case == "out_of_range":
        frame.loc[frame.index[:300], "distance"] = 99_999
    elif case == "empty_extract":
        frame = frame.head(0)
    return frame


BAD_CASES = {
    # case: (sql edit or None, logical date, expectation type, column)
    "null_target": (
        "CASE WHEN f.arr_delay IS NULL OR f.arr_delay >= 15 THEN 1 ELSE 0 END AS is_late",
        "2026-03-01",
        "expect_column_values_to_not_be_null",
        "is_late",
    ),
    "out_of_range": (None, "2026-03-01", "expect_column_values_to_be_between", "distance"),
    "empty_extract": (None, "2026-03-01", "expect_table_row_count_to_be_between", None),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_stops_at_validation(case, airflow_db, mlpipe_home, flights_frame, tmp_path, monkeypatch) -> None:
    from mlpipe.demo import write_flights_sqlite

    sql_edit, logical, expectation, column = BAD_CASES[case]
    write_flights_sqlite(mlpipe_home / "source.db", _corrupt(flights_frame, case))
    if sql_edit is not None:
        include = tmp_path / "include"
        shutil.copytree(REPO / "include", include)
        query = include / "sql" / "flights_delay.sql"
        text = query.read_text()
        assert sql_edit in text
        replacement = "CASE WHEN f.arr_delay >= 15 THEN 1 WHEN f.arr_delay < 15 THEN 0 END AS is_late"
        query.write_text(text.replace(sql_edit, replacement))
        monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    _seed_champion(mlpipe_home)

    run = load_dag(DAG_ID).test(logical_date=datetime.fromisoformat(logical).replace(tzinfo=UTC))
    states = task_states(run)
    assert state(run) == "failed"
    assert states["extract_snapshot"] == "success"
    assert states["validate_snapshot"] == "failed", states
    # The split ran beside validation (and may have failed on the same data); nothing after both ran.
    stopped = ("train_candidates", "evaluate_candidates", "promote_model")
    assert all(states.get(t) in (None, "upstream_failed") for t in stopped), states

    summary_path = next(mlpipe_home.glob("artifacts/flights_delay/runs/*/validate/summary.json"))
    summary = json.loads(summary_path.read_text())
    assert summary["success"] is False
    failed = {(f["expectation"], f["column"]) for f in summary["failures"]}
    assert (expectation, column) in failed, failed
    assert list((summary_path.parent / "data_docs" / "validations").rglob("*.html"))

    registry = open_registry()
    assert [v.version for v in registry.list_versions("flights_delay")] == [7]
    assert registry.champion("flights_delay").version == 7
    assert len(registry.champion_history("flights_delay")) == 1
    assert not list(mlpipe_home.glob("artifacts/flights_delay/runs/*/train/*/model.joblib"))


@pytest.mark.parametrize("case", ["missing_column", "wrong_type"])
def test_a_column_the_spec_needs_stops_extract_at_its_first_chunk(
    case, airflow_db, mlpipe_home, flights_frame, tmp_path, monkeypatch
) -> None:
    """A feature the query does not return, or returns as text, fails extraction in seconds (the first
    chunk is checked against the spec), before anything is validated, trained or promoted."""
    from mlpipe.demo import write_flights_sqlite

    write_flights_sqlite(mlpipe_home / "source.db", _corrupt(flights_frame, case))
    if case == "missing_column":
        include = tmp_path / "include"
        shutil.copytree(REPO / "include", include)
        query = include / "sql" / "flights_delay.sql"
        text = query.read_text()
        assert "carrier,\n" in text
        query.write_text(text.replace("carrier,\n", ""))
        monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    _seed_champion(mlpipe_home)

    run = load_dag(DAG_ID).test(logical_date=datetime(2026, 3, 1, tzinfo=UTC))
    states = task_states(run)
    assert state(run) == "failed"
    assert states["extract_snapshot"] == "failed", states
    assert states.get("validate_snapshot") != "success", states
    assert not list(mlpipe_home.glob("artifacts/flights_delay/runs/*/extract/snapshot.parquet"))
    registry = open_registry()
    assert [v.version for v in registry.list_versions("flights_delay")] == [7]
    assert registry.champion("flights_delay").version == 7


def test_source_without_a_queried_column_fails_at_extract_naming_it(airflow_db, mlpipe_home, flights_frame) -> None:
    from mlpipe.demo import write_flights_sqlite

    frame = flights_frame.head(12_000).copy()
    write_flights_sqlite(mlpipe_home / "source.db", frame)
    import sqlite3

    with sqlite3.connect(mlpipe_home / "source.db") as conn:
        conn.execute("ALTER TABLE flights DROP COLUMN carrier")
    _seed_champion(mlpipe_home)
    run = load_dag(DAG_ID).test(logical_date=datetime(2026, 3, 1, tzinfo=UTC))
    states = task_states(run)
    assert states["extract_snapshot"] == "failed"
    assert not list(mlpipe_home.glob("artifacts/flights_delay/runs/*/extract/snapshot.parquet"))
    assert open_registry().champion("flights_delay").version == 7
