"""Helpers of the dag.test() integration tests: load a DAG, read task states and asset events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def load_dag(dag_id: str) -> Any:
    """``dag_id`` from the repo's dags/ folder, parsed as the dag-processor would."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def state(run: Any) -> str:
    return str(getattr(run.state, "value", run.state))


def task_states(run: Any) -> dict[str, str]:
    """Task id (``task[i]`` for mapped ones) -> state of a finished run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        return {
            (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(
                getattr(ti.state, "value", ti.state)
            )
            for ti in tis
        }


def asset_events(asset: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Extras of the events of ``asset`` (by name), oldest first; only ``run_id``'s if given."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == asset)
        )
        if run_id is not None:
            query = query.filter(AssetEvent.source_run_id == run_id)
        return [dict(e.extra or {}) for e in query.order_by(AssetEvent.id)]


def open_registry() -> Any:
    from mlpipe import config
    from mlpipe.registry import Registry

    return Registry.from_url(config.default_registry_url())


def run_note(run: Any) -> str | None:
    """The note of a DagRun as the Airflow UI shows it."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(DagRun).filter(DagRun.dag_id == run.dag_id, DagRun.run_id == run.run_id).one().note


def warm_up() -> None:
    """Import and configure Airflow's ORM in this thread before dag.test() starts in another.

    Two threads importing Airflow's models at once can deadlock (the import lock against
    SQLAlchemy's mapper configuration), so the waiting below polls with plain SQL until the task
    awaits input, by which time dag.test() only sleeps and queries.
    """
    import airflow.api.common.trigger_dag
    import airflow.models.dagbag
    import airflow.models.hitl
    import airflow.models.trigger
    import airflow.providers.standard.operators.trigger_dagrun
    import airflow.serialization.serialized_objects  # noqa: F401
    from airflow.models import import_all_models
    from sqlalchemy.orm import configure_mappers

    import_all_models()
    configure_mappers()


def awaiting_input_ti(dag_id: str, task_id: str, timeout: float = 180) -> Any:
    """Wait (polling with plain SQL) until ``task_id`` of ``dag_id`` awaits a person's input; its id."""
    import time
    import uuid

    import sqlalchemy as sa
    from airflow import settings

    waiting = sa.text(
        "SELECT id FROM task_instance WHERE dag_id = :dag AND task_id = :task AND state = 'awaiting_input'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with settings.engine.connect() as conn:
            ti_id = conn.execute(waiting, {"dag": dag_id, "task": task_id}).scalar()
        if ti_id is not None:
            return uuid.UUID(ti_id)
        time.sleep(0.3)
    raise AssertionError(f"{dag_id}.{task_id} never awaited input")
