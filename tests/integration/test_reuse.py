"""Unchanged inputs cost seconds: ``wine_train`` under ``dag.test()`` three times on the same table.

1. trains both candidates and promotes the first champion;
2. same snapshot, spec and code: takes run 1's candidates (byte-identical copies, no fit) but
   evaluates them afresh, since the champion log moved (run 1 promoted): a tie, nothing promoted;
3. takes run 2's candidates and its evaluation too (champion unchanged since): the same verdict,
   said so in the summary.

Then the train task of a fourth run on the same inputs, with and without the ``fresh_training`` Param.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dagruns import load_dag, open_registry, state, task_states

from bench.reuse import BASE_TASKS, REST_LIMIT_SECONDS
from mlpipe.storage import run_key

pytestmark = pytest.mark.slow
PIPELINE = "wine"


@pytest.fixture(scope="module")
def home(airflow_db, tmp_path_factory):
    from mlpipe.datasets import seed_datasets

    home = tmp_path_factory.mktemp("reuse") / "mlpipe"
    # One code version for the runs (else a commit while the test runs would rightly stop the reuse).
    env = {"MLPIPE_HOME": str(home), "MLPIPE_CODE_VERSION": "test-reuse"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    seed_datasets(home / "source.db")
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_dir(home: Path, run) -> Path:
    return home / "artifacts" / PIPELINE / "runs" / run_key(run.run_id)


def trained(home: Path, run) -> dict[str, dict]:
    return {c: json.loads((run_dir(home, run) / "train" / c / "result.json").read_text()) for c in ("logreg", "forest")}


def task_durations(run) -> dict[str, float]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
        return {f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id: ti.duration or 0.0 for ti in tis}


def verdict_of(home: Path, run) -> dict:
    return json.loads((run_dir(home, run) / "evaluate" / "verdict.json").read_text())


def test_a_run_on_unchanged_inputs_reuses_training_and_evaluation(home: Path) -> None:
    from mlpipe.storage import LocalStore
    from mlpipe.summary import render_summary

    dag = load_dag(f"{PIPELINE}_train")
    runs = [dag.test(), dag.test(), dag.test()]
    for run in runs:
        assert state(run) == "success", task_states(run)
    first, second, third = runs
    models = [trained(home, r) for r in runs]
    for name in ("logreg", "forest"):
        assert len({m[name]["model_sha256"] for m in models}) == 1, f"{name}: the same bytes in every run"
        assert len({m[name]["model_key"] for m in models}) == 3, f"{name}: each run keeps its own copy"
        assert models[0][name]["fit_seconds"] > 0 and models[1][name]["fit_seconds"] == 0.0
    reused = [(run_dir(home, r) / "train" / "logreg" / "reused.json").is_file() for r in runs]
    assert reused == [False, True, True]
    assert json.loads((run_dir(home, second) / "train" / "forest" / "reused.json").read_text())["run_id"] == (
        first.run_id
    )

    verdicts = [verdict_of(home, r) for r in runs]
    assert verdicts[0]["decision"] == "first"
    # The gate decides as before: a re-run on unchanged data is a tie with the champion it promoted.
    for v in verdicts[1:]:
        assert (v["blessed"], v["decision"], v["champion_version"]) == (False, "reject", 1), v["reasons"]
        assert v["candidates"] == verdicts[0]["candidates"]
    assert "reused_from" not in verdicts[1], "run 2 evaluated afresh: the champion log had moved"
    assert verdicts[2]["reused_from"] == second.run_id and verdicts[2]["run_id"] == third.run_id
    assert verdicts[2]["report_uri"] == verdicts[1]["report_uri"], "its report is run 2's"
    assert not (run_dir(home, third) / "evaluate" / "report").exists()

    registry = open_registry()
    assert [v.version for v in registry.list_versions(PIPELINE)] == [1], "nothing promoted after run 1"
    row = registry.indexed_run(PIPELINE, run_key(third.run_id))
    assert row["verdict"]["reused_from"] == second.run_id and "evaluate/report/index.html" in row["files"]
    assert len({r["data_sha256"] for r in registry.indexed_runs(PIPELINE)}) == 1

    # The cost: run 3 pays extraction and validation, and little else (bench/reuse.py measures the demo).
    durations = [task_durations(r) for r in runs]
    rest = {i: sum(v for k, v in d.items() if k not in BASE_TASKS) for i, d in enumerate(durations, start=1)}
    assert rest[3] <= REST_LIMIT_SECONDS, durations[2]
    work = [sum(v for k, v in d.items() if k.startswith(("train_candidates", "evaluate"))) for d in durations]
    assert work[2] < work[0] / 2, f"training and evaluation of run 3 {work[2]:.2f} s vs run 1 {work[0]:.2f} s"

    summary = render_summary(PIPELINE, LocalStore(home / "artifacts"), registry, run_id=third.run_id)
    assert f"reused the evaluation of run {second.run_id}" in summary
    assert f"training    reused logreg, forest of run {second.run_id}" in summary
    registry.dispose()


def test_the_fresh_training_param_trains_afresh(home: Path) -> None:
    from mlpipe.operators.training import CandidateTrainOperator

    registry = open_registry()
    (last,) = registry.indexed_runs(PIPELINE, newest=1)
    new_run = "manual__2030-01-01T00:00:00+00:00"
    registry.index_run(PIPELINE, {**last, "run_key": run_key(new_run), "run_id": new_run})  # same inputs
    op = CandidateTrainOperator(task_id="train", pipeline=PIPELINE, candidate="forest", features={})
    fresh = {"run_id": new_run, "params": {"fresh_training": True}}
    assert op._reuse(fresh) is None, "the Param asks for a training: nothing reused"
    reused = op._reuse({"run_id": new_run, "params": {}})
    assert reused is not None and reused.fit_seconds == 0.0
    assert reused.model_key.startswith(f"{PIPELINE}/runs/{run_key(new_run)}/train/forest/")
    registry.dispose()
