"""Tests of the score DAG's operator, ``execute(context)`` called directly on real SQLite databases.

The champion is a real flights_delay model (the spec's first candidate fitted on 3,000 flights of
2013), registered in the embedded registry; scoring reads the spec's score query from the source.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import pandas as pd
import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from test_training import PIPELINE, REPO, assert_json_xcom, execute, make_context

from mlpipe.demo import extract_frame, write_flights_sqlite
from mlpipe.operators.score import BatchScoreOperator
from mlpipe.registry import ModelVersion, Registry
from mlpipe.spec import find_spec
from mlpipe.stages.train import build_model
from mlpipe.storage import LocalStore, run_key

ROWS = 3_000


@pytest.fixture
def flights(tmp_path: Path, flights_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    home = tmp_path / "mlpipe"
    sample = flights_frame.sample(n=ROWS, random_state=5).sort_values("id").reset_index(drop=True)
    write_flights_sqlite(home / "source.db", sample)
    monkeypatch.setenv("MLPIPE_HOME", str(home))
    monkeypatch.setenv("MLPIPE_INCLUDE", str(REPO / "include"))
    for name in ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE"):
        monkeypatch.delenv(name, raising=False)
    yield SimpleNamespace(home=home, sample=sample, store=LocalStore(home / "artifacts"))


def promote(flights: Any) -> int:
    """Make a model fitted on the sample the champion; return its version."""
    spec = find_spec(PIPELINE).spec
    frame = extract_frame(flights.sample)  # with the weather the score query joins
    model = build_model(spec, spec.candidates[0]).fit(frame[spec.features.columns], frame["is_late"])
    path = flights.home / "model.joblib"
    joblib.dump(model, path)
    art = flights.store.put_file(f"{PIPELINE}/models/v1/model.joblib", path)
    registry = Registry.from_url(f"sqlite:///{flights.home / 'registry.db'}")
    registry.register_and_promote(
        ModelVersion(
            pipeline=PIPELINE, version=1, run_id="train-1", candidate="logreg", estimator="x", params={},
            metrics={}, data_sha256="a" * 64, data_rows=ROWS, spec_sha256="b" * 64, code_version="test",
            artifact_key=art.key, artifact_sha256=art.sha256,
        ),
        expected_seq=0, action="first", reason="test", actor="tests",
    )  # fmt: skip
    registry.dispose()
    return 1


def table(db: Path, name: str) -> pd.DataFrame:
    with closing(sqlite3.connect(db)) as conn:
        return pd.read_sql(f"SELECT * FROM {name}", conn)


def operator(**kwargs: Any) -> BatchScoreOperator:
    return BatchScoreOperator(task_id="score_batch", pipeline=PIPELINE, **kwargs)


class TestBatchScoreOperator:
    def test_template_fields(self) -> None:
        assert BatchScoreOperator.template_fields == ("pipeline", "source_conn_id", "target_conn_id")

    def test_init_only_stores_its_arguments(self, flights: Any) -> None:
        op = operator(target_conn_id="scores")
        assert (op.pipeline, op.target_conn_id, op.source_conn_id) == (PIPELINE, "scores", None)
        assert {"loaded", "store", "registry"}.isdisjoint(vars(op))

    def test_skips_while_there_is_no_champion(self, flights: Any) -> None:
        with pytest.raises(AirflowSkipException, match="no champion yet"):
            execute(operator(), make_context())

    def test_scores_into_the_source_database_by_default(self, flights: Any) -> None:
        promote(flights)
        context = make_context()

        result = execute(operator(), context)

        assert_json_xcom(result)
        before = flights.sample[flights.sample["time_hour"] < "2013-12-01"]
        assert (result["status"], result["model_version"], result["scored"]) == ("scored", 1, len(before))
        assert len(before) < ROWS and result["input_rows"] == len(before)
        assert result["as_of"] == "2013-12-01T00:00:00+00:00", "the run's logical date bounds and stamps the window"
        got = table(flights.home / "source.db", "flights_delay_predictions")
        assert sorted(got["id"]) == sorted(before["id"]) and len(got) == result["scored"]
        assert got["score"].between(0, 1).all() and set(got["prediction"]) <= {0, 1}
        assert set(got["run_key"]) == {run_key(context["run_id"])}
        assert flights.store.exists(f"{PIPELINE}/score/{run_key(context['run_id'])}/result.json")

    def test_a_configured_connection_receives_the_predictions(
        self, flights: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        promote(flights)
        target = tmp_path / "scores.db"
        monkeypatch.setenv("AIRFLOW_CONN_SCORES", f"sqlite://{target.as_posix().replace('/', '%2F')}")

        result = execute(operator(target_conn_id="scores"), make_context())

        assert len(table(target, "flights_delay_predictions")) == result["scored"] > 0
        with closing(sqlite3.connect(flights.home / "source.db")) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "flights_delay_predictions" not in names

    def test_a_tampered_champion_fails_at_once(self, flights: Any) -> None:
        promote(flights)
        (flights.home / "artifacts" / PIPELINE / "models" / "v1" / "model.joblib").write_bytes(b"tampered")
        with pytest.raises(AirflowFailException, match=r"ArtifactIntegrityError: .*does not match its recorded sha256"):
            execute(operator(), make_context())
