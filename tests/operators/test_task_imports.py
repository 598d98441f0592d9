"""No task of the training DAG imports what it does not use.

Under a distributed executor every task is a fresh process and pays for each import again (GX alone
takes seconds). Each task here runs in a process of its own, as a worker runs it, on a real SQLite
source and the upstream tasks' returned dicts, and the libraries loaded by the time ``execute()``
returned are checked against what the task needs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from mlpipe.demo import write_flights_sqlite

pytestmark = pytest.mark.slow  # seven fresh processes, each importing Airflow (about 2-3 minutes on 2 busy cores)

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("task_worker.py")
PIPELINE = "flights_delay"
RUN_ID = "scheduled__2013-12-01T00:00:00+00:00"
CONN_ENVS = ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE")
# What each task must not import: the libraries of the other tasks' work.
# (GX itself loads scipy and boto3 in validate_snapshot; the store here is local.)
FORBIDDEN = {
    "check_params": {"sklearn", "pandas", "pyarrow", "great_expectations", "matplotlib", "scipy", "boto3"},
    "extract_snapshot": {"sklearn", "great_expectations", "matplotlib", "scipy", "boto3"},
    "validate_snapshot": {"sklearn", "matplotlib"},
    "build_features": {"sklearn", "great_expectations", "matplotlib", "scipy", "boto3"},
    "train_candidates": {"great_expectations", "matplotlib", "boto3"},
    "evaluate_candidates": {"great_expectations", "boto3"},
    "promote_model": {"sklearn", "pandas", "pyarrow", "great_expectations", "matplotlib", "scipy", "boto3"},
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, flights_frame: pd.DataFrame) -> Iterator[SimpleNamespace]:
    """A MLPIPE_HOME whose embedded source holds 12,000 real flights (the suite wants ≥ 10,000)."""
    home = tmp_path_factory.mktemp("imports") / "mlpipe"
    sample = flights_frame.sample(n=12_000, random_state=7).sort_values("id").reset_index(drop=True)
    write_flights_sqlite(home / "source.db", sample)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPIPE_HOME", str(home))
        mp.setenv("MLPIPE_INCLUDE", str(REPO / "include"))
        for name in CONN_ENVS:
            mp.delenv(name, raising=False)
        yield SimpleNamespace(home=home, dir=home.parent)


def run_task(home: SimpleNamespace, task_id: str, **args: Any) -> dict[str, Any]:
    """``task_id`` executed in a fresh process; its result and the libraries it imported."""
    args_file, out_file = home.dir / f"{task_id}.args.json", home.dir / f"{task_id}.out.json"
    args_file.write_text(json.dumps({"pipeline": PIPELINE, "run_id": RUN_ID, **args}))
    done = subprocess.run(
        [sys.executable, str(WORKER), task_id, str(args_file), str(out_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out_file.read_text())


@pytest.fixture(scope="module")
def chain(home: SimpleNamespace) -> dict[str, dict[str, Any]]:
    """Each task of one training run, in DAG order, each in its own process."""
    runs = {"check_params": run_task(home, "check_params")}
    runs["extract_snapshot"] = snap = run_task(home, "extract_snapshot")
    runs["validate_snapshot"] = valid = run_task(home, "validate_snapshot", snapshot=snap["result"])
    runs["build_features"] = feats = run_task(home, "build_features", snapshot=snap["result"])
    runs["train_candidates"] = trained = run_task(
        home,
        "train_candidates",
        candidate="logreg",
        features=feats["result"],
        validation=valid["result"],
    )
    runs["evaluate_candidates"] = verdict = run_task(
        home, "evaluate_candidates", features=feats["result"], trained=[trained["result"]]
    )
    runs["promote_model"] = run_task(
        home,
        "promote_model",
        verdict=verdict["result"],
        trained=[trained["result"]],
        snapshot=snap["result"],
        features=feats["result"],
    )
    return runs


@pytest.mark.parametrize("task_id", list(FORBIDDEN))
def test_each_task_imports_only_what_it_uses(chain: dict[str, dict[str, Any]], task_id: str) -> None:
    run = chain[task_id]
    assert run["before_execute"] == [], "importing an operator module loads no heavy library"
    assert FORBIDDEN[task_id].isdisjoint(run["imported"]), (task_id, run["imported"])


def test_the_chain_did_the_work_it_checks(chain: dict[str, dict[str, Any]]) -> None:
    """The imports are those of real work: validation ran GX, training scikit-learn, a model was promoted."""
    assert "great_expectations" in chain["validate_snapshot"]["imported"]
    assert chain["validate_snapshot"]["result"]["success"] is True
    assert "sklearn" in chain["train_candidates"]["imported"]
    assert chain["build_features"]["result"]["split"] == "time"
    assert chain["promote_model"]["result"]["version"] == 1
