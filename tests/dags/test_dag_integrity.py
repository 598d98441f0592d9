"""DAG integrity: every DAG loads, carries its metadata, parses cheaply, and survives a bad spec."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from airflow.sdk.definitions.mappedoperator import MappedOperator

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "sklearn", "great_expectations", "boto3", "pyarrow", "matplotlib")

PARSE_PROBE = textwrap.dedent(
    f"""
    import json, os, sys, time
    import airflow  # the dag-processor has Airflow loaded already
    from airflow.dag_processing.dagbag import DagBag
    started = time.perf_counter()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    seconds = time.perf_counter() - started
    print(json.dumps({{
        "seconds": seconds,
        "dags": {{d.dag_id: {{"tags": sorted(d.tags), "doc_md": d.doc_md or "", "tasks": d.task_ids}}
                 for d in bag.dags.values()}},
        "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
        "heavy": [m for m in {HEAVY!r} if m in sys.modules],
    }}))
    """
)


def parse_in_subprocess(tmp_path: Path, **env: str) -> dict:
    """Parse dags/ in a fresh interpreter with no Connections and no usable metadata DB."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    clean.update(env)
    # A database URL that cannot work: parsing must not need it.
    clean["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{tmp_path}/no-such-dir/airflow.db"
    out = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE], capture_output=True, text=True, env=clean, timeout=120, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    return bag


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "flights_delay_train" in dagbag.dags


def test_every_dag_has_owner_tags_retries_and_no_catchup(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert "mlpipe" in dag.tags, dag_id
        assert dag.catchup is False, dag_id
        assert dag.start_date is not None and dag.start_date.utcoffset().total_seconds() == 0, dag_id
        assert dag.doc_md, dag_id
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


def test_training_dag_shape(dagbag) -> None:
    dag = dagbag.dags["flights_delay_train"]
    order = [
        "extract_snapshot",
        "validate_snapshot",
        "build_features",
        "train_candidates",
        "evaluate_candidates",
        "promote_model",
    ]
    assert sorted(dag.task_ids) == sorted(order)
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert isinstance(dag.get_task("train_candidates"), MappedOperator), "one mapped task per candidate"
    assert {"flights_delay", "train"} <= set(dag.tags)
    assert "roc_auc" in dag.doc_md and "flights_delay.sql" in dag.doc_md


def test_parse_is_cheap_and_needs_no_db_connections_or_heavy_imports(tmp_path: Path) -> None:
    report = parse_in_subprocess(tmp_path)
    assert report["errors"] == {}
    assert "flights_delay_train" in report["dags"]
    assert report["heavy"] == [], f"parsing imported heavy modules: {report['heavy']}"
    dag_files = list((REPO / "dags").glob("*.py"))
    assert report["seconds"] < 0.5 * len(dag_files), report["seconds"]


def test_bad_spec_becomes_a_placeholder_dag_and_others_still_load(tmp_path: Path) -> None:
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    good = (include / "pipelines" / "flights_delay.yaml").read_text()
    broken = good.replace("name: flights_delay", "name: broken_pipe").replace("task: binary", "task: binomial")
    (include / "pipelines" / "broken_pipe.yaml").write_text(broken)
    (include / "pipelines" / "not_yaml.yaml").write_text("name: [unclosed\n")

    report = parse_in_subprocess(tmp_path, MLPIPE_INCLUDE=str(include))
    assert report["errors"] == {}
    assert "flights_delay_train" in report["dags"], "a bad spec must not hide the good pipelines"
    placeholder = report["dags"]["broken_pipe_train"]
    assert "spec-error" in placeholder["tags"]
    assert "broken_pipe.yaml" in placeholder["doc_md"]
    assert "target.task" in placeholder["doc_md"] and "binomial" in placeholder["doc_md"]
    assert placeholder["tasks"] == ["report_spec_error"]
    assert "not valid YAML" in report["dags"]["not_yaml_train"]["doc_md"]
    assert "line 2, column 1" in report["dags"]["not_yaml_train"]["doc_md"]


def test_placeholder_task_fails_with_the_spec_message(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from mlpipe.dag_factory import build_dags

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "oops.yaml").write_text("name: oops\ndescription: x\nowner: me\nsurprise: 1\n")
    dags = build_dags(pipelines)
    task = dags["oops_train"].get_task("report_spec_error")
    with pytest.raises(AirflowFailException, match=r"surprise: unknown field"):
        task.python_callable()
