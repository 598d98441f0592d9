"""The regression and multiclass pipelines end to end: ``diabetes`` and ``wine`` under ``dag.test()``.

Each trains on its table as ``python -m mlpipe demo seed`` writes it (scikit-learn's bundled
diabetes and wine data), passes the gate as a first champion, is promoted, and scores every row:
diabetes into a predictions table of the source database, wine as Parquet in the artifact store.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from dagruns import load_dag, open_registry, state, task_states

from mlpipe.storage import run_key

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = {
    "diabetes": {"predicted_actual.png", "residuals.png", "importance.png"},
    "wine": {"roc.png", "pr.png", "calibration.png", "confusion.png", "importance.png"},
}
ROWS = {"diabetes": 442, "wine": 178}


@pytest.fixture(scope="module")
def home(airflow_db, tmp_path_factory):
    """A fresh MLPIPE_HOME whose source holds the two tables `demo seed` adds (no flights needed)."""
    from mlpipe.datasets import seed_datasets

    home = tmp_path_factory.mktemp("small-pipelines") / "mlpipe"
    old = os.environ.get("MLPIPE_HOME")
    os.environ["MLPIPE_HOME"] = str(home)
    assert [(t, n, c) for t, n, c in seed_datasets(home / "source.db")] == [
        ("diabetes", 442, True),
        ("wine", 178, True),
        ("breast_cancer", 569, True),
    ]
    yield home
    if old is None:
        os.environ.pop("MLPIPE_HOME", None)
    else:
        os.environ["MLPIPE_HOME"] = old


def open_store(home: Path):
    from mlpipe.storage import LocalStore

    return LocalStore(home / "artifacts")


def assert_report(report: Path, pipeline: str) -> None:
    """The run's evaluation report: its task's plots as real PNGs, all shown by the page."""
    page = (report / "index.html").read_text()
    assert set(re.findall(r'<img src="([^"]+)"', page)) == PLOTS[pipeline]
    for name in PLOTS[pipeline]:
        data = (report / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE, name
        assert matplotlib.image.imread(report / name).var() > 0, f"{name} is blank"
    assert "<code>floor</code>" in page and "blessed" in page


def predictions(home: Path, pipeline: str) -> pd.DataFrame:
    if pipeline == "diabetes":
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{home / 'source.db'}")
        try:
            return pd.read_sql(sa.text("SELECT * FROM diabetes_predictions"), engine)
        finally:
            engine.dispose()
    from mlpipe.stages.predictions import ParquetSink

    sink = ParquetSink(open_store(home), pipeline=pipeline, key="id")
    return pd.concat([sink.read(m) for m in sink.manifests()], ignore_index=True)


@pytest.mark.parametrize("pipeline", ["diabetes", "wine"])
def test_train_gate_promote_and_score(home: Path, pipeline: str) -> None:
    from mlpipe.spec import find_spec
    from mlpipe.stages.predict import predict
    from mlpipe.stages.train import load_model

    run = load_dag(f"{pipeline}_train").test()

    states = task_states(run)
    assert state(run) == "success" and set(states.values()) == {"success"}, states
    run_dir = home / "artifacts" / pipeline / "runs" / run_key(run.run_id)
    verdict = json.loads((run_dir / "evaluate" / "verdict.json").read_text())
    spec = find_spec(pipeline).spec
    assert (verdict["blessed"], verdict["decision"]) == (True, "first")
    rules = [(r["rule"], r["passed"]) for r in verdict["rules"]]
    # Candidates that tie on the primary metric (a small holdout makes that likely) add the informational
    # "tie" rule: the first listed in the spec is taken.
    primary = {name: metrics[verdict["primary_metric"]] for name, metrics in verdict["candidates"].items()}
    tied = [name for name, value in primary.items() if value == primary[verdict["best_candidate"]]]
    assert rules == [("tie", True)] * (len(tied) > 1) + [("floor", True), ("champion", True)]
    assert verdict["best_candidate"] == next(c.name for c in spec.candidates if c.name in tied)
    assert set(verdict["candidates"]) == {c.name for c in spec.candidates}
    assert verdict["report_uri"] == f"file://{run_dir}/evaluate/report/index.html"
    assert_report(run_dir / "evaluate" / "report", pipeline)

    registry, store = open_registry(), open_store(home)
    champion = registry.champion(pipeline)
    assert (champion.version, champion.run_id, champion.candidate) == (1, run.run_id, verdict["best_candidate"])
    assert champion.data_rows == ROWS[pipeline] and champion.metrics == verdict["candidates"][champion.candidate]
    assert [e.action for e in registry.champion_history(pipeline)] == ["first"]
    # Each spec tunes its first candidate (diabetes: a grid on alpha, wine: C drawn at random) by
    # cross-validation on the train split; the model keeps the best setting, and so does the registry.
    tuned = spec.candidates[0]
    result = json.loads((run_dir / "train" / tuned.name / "result.json").read_text())
    search = result["search"]
    assert (search["method"], search["settings_tried"]) == (tuned.search.method, tuned.search.n_iter or 4)
    assert search["cv"] == f"{'KFold' if pipeline == 'diabetes' else 'StratifiedKFold'}(n_splits={tuned.search.cv})"
    assert {k: result["params"][k] for k in search["best_params"]} == search["best_params"]
    if champion.candidate == tuned.name:
        assert {k: champion.params[k] for k in search["best_params"]} == search["best_params"]

    scored = load_dag(f"{pipeline}_score").test()

    assert task_states(scored) == {"score_batch": "success"}
    got = predictions(home, pipeline).sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == list(range(1, ROWS[pipeline] + 1)), "every row, once"
    assert set(got["model_version"]) == {1} and set(got["run_key"]) == {run_key(scored.run_id)}
    stamp = pd.Timestamp(scored.logical_date or scored.run_after)
    assert pd.to_datetime(got["scored_at"], utc=True).eq(stamp).all(), "stamped with the run's time"
    model = load_model(store, champion.artifact_key, champion.artifact_sha256)
    frame = _table(home, pipeline)
    expected = predict(spec, model, frame[spec.features.columns])
    if spec.target.task == "regression":
        assert np.allclose(got["prediction"], expected.prediction) and np.allclose(got["score"], got["prediction"])
    else:
        assert got["prediction"].tolist() == expected.prediction.tolist()
        assert set(got["prediction"]) <= {"class_0", "class_1", "class_2"}
        assert np.allclose(got["score"], expected.score) and got["score"].between(1 / 3, 1).all()
        accuracy = (got["prediction"] == frame["cultivar"]).mean()
        assert accuracy > 0.9, accuracy


def _table(home: Path, pipeline: str) -> Any:
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(home / "source.db")) as conn:
        return pd.read_sql(f"SELECT * FROM {pipeline} ORDER BY id", conn)
