"""Tests of mlpipe.listeners: the trigger written into a training run's note, once, keeping the user's note.

The hooks themselves run in the scheduler and in ``airflow dags test``; tests/integration covers both
(test_train_dag.py and test_scheduler.py read the note from the metadata DB).
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from airflow.utils.types import DagRunTriggeredByType, DagRunType

import mlpipe.listeners as run_notes
from mlpipe_plugin import MlpipePlugin


def dag_run(dag_id: str = "tiny_train", tags: tuple[str, ...] = ("mlpipe", "train", "tiny"), **changes: Any):
    event = SimpleNamespace(
        id=7, name="tiny.new_data", extra={"rows": 900, "watermark": '"2013-12-01 05:00:00"', "watch_run_id": "w1"}
    )
    values = {
        "dag_id": dag_id,
        "run_id": "asset_triggered__2013-12-01",
        "dag": SimpleNamespace(tags=set(tags)),
        "run_type": DagRunType.ASSET_TRIGGERED,
        "triggered_by": DagRunTriggeredByType.ASSET,
        "triggering_user_name": None,
        "logical_date": None,
        "run_after": datetime(2013, 12, 1, 6, tzinfo=UTC),
        "consumed_asset_events": [event],
        "note": None,
    }
    return SimpleNamespace(**{**values, **changes})


def test_the_plugin_registers_the_listener() -> None:
    assert run_notes in MlpipePlugin.listeners
    for hook in ("on_dag_run_running", "on_dag_run_success", "on_dag_run_failed"):
        assert hasattr(getattr(run_notes, hook), "airflow_impl"), f"{hook} is not marked as an Airflow hookimpl"


def test_run_facts_read_the_consumed_asset_events() -> None:
    facts = run_notes.run_facts(dag_run())
    assert facts["trigger"] == "new_data" and facts["run_type"] == "asset_triggered"
    assert facts["asset_events"] == [
        {"asset": "tiny.new_data", "extra": {"rows": 900, "watermark": '"2013-12-01 05:00:00"', "watch_run_id": "w1"}}
    ]
    scheduled = run_notes.run_facts(
        dag_run(run_type=DagRunType.SCHEDULED, consumed_asset_events=[], logical_date=datetime(2013, 12, 1, tzinfo=UTC))
    )
    assert (scheduled["trigger"], scheduled["as_of"]) == ("schedule", "2013-12-01T00:00:00+00:00")


def test_only_mlpipe_training_runs_get_a_note() -> None:
    assert run_notes.is_training_run(dag_run())
    assert not run_notes.is_training_run(dag_run(dag_id="tiny_watch", tags=("mlpipe", "watch")))
    assert not run_notes.is_training_run(dag_run(dag_id="someone_elses_train", tags=("etl",)))
    assert not run_notes.is_training_run(dag_run(dag=None))


def test_the_note_is_written_once_above_the_users_note() -> None:
    run = dag_run(note="retrain after the schema fix (alice)")
    assert run_notes.write_note(run)
    expected = (
        "**Started by new data**\n- `tiny.new_data`: 900 new rows up to 2013-12-01 05:00:00 (run `w1`)\n\n"
        "retrain after the schema fix (alice)"
    )
    assert run.note == expected
    assert not run_notes.write_note(run), "running, then success: the second notification changes nothing"
    assert run.note == expected


def test_a_failing_note_never_reaches_the_scheduler(caplog) -> None:
    not_orm = dag_run()  # not a mapped DagRun: writing its note fails
    run_notes.on_dag_run_running(dag_run=not_orm, msg="started")  # logs, does not raise
    assert "Could not note what started" in caplog.text
