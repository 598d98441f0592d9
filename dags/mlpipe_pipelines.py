"""Airflow DAGs of every mlpipe pipeline: one per spec in include/pipelines/ (see mlpipe.dag_factory)."""

from __future__ import annotations

from mlpipe.dag_factory import build_dags

globals().update(build_dags())
