"""A task's process parses the DAG file for its own DAG only, so its start-up does not grow with the pipelines.

Airflow's task runner sets the parsing context (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``) before it parses
the DAG file in a task's process; ``dags/mlpipe_pipelines.py`` passes it to ``build_dags(only=...)``,
which reads the one spec that yields that DAG id and builds that DAG alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_dag_integrity import PARSE_PROBE, REPO


def _parse_with_context(tmp_path: Path, dag_id: str | None, include: Path | None = None) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.pop("_AIRFLOW_PARSING_CONTEXT_DAG_ID", None)
    if dag_id is not None:
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
    if include is not None:
        env["MLPIPE_INCLUDE"] = str(include)
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/no-such-dir/airflow.db"
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_tasks_parse_builds_its_own_dag_only_and_the_same_dag(tmp_path: Path) -> None:
    everything = _parse_with_context(tmp_path, None)
    assert len(everything["dags"]) > 5 and everything["errors"] == {}
    for dag_id in ("flights_delay_train", "flights_delay_score", "wine_rollback", "diabetes_train"):
        one = _parse_with_context(tmp_path, dag_id)
        assert one["errors"] == {}
        assert list(one["dags"]) == [dag_id], dag_id
        assert one["dags"][dag_id] == everything["dags"][dag_id], dag_id  # same tasks, tags and docs


def test_an_id_no_spec_yields_builds_every_dag(tmp_path: Path) -> None:
    from mlpipe.dag_factory import build_dags

    everything = build_dags()
    assert set(build_dags(only="no_such_pipeline_train")) == set(everything)
    # A pipeline's name followed by something that is not one of its roles is not that pipeline's.
    assert set(build_dags(only="flights_delay_nightly")) == set(everything)
    # A role the spec does not configure is not built either (diabetes has no watch DAG).
    assert "diabetes_watch" not in everything
    assert set(build_dags(only="diabetes_watch")) == set(everything)


def test_a_bad_specs_placeholder_is_built_for_its_id(tmp_path: Path) -> None:
    from mlpipe.dag_factory import build_dags

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    shutil.copy(REPO / "include" / "pipelines" / "wine.yaml", pipelines / "wine.yaml")
    (pipelines / "wine_broken.yaml").write_text("name: [unclosed\n")
    only = build_dags(pipelines, only="wine_broken_train")
    assert list(only) == ["wine_broken_train"] and "spec-error" in only["wine_broken_train"].tags
    # wine_train is wine's, not a role of a pipeline called "wine_broken"'s prefix "wine".
    assert list(build_dags(pipelines, only="wine_train")) == ["wine_train"]


def test_with_a_hundred_specs_a_tasks_parse_costs_a_fraction_of_the_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.dag_parse import many_specs_include
    from mlpipe.dag_factory import build_dags

    include = many_specs_include(tmp_path, 103)
    monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
    pipelines = include / "pipelines"
    last = sorted(pipelines.glob("*.yaml"))[-1].stem + "_train"
    build_dags(pipelines, only=last)  # warm: imports and caches

    def cpu(only: str | None) -> tuple[float, int]:
        started = time.process_time()
        n = len(build_dags(pipelines, only=only))
        return time.process_time() - started, n

    whole, n_all = min(cpu(None) for _ in range(2))
    one, n_one = min(cpu(last) for _ in range(2))
    assert n_one == 1 and n_all > 300
    assert one < whole / 20, (one, whole)
