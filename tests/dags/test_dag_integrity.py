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


def test_each_pipeline_yields_the_dags_its_spec_lists(dagbag) -> None:
    from mlpipe.spec import load_spec, spec_paths

    expected = {"wine_train", "wine_rollback", "wine_score", "flights_delay_watch", "flights_delay_monitor"}
    listed = {dag_id for path in spec_paths() for dag_id in load_spec(path).spec.dag_ids().values()}
    assert expected <= listed
    assert set(dagbag.dags) == listed


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
        "check_params",
        "extract_snapshot",
        "validate_snapshot",
        "build_features",
        "train_candidates",
        "evaluate_candidates",
        "promote_model",
    ]
    assert sorted(dag.task_ids) == sorted(order)
    # Validation and the split run side by side on the snapshot; training waits for both.
    assert dag.get_task("validate_snapshot").upstream_task_ids == {"extract_snapshot"}
    assert dag.get_task("build_features").upstream_task_ids == {"extract_snapshot"}
    assert {"validate_snapshot", "build_features"} <= dag.get_task("train_candidates").upstream_task_ids
    for upstream, downstream in itertools.pairwise(["check_params", "extract_snapshot"]):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    for upstream, downstream in itertools.pairwise(order[4:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    # Nothing after validation runs unless it passed: every task waits for all its upstreams to succeed.
    after = dag.get_task("validate_snapshot").get_flat_relative_ids(upstream=False)
    assert after == {"train_candidates", "evaluate_candidates", "promote_model"}
    assert {dag.get_task(t).trigger_rule for t in after} == {"all_success"}
    assert isinstance(dag.get_task("train_candidates"), MappedOperator), "one mapped task per candidate"
    assert {"flights_delay", "train"} <= set(dag.tags)
    assert "roc_auc" in dag.doc_md and "flights_delay.sql" in dag.doc_md
    # The mapping follows the run's Param candidates, checked by check_params before anything runs.
    assert "check_params" in dag.get_task("train_candidates").upstream_task_ids
    assert set(dag.params) == {"force_promotion", "force_reason", "fresh_training", "candidates"}
    assert dag.params["force_promotion"] is False and dag.params["candidates"] == ["logreg", "hgb"]
    assert [a.name for a in dag.get_task("promote_model").outlets] == ["flights_delay.champion"]
    assert "approve_promotion" not in dag.task_ids, "approval: none (the default) asks nobody"


def test_approval_required_puts_an_approval_task_before_promotion(tmp_path: Path) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    from mlpipe.dag_factory import build_dags

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / "wine.yaml"
    spec.write_text(spec.read_text() + "\napproval: required\n")
    dag = build_dags(include / "pipelines")["wine_train"]
    approve = dag.get_task("approve_promotion")
    assert isinstance(approve, ApprovalOperator)
    assert approve.upstream_task_ids == {"evaluate_candidates"}
    assert "approve_promotion" in dag.get_task("promote_model").upstream_task_ids
    # Nobody is asked to approve a model of data that failed validation: the approval waits for it too.
    assert "approve_promotion" in dag.get_task("validate_snapshot").get_flat_relative_ids(upstream=False)
    assert "approve_promotion" not in dag.get_task("build_features").upstream_task_ids
    assert list(approve.params) == ["reason"], "the form asks for a reason, not the run's Params"
    assert "**approval required**" in dag.doc_md


def test_rollback_dag_takes_a_version_and_a_reason(dagbag) -> None:
    dag = dagbag.dags["wine_rollback"]
    assert dag.task_ids == ["roll_back_champion"] and type(dag.timetable).__name__ == "NullTimetable"
    assert {"wine", "rollback", "mlpipe"} <= set(dag.tags)
    assert {k: dag.params.get_param(k).has_value for k in dag.params} == {"version": False, "reason": False}
    assert [a.name for a in dag.get_task("roll_back_champion").outlets] == ["wine.champion"]
    assert "| `version` | **required** |" in dag.doc_md
    assert "python -m mlpipe registry rollback wine VERSION" in dag.doc_md


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


# -- docs, tags and params: what the UI shows about each DAG ----------------------------------------


def pipeline_dags(dagbag) -> dict:
    return {dag_id: dag for dag_id, dag in dagbag.dags.items() if "spec-error" not in dag.tags}


def test_every_pipeline_dag_is_documented_from_its_spec(dagbag) -> None:
    dags = {k: v for k, v in pipeline_dags(dagbag).items() if k.startswith("flights_delay_")}
    assert {"flights_delay_train", "flights_delay_watch", "flights_delay_monitor", "flights_delay_score"} <= set(dags)
    for dag_id, dag in dags.items():
        pipeline, role = dag_id.rsplit("_", 1)
        assert {pipeline, "mlpipe", role} <= set(dag.tags), dag_id
        doc = dag.doc_md
        assert doc.startswith(f"### {pipeline}: "), dag_id
        for needle in (
            "**Predicts** `is_late` (binary, positive class `1`)",
            "categorical `carrier`, `origin`, `dest`",
            "query `include/sql/flights_delay.sql` through connection `mlpipe_source`",
            "#### Promotion gate (primary metric `roc_auc`)",
            "- floor: `roc_auc` ≥ 0.6",
            "- `log_loss` may not worsen by more than 0.01",
            "#### Triggers",
            "`flights_delay_train`: cron `0 2 * * *` (UTC), or the asset event `flights_delay.new_data`",
            "`flights_delay_monitor`: cron `0 6 * * *`",
            "[Models view](/plugin/models/mlpipe/pipelines/flights_delay)",
            "#### Run it by hand",
            f"`airflow dags test {dag_id}`",
        ):
            assert needle in doc, (dag_id, needle)
    assert "`promote_model` (registers the blessed candidate" in dags["flights_delay_train"].doc_md
    assert "**500** row(s) of `flights`" in dags["flights_delay_watch"].doc_md
    assert "PSI (warn 0.1" in dags["flights_delay_monitor"].doc_md
    assert "`flights_delay_score`: cron `0 7 * * *` (UTC), or the asset event `flights_delay.champion`" in doc


def test_docs_follow_the_spec(tmp_path: Path) -> None:
    from mlpipe.dag_factory import build_dags

    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    spec = include / "pipelines" / "flights_delay.yaml"
    spec.write_text(spec.read_text().replace("min_improvement: 0.001", "min_improvement: 0.02"))
    dags = build_dags(include / "pipelines")
    assert "beat the champion's `roc_auc` by ≥ 0.02 (ties never promote)" in dags["flights_delay_train"].doc_md


def test_every_param_has_a_description_shown_in_the_docs(dagbag) -> None:
    for dag_id, dag in pipeline_dags(dagbag).items():
        for key in dag.params:
            param = dag.params.get_param(key)
            assert param.description and param.description.strip(), f"{dag_id}: Param {key!r} has no description"
            assert f"| `{key}` |" in dag.doc_md and param.description.split("\n")[0] in dag.doc_md, (dag_id, key)


def test_manual_run_doc_lists_params_and_flags_undocumented_ones() -> None:
    from airflow.sdk import DAG, Param

    from mlpipe.dag_docs import manual_run_doc

    dag = DAG(
        "p_train",
        params={
            "reason": Param("", type="string", description="Why | this run is forced"),
            "bare": Param(3, type="integer"),
        },
    )
    doc = manual_run_doc(dag)
    assert "The form shows the parameters below" in doc
    assert "| `reason` | `''` | Why \\| this run is forced |" in doc
    assert "| `bare` | `3` | **undocumented** |" in doc
    assert "no parameters" in manual_run_doc(DAG("q_train"))


def test_score_dag_runs_on_champion_and_new_data_events_and_its_cron(dagbag) -> None:
    dag = dagbag.dags["flights_delay_score"]
    assert dag.task_ids == ["score_batch"]
    assert {"flights_delay", "score"} <= set(dag.tags) and dag.max_active_runs == 1
    schedule = dag.timetable
    assert {a.name for a in schedule.asset_condition.objects} == {"flights_delay.champion", "flights_delay.new_data"}
    assert {a.uri for a in schedule.asset_condition.objects} == {
        "x-mlpipe://flights_delay/champion",
        "x-mlpipe://flights_delay/new_data",
    }
    assert schedule.timetable.expression == "0 7 * * *"
    assert "flights_delay_predictions" in dag.doc_md and "flights_delay_score.sql" in dag.doc_md
