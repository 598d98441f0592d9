"""DagRun notes: every training run says in the Airflow UI what started it, with the figures.

Airflow 3.3 gives a running task no way to change its own DagRun's note (the Execution API and the
Task SDK only read it), so the note is written by this listener, registered by the mlpipe plugin,
in the process that owns the DagRun: the scheduler when it starts the run, and ``airflow dags test``
(which starts no scheduler) when the run finishes. It reads the same facts the run's tasks record in
``run.json`` and the model's lineage (run type, the asset events it consumed), through the same
``mlpipe.stages.runs`` functions, so the note and the records agree. A note a user gave the run is
kept below the trigger, which is written once.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

ROLE_TAGS = {"mlpipe", "train"}  # the DAGs dag_factory builds as <name>_train


def _value(enum_or_str: Any) -> Any:
    return getattr(enum_or_str, "value", enum_or_str)


def run_facts(dag_run: Any) -> dict[str, Any]:
    """What started ``dag_run`` (the metadata DB's DagRun), shaped like the run's ``run.json``."""
    from mlpipe.stages.runs import trigger_of

    events = [
        {"asset": event.name, "extra": dict(event.extra or {})}
        for event in sorted(dag_run.consumed_asset_events or [], key=lambda e: e.id)
    ]
    run_type = _value(dag_run.run_type)
    as_of = dag_run.logical_date or dag_run.run_after
    triggered_by = _value(getattr(dag_run, "triggered_by", None))
    return {
        "trigger": trigger_of(run_type, [e["asset"] for e in events]),
        "asset_events": events,
        "run_type": run_type,
        "triggered_by": "airflow dags test" if triggered_by == "test" else triggered_by,
        "triggering_user": getattr(dag_run, "triggering_user_name", None),
        "as_of": as_of.isoformat() if as_of else None,
    }


def is_training_run(dag_run: Any) -> bool:
    dag = getattr(dag_run, "dag", None)
    return dag_run.dag_id.endswith("_train") and ROLE_TAGS.issubset(getattr(dag, "tags", None) or ())


def write_note(dag_run: Any) -> bool:
    """Put what started ``dag_run`` at the top of its note, unless it is there already."""
    from mlpipe.stages.runs import NOTE_LIMIT, trigger_note

    ours = trigger_note(run_facts(dag_run))
    current = dag_run.note or ""
    if ours in current:
        return False
    dag_run.note = f"{ours}\n\n{current}"[:NOTE_LIMIT] if current else ours
    log.info("Noted what started %s %s: %s", dag_run.dag_id, dag_run.run_id, ours.splitlines()[0])
    return True


def note_trigger(dag_run: Any) -> bool:
    """Note what started ``dag_run`` if it is an mlpipe training run; whether the note changed."""
    if not is_training_run(dag_run):
        return False
    from sqlalchemy import inspect

    if inspect(dag_run).session is not None:
        return write_note(dag_run)  # the scheduler's own session, committed with its loop
    # ``airflow dags test`` passes a DagRun its (closed) session let go of: load it into the
    # thread's session again, which is the test loop's own, and commit there.
    from airflow import settings
    from airflow.models.dagrun import DagRun

    session = settings.Session()
    attached = session.get(DagRun, dag_run.id)
    if attached is None:
        return False
    attached.dag = getattr(dag_run, "dag", None)
    written = write_note(attached)
    session.commit()
    return written


def _note_safely(dag_run: Any) -> None:
    # A note is worth less than the scheduler loop that calls this: log, never raise.
    try:
        note_trigger(dag_run)
    except Exception:
        log.exception("Could not note what started %s", getattr(dag_run, "run_id", dag_run))


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    _note_safely(dag_run)


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    _note_safely(dag_run)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    _note_safely(dag_run)
