"""A first model without edits: ``mlpipe new`` + ``mlpipe suite draft`` + ``mlpipe check``, then ``dag.test()``.

On scikit-learn's bundled tables as ``demo seed`` writes them (breast_cancer: binary with a text
label and no time column; diabetes: a regression split by its time column) and on three days of
the demo flights through the flights_delay query. The drafted files are used as written: each run
extracts, validates with the drafted suite, trains both candidates, passes the gate and promotes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from dagruns import load_dag, open_registry, state, task_states

from mlpipe.cli import main
from mlpipe.storage import run_key

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FLIGHTS_QUERY = str(REPO / "include" / "sql" / "flights_delay.sql")
CASES = {
    # pipeline: (new's arguments, task, rows)
    "cancer": (["--table", "breast_cancer", "--target", "diagnosis"], "binary", 569),
    "progression": (
        ["--table", "diabetes", "--target", "progression", "--time-column", "recorded_at"],
        "regression",
        442,
    ),
    "late": (["--query", FLIGHTS_QUERY, "--target", "is_late", "--time-column", "time_hour"], "binary", None),
}


@pytest.fixture(scope="module")
def home(airflow_db, tmp_path_factory, flights_frame):
    """MLPIPE_HOME with the bundled tables and three days of flights; an include tree with no pipeline yet."""
    from mlpipe.datasets import seed_datasets
    from mlpipe.demo import write_flights_sqlite

    root = tmp_path_factory.mktemp("first-model")
    home, include = root / "mlpipe", root / "include"
    home.mkdir()
    write_flights_sqlite(home / "source.db", flights_frame[flights_frame["time_hour"] < "2013-01-04"])
    seed_datasets(home / "source.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPIPE_HOME", str(home))
        mp.setenv("MLPIPE_INCLUDE", str(include))
        mp.delenv("AIRFLOW_CONN_MLPIPE_SOURCE", raising=False)
        yield home


@pytest.mark.parametrize("pipeline", sorted(CASES))
def test_drafted_pipeline_trains_and_promotes_without_edits(home: Path, pipeline: str, capsys) -> None:
    args, task, rows = CASES[pipeline]
    include = Path(os.environ["MLPIPE_INCLUDE"])

    assert main(["new", pipeline, *args, "--owner", "tests"]) == 0
    assert main(["suite", "draft", pipeline, "--force"]) == 0
    assert main(["check", pipeline]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert f"ready: airflow dags test {pipeline}_train" in out
    spec_text = (include / "pipelines" / f"{pipeline}.yaml").read_text()
    assert f"task: {task}" in spec_text and "#   id: an id" in spec_text

    run = load_dag(f"{pipeline}_train").test()

    states = task_states(run)
    assert state(run) == "success" and set(states.values()) == {"success"}, states
    run_dir = home / "artifacts" / pipeline / "runs" / run_key(run.run_id)
    verdict = json.loads((run_dir / "evaluate" / "verdict.json").read_text())
    assert (verdict["blessed"], verdict["decision"]) == (True, "first"), verdict["rules"]
    validation = json.loads((run_dir / "validate" / "summary.json").read_text())
    assert validation["success"] and validation["statistics"]["unsuccessful_expectations"] == 0
    champion = open_registry().champion(pipeline)
    assert champion.version == 1 and champion.run_id == run.run_id
    if rows is not None:
        assert champion.data_rows == rows
