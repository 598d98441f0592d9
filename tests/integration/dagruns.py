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
