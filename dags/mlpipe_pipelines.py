"""Airflow DAGs of every mlpipe pipeline: one per spec in include/pipelines/ (see mlpipe.dag_factory)."""

from __future__ import annotations

from airflow.sdk import get_parsing_context

from mlpipe.dag_factory import build_dags

# A task's process parses this file for its own DAG only (Airflow sets the parsing context there).
globals().update(build_dags(only=get_parsing_context().dag_id))
