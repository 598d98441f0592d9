"""The Celery executor and worker of the full stack load with the locked celery (a lock bump once broke them)."""

from __future__ import annotations


def test_the_celery_executor_and_its_worker_app_import() -> None:
    from airflow.providers.celery.executors import celery_executor, celery_executor_utils

    assert celery_executor.CeleryExecutor.__name__ == "CeleryExecutor"
    assert celery_executor_utils.execute_workload.name.endswith("execute_workload")
