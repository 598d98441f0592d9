"""Tests of the training DAG's operators, each ``execute(context)`` called directly on a real SQLite source.

The module runs the real flights_delay spec once, extract → validate → features → train (each
candidate) → evaluate → promote, on a 13,000-flight sample of the 2013 data (its suite wants at least
10,000 rows), each stage given the previous one's returned dict as the DAG would pass it by XCom.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.utils.types import DagRunTriggeredByType, DagRunType

from mlpipe import layout
from mlpipe.contracts import Snapshot
from mlpipe.demo import EXTRACT_COLUMNS, WEATHER_FEATURES, write_flights_sqlite
from mlpipe.errors import DataValidationError, ExtractError, FeatureError
from mlpipe.operators.base import fail_fast_on_user_errors, materialize, run_info, train_params
from mlpipe.operators.training import (
    CandidatesEvaluateOperator,
    CandidateTrainOperator,
    FeaturesBuildOperator,
    ModelPromoteOperator,
    SnapshotExtractOperator,
    SnapshotValidateOperator,
)
from mlpipe.registry import Registry
from mlpipe.spec import find_spec
from mlpipe.stages.train import load_model
from mlpipe.storage import LocalStore, run_key

REPO = Path(__file__).resolve().parents[2]
PIPELINE = "flights_delay"
CANDIDATES = ("logreg", "hgb")
SNAPSHOT_COLUMNS = list(EXTRACT_COLUMNS)
SAMPLE_ROWS = 13_000
AS_OF = datetime(2013, 12, 1, tzinfo=UTC)  # December is out of the run's reach
RUN_ID = "scheduled__2013-12-01T00:00:00+00:00"
CODE_VERSION = "0.1.0+gtestops"
CONN_ENVS = ("AIRFLOW_CONN_MLPIPE_SOURCE", "AIRFLOW_CONN_MLPIPE_REGISTRY", "AIRFLOW_CONN_MLPIPE_STORE")
MISSING = "no_such_pipeline"


def make_context(
    run_id: str = RUN_ID,
    logical_date: datetime | None = AS_OF,
    *,
    run_type: DagRunType = DagRunType.SCHEDULED,
    triggered_by: DagRunTriggeredByType = DagRunTriggeredByType.TIMETABLE,
    conf: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The part of an Airflow task context the operators read."""
    run_after = logical_date or datetime(2013, 12, 1, 6, 30, tzinfo=UTC)
    dag_run = SimpleNamespace(
        dag_id=f"{PIPELINE}_train",
        run_id=run_id,
        run_type=run_type,
        logical_date=logical_date,
        run_after=run_after,
        conf=conf or {},
        triggered_by=triggered_by,
    )
    return {
        "run_id": run_id,
        "dag_run": dag_run,
        "logical_date": logical_date,
        "params": {},
        "triggering_asset_events": {},
    }


def execute(op: BaseOperator, context: dict[str, Any]) -> Any:
    """``op.execute(context)``, then close the registry engine the operator may have opened."""
    try:
        return op.execute(context)
    finally:
        registry = vars(op).get("registry")
        if registry is not None:
            registry.dispose()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_json_xcom(result: dict[str, Any]) -> None:
    """What an operator returns goes to XCom: plain JSON, no NaN."""
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def picked(values: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` under the keys of ``like`` (a missing one reads as a marker), to compare with it."""
    return {k: values.get(k, "<missing>") for k in like}


def assert_lazy(op: BaseOperator, home: Path) -> None:
    """``__init__`` only stored its arguments: no spec, store or registry yet, nothing on disk."""
    assert {"loaded", "store", "registry"}.isdisjoint(vars(op))
    assert not any(home.iterdir())


def assert_missing_spec_fails_fast(op: BaseOperator) -> None:
    """The spec is found in execute(); a pipeline without one fails at once (no retry can help)."""
    with pytest.raises(AirflowFailException, match=rf"(?s)^SpecError: .*{MISSING}\.yaml.*no such pipeline"):
        execute(op, make_context(run_id="manual__missing"))


# -- the chain, run once per module ------------------------------------------------------------------


@pytest.fixture(scope="module")
def flights(tmp_path_factory: pytest.TempPathFactory, flights_frame: pd.DataFrame) -> Iterator[SimpleNamespace]:
    """A MLPIPE_HOME whose embedded source holds 13,000 real flights; the real include tree."""
    home = tmp_path_factory.mktemp("flights") / "mlpipe"
    sample = flights_frame.sample(n=SAMPLE_ROWS, random_state=2013).sort_values("id").reset_index(drop=True)
    write_flights_sqlite(home / "source.db", sample)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPIPE_HOME", str(home))
        mp.setenv("MLPIPE_INCLUDE", str(REPO / "include"))
        mp.setenv("MLPIPE_CODE_VERSION", CODE_VERSION)
        for name in CONN_ENVS:  # the embedded defaults, whatever the shell has configured
            mp.delenv(name, raising=False)
        yield SimpleNamespace(home=home, sample=sample, store=LocalStore(home / "artifacts"))


@pytest.fixture(scope="module")
def context(flights: SimpleNamespace) -> dict[str, Any]:
    return make_context()


@pytest.fixture(scope="module")
def snapshot(flights: SimpleNamespace, context: dict[str, Any]) -> dict[str, Any]:
    return execute(SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE), context)


@pytest.fixture(scope="module")
def validation(snapshot: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    return execute(SnapshotValidateOperator(task_id="validate_snapshot", pipeline=PIPELINE, snapshot=snapshot), context)


@pytest.fixture(scope="module")
def features(snapshot: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    op = FeaturesBuildOperator(task_id="build_features", pipeline=PIPELINE, snapshot=snapshot)
    return execute(op, context)


@pytest.fixture(scope="module")
def trained(features: dict[str, Any], validation: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        execute(
            CandidateTrainOperator(
                task_id="train_candidates", pipeline=PIPELINE, candidate=name, features=features, validation=validation
            ),
            context,
        )
        for name in CANDIDATES
    ]


@pytest.fixture(scope="module")
def verdict(features: dict[str, Any], trained: list[dict[str, Any]], context: dict[str, Any]) -> dict[str, Any]:
    # A mapped task's output arrives as a sequence, not necessarily a list.
    op = CandidatesEvaluateOperator(
        task_id="evaluate_candidates", pipeline=PIPELINE, features=features, trained=tuple(trained)
    )
    return execute(op, context)


def promote_operator(
    verdict: dict[str, Any], trained: list[dict[str, Any]], snapshot: dict[str, Any], features: dict[str, Any]
) -> ModelPromoteOperator:
    return ModelPromoteOperator(
        task_id="promote_model",
        pipeline=PIPELINE,
        verdict=verdict,
        trained=trained,
        snapshot=snapshot,
        features=features,
    )


@pytest.fixture(scope="module")
def promotion(
    verdict: dict[str, Any],
    trained: list[dict[str, Any]],
    snapshot: dict[str, Any],
    features: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, Any]:
    return execute(promote_operator(verdict, trained, snapshot, features), context)


@pytest.fixture
def registry(flights: SimpleNamespace) -> Iterator[Registry]:
    reg = Registry.from_url(f"sqlite:///{flights.home / 'registry.db'}", create=False)
    yield reg
    reg.dispose()


# -- the operators -----------------------------------------------------------------------------------


class TestSnapshotExtractOperator:
    def test_template_fields(self) -> None:
        assert SnapshotExtractOperator.template_fields == ("pipeline", "source_conn_id")

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        op = SnapshotExtractOperator(task_id="extract_snapshot", pipeline=MISSING)
        assert (op.pipeline, op.source_conn_id) == (MISSING, None)
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_extracts_the_rows_before_as_of(
        self, snapshot: dict[str, Any], flights: SimpleNamespace, context: dict[str, Any]
    ) -> None:
        assert_json_xcom(snapshot)
        assert set(snapshot) == {"key", "uri", "sha256", "rows", "columns", "as_of", "reused", "seconds", "spec_sha256"}
        assert snapshot["spec_sha256"] == find_spec(PIPELINE).sha256()  # carried to promotion, not hashed again
        key = layout.snapshot_key(PIPELINE, run_key(RUN_ID))
        path = flights.home / "artifacts" / key
        assert snapshot["key"] == key
        assert snapshot["uri"] == f"file://{path}"
        assert snapshot["sha256"] == sha256_of(path)
        assert snapshot["as_of"] == "2013-12-01T00:00:00"
        assert snapshot["columns"] == SNAPSHOT_COLUMNS
        assert snapshot["reused"] is False
        expected = int((flights.sample["time_hour"] < "2013-12-01 00:00:00").sum())
        assert 10_000 <= expected < SAMPLE_ROWS
        assert snapshot["rows"] == expected

        frame = pd.read_parquet(path)
        assert list(frame.columns) == SNAPSHOT_COLUMNS
        assert len(frame) == expected
        assert frame["time_hour"].max() < "2013-12-01 00:00:00"
        assert frame["time_hour"].is_monotonic_increasing
        assert set(frame["is_late"].unique()) == {0, 1}

    def test_records_what_started_the_run(self, snapshot: dict[str, Any], flights: SimpleNamespace) -> None:
        record = json.loads((flights.home / "artifacts" / PIPELINE / "runs" / run_key(RUN_ID) / "run.json").read_text())
        expected = {
            "dag_id": f"{PIPELINE}_train",
            "run_id": RUN_ID,
            "run_type": "scheduled",
            "trigger": "schedule",
            "conf": {},
            "as_of": "2013-12-01T00:00:00+00:00",
        }
        assert picked(record, expected) == expected

    def test_a_retry_reuses_the_snapshot(self, snapshot: dict[str, Any], context: dict[str, Any]) -> None:
        again = execute(SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE), context)
        assert again["reused"] is True
        assert {k: again[k] for k in ("key", "sha256", "rows", "columns", "as_of")} == {
            k: snapshot[k] for k in ("key", "sha256", "rows", "columns", "as_of")
        }

    def test_bad_sql_fails_fast_naming_the_query(
        self, tmp_path: Path, mlpipe_home: Path, monkeypatch: pytest.MonkeyPatch, flights_frame: pd.DataFrame
    ) -> None:
        include = tmp_path / "include"
        shutil.copytree(REPO / "include", include)
        (include / "sql" / "flights_delay.sql").write_text(
            "SELECT id, time_hour, no_such_column FROM flights WHERE time_hour < :as_of\n", encoding="utf-8"
        )
        monkeypatch.setenv("MLPIPE_INCLUDE", str(include))
        other = tmp_path / "other.db"
        write_flights_sqlite(other, flights_frame.head(50))
        # source_conn_id overrides the spec's connection: 'no such column' (not 'no such table' from an
        # empty default DB) shows the query ran against this one.
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_OTHER_SOURCE", json.dumps({"conn_type": "sqlite", "host": str(other)}))
        op = SnapshotExtractOperator(
            task_id="extract_snapshot", pipeline=PIPELINE, source_conn_id="mlpipe_other_source"
        )
        with pytest.raises(AirflowFailException, match=r"^ExtractError: query .*flights_delay\.sql failed") as err:
            execute(op, make_context())
        assert "no such column: no_such_column" in str(err.value)
        assert isinstance(err.value.__context__, ExtractError)
        assert not list(mlpipe_home.glob("artifacts/**/snapshot.parquet"))


class TestSnapshotValidateOperator:
    def test_template_fields(self) -> None:
        assert SnapshotValidateOperator.template_fields == ("pipeline", "snapshot")

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        op = SnapshotValidateOperator(
            task_id="validate_snapshot", pipeline=MISSING, snapshot={"key": "k", "sha256": "0" * 64}
        )
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_a_good_snapshot_passes_and_keeps_its_report(
        self, validation: dict[str, Any], snapshot: dict[str, Any], flights: SimpleNamespace
    ) -> None:
        assert_json_xcom(validation)
        assert set(validation) == {
            "success",
            "suite",
            "suite_file",
            "statistics",
            "failures",
            "rows",
            "result_uri",
            "data_docs_uri",
            "reference",
            "seconds",
        }
        # No champion yet: nothing to compare with, and the summary says so.
        assert validation["reference"]["status"] == "no_reference"
        assert validation["reference"]["line"] == "no reference: no champion yet (first run), nothing to compare with"
        suite = json.loads((REPO / "include" / "expectations" / "flights_delay.json").read_text())
        n = len(suite["expectations"])
        assert validation["success"] is True
        assert (validation["suite"], validation["suite_file"]) == ("flights_delay", "flights_delay.json")
        assert validation["failures"] == []
        assert validation["rows"] == snapshot["rows"]
        stats = validation["statistics"]
        assert (stats["evaluated_expectations"], stats["successful_expectations"]) == (n, n)
        prefix = flights.home / "artifacts" / PIPELINE / "runs" / run_key(RUN_ID) / "validate"
        assert validation["result_uri"] == f"file://{prefix / 'result.json'}"
        assert json.loads((prefix / "result.json").read_text())["success"] is True
        assert json.loads((prefix / "summary.json").read_text()) == validation
        docs = Path(validation["data_docs_uri"].removeprefix("file://"))
        assert docs.is_file() and docs.suffix == ".html" and docs.is_relative_to(prefix / "data_docs")

    def test_failing_data_fails_fast_naming_column_and_expectation(
        self, mlpipe_home: Path, flights: SimpleNamespace
    ) -> None:
        bad = flights.sample.copy()
        bad.loc[bad.index[:25], "origin"] = "BOS"  # not a New York airport
        write_flights_sqlite(mlpipe_home / "source.db", bad)
        context = make_context(run_id="manual__bad_origin", run_type=DagRunType.MANUAL)
        snap = execute(SnapshotExtractOperator(task_id="extract_snapshot", pipeline=PIPELINE), context)
        op = SnapshotValidateOperator(task_id="validate_snapshot", pipeline=PIPELINE, snapshot=snap)
        with pytest.raises(AirflowFailException) as err:
            execute(op, context)
        message = str(err.value)
        assert message.startswith("DataValidationError: data failed validation suite 'flights_delay'")
        assert "1 expectation(s) failed" in message
        assert "expect_column_values_to_be_in_set on column 'origin'" in message
        assert "'BOS'" in message
        cause = err.value.__context__
        assert isinstance(cause, DataValidationError)
        assert [(f["expectation"], f["column"]) for f in cause.failures] == [
            ("expect_column_values_to_be_in_set", "origin")
        ]
        in_snapshot = (bad["origin"] == "BOS") & (bad["time_hour"] < "2013-12-01 00:00:00")
        assert cause.failures[0]["observed"]["unexpected_count"] == int(in_snapshot.sum()) > 0
        # The failed run keeps its report, for whoever reads it afterwards.
        summary = mlpipe_home / "artifacts" / PIPELINE / "runs" / "manual__bad_origin" / "validate" / "summary.json"
        assert json.loads(summary.read_text())["success"] is False


class TestFeaturesBuildOperator:
    def test_template_fields(self) -> None:
        assert FeaturesBuildOperator.template_fields == ("pipeline", "snapshot")

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        op = FeaturesBuildOperator(task_id="build_features", pipeline=MISSING, snapshot={"key": "k", "sha256": "0"})
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_splits_the_snapshot_by_time(
        self, features: dict[str, Any], snapshot: dict[str, Any], flights: SimpleNamespace
    ) -> None:
        assert_json_xcom(features)
        assert set(features) == {
            "train_key",
            "train_sha256",
            "train_rows",
            "holdout_key",
            "holdout_sha256",
            "holdout_rows",
            "columns",
            "split",
            "label_counts",
            "seconds",
        }
        assert features["split"] == "time"
        assert features["columns"] == [
            "distance",
            *WEATHER_FEATURES,
            "carrier",
            "origin",
            "dest",
            "time_hour",
            "is_late",
        ]
        assert features["train_rows"] + features["holdout_rows"] == snapshot["rows"]
        assert 0.15 < features["holdout_rows"] / snapshot["rows"] < 0.25  # holdout_fraction 0.2
        assert set(features["label_counts"]) == {"0", "1"}
        assert sum(features["label_counts"].values()) == snapshot["rows"]
        root = flights.home / "artifacts"
        prefix = layout.features_prefix(PIPELINE, run_key(RUN_ID))
        assert (features["train_key"], features["holdout_key"]) == (
            f"{prefix}/train.parquet",
            f"{prefix}/holdout.parquet",
        )
        train = pd.read_parquet(root / features["train_key"])
        holdout = pd.read_parquet(root / features["holdout_key"])
        assert features["train_sha256"] == sha256_of(root / features["train_key"])
        assert features["holdout_sha256"] == sha256_of(root / features["holdout_key"])
        assert (len(train), len(holdout)) == (features["train_rows"], features["holdout_rows"])
        assert train["time_hour"].max() < holdout["time_hour"].min()  # the holdout is the latest rows

    def test_a_snapshot_lacking_columns_fails_fast_naming_them(self, mlpipe_home: Path, tmp_path: Path) -> None:
        store = LocalStore(mlpipe_home / "artifacts")
        path = tmp_path / "snapshot.parquet"
        pd.DataFrame({"id": [1, 2], "time_hour": ["2013-01-01 05:00:00"] * 2, "carrier": ["UA", "AA"]}).to_parquet(
            path, index=False
        )
        art = store.put_file(f"{PIPELINE}/runs/manual__thin/extract/snapshot.parquet", path)
        thin = Snapshot(art.key, art.uri, art.sha256, 2, ["id", "time_hour", "carrier"], "x", False, 0.0)
        op = FeaturesBuildOperator(task_id="build_features", pipeline=PIPELINE, snapshot=thin.to_xcom())
        with pytest.raises(AirflowFailException, match=r"^FeatureError: snapshot .* lacks column\(s\)") as err:
            execute(op, make_context(run_id="manual__thin"))
        assert str(["distance", *WEATHER_FEATURES, "origin", "dest", "is_late"]) in str(err.value)
        assert isinstance(err.value.__context__, FeatureError)

    @pytest.mark.parametrize("validation", ["failed", "passed", "not run"])
    def test_data_that_also_failed_validation_is_told_once(
        self, mlpipe_home: Path, tmp_path: Path, validation: str
    ) -> None:
        """Beside validation, a split that fails on data the validation also failed stays silent: the
        validation's message tells the stop (event_of gives no second one); otherwise its failure is told."""
        from types import SimpleNamespace as NS

        from mlpipe.notify import event_of

        run_id = f"manual__thin_{validation.replace(' ', '_')}"
        store = LocalStore(mlpipe_home / "artifacts")
        path = tmp_path / "snapshot.parquet"
        pd.DataFrame({"id": [1, 2], "time_hour": ["2013-01-01 05:00:00"] * 2}).to_parquet(path, index=False)
        prefix = f"{PIPELINE}/runs/{run_key(run_id)}"
        art = store.put_file(f"{prefix}/extract/snapshot.parquet", path)
        if validation != "not run":
            summary = {"success": validation == "passed", "reference": {"status": "skipped"}}
            store.put_bytes(f"{prefix}/validate/summary.json", json.dumps(summary).encode())
        snapshot = Snapshot(art.key, art.uri, art.sha256, 2, ["id", "time_hour"], "x", False, 0.0)
        op = FeaturesBuildOperator(task_id="build_features", pipeline=PIPELINE, snapshot=snapshot.to_xcom())
        with pytest.raises(AirflowFailException, match=r"^FeatureError: snapshot .* lacks column\(s\)") as err:
            execute(op, make_context(run_id=run_id))
        told = validation == "failed"
        assert getattr(err.value, "told_by", None) == ("validate_snapshot" if told else None)
        assert ("failed validation too" in str(err.value)) is told
        context = {
            **make_context(run_id=run_id),
            "ti": NS(task_id="build_features", map_index=-1),
            "exception": err.value,
        }
        assert (event_of(PIPELINE, "failure", context) is None) is told


class TestCandidateTrainOperator:
    def test_template_fields(self) -> None:
        assert CandidateTrainOperator.template_fields == ("pipeline", "candidate", "features", "validation")

    def test_refuses_a_validation_that_did_not_pass(self, features: dict[str, Any]) -> None:
        from mlpipe.storage import run_key

        op = CandidateTrainOperator(
            task_id="train_candidates",
            pipeline=PIPELINE,
            candidate="logreg",
            features=features,
            validation={"success": False, "suite": "flights_delay"},
        )
        with pytest.raises(AirflowFailException, match=r"^DataValidationError: .* did not pass validation"):
            execute(op, make_context(run_id="manual__unvalidated"))
        assert op.store.list(f"{PIPELINE}/runs/{run_key('manual__unvalidated')}") == [], "nothing trained"

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        op = CandidateTrainOperator(
            task_id="train_candidates", pipeline=MISSING, candidate="logreg", features={"train_key": "k"}
        )
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_template_fields_render_from_the_context(self) -> None:
        op = CandidateTrainOperator(
            task_id="train_candidates",
            pipeline="{{ dag_run.conf['pipeline'] }}",
            candidate="{{ dag_run.conf['candidate'] }}",
            features={"train_key": "{{ run_id }}/train.parquet", "train_sha256": "abc"},
            store_conn_id="{{ not_a_template_field }}",
        )
        context = make_context(run_id="manual__render", conf={"pipeline": PIPELINE, "candidate": "hgb"})
        op.render_template_fields(context)
        assert (op.pipeline, op.candidate) == (PIPELINE, "hgb")
        assert op.features == {"train_key": "manual__render/train.parquet", "train_sha256": "abc"}
        assert op.store_conn_id == "{{ not_a_template_field }}"

    def test_fits_each_candidate_as_one_pipeline(
        self, trained: list[dict[str, Any]], features: dict[str, Any], flights: SimpleNamespace
    ) -> None:
        spec = find_spec(PIPELINE).spec
        root = flights.home / "artifacts"
        holdout = pd.read_parquet(root / features["holdout_key"]).drop(columns=["is_late"])
        for name, result in zip(CANDIDATES, trained, strict=True):
            assert_json_xcom(result)
            assert set(result) == {
                "candidate",
                "estimator",
                "params",
                "model_key",
                "model_uri",
                "model_sha256",
                "train_rows",
                "fit_seconds",
                "search",
            }
            assert result["candidate"] == name
            assert result["estimator"] == spec.candidate(name).estimator
            assert result["model_key"] == f"{PIPELINE}/runs/{run_key(RUN_ID)}/train/{name}/model.joblib"
            assert result["model_sha256"] == sha256_of(root / result["model_key"])
            assert result["train_rows"] == features["train_rows"]
            assert picked(result["params"], spec.candidate(name).params) == spec.candidate(name).params
            search = spec.candidate(name).search
            if search is None:
                assert result["search"] is None
            else:  # the demo's logreg: C from its grid, by cross-validation on the train split
                best = result["search"]["best_params"]
                assert set(best) == set(search.space) and picked(result["params"], best) == best
                assert result["search"]["cv"] == f"TimeSeriesSplit(n_splits={search.cv})"
            model = load_model(flights.store, result["model_key"], result["model_sha256"])
            assert list(model.named_steps) == ["features", "model"]
            proba = model.predict_proba(holdout)
            assert proba.shape == (len(holdout), 2)

    def test_a_retry_reuses_the_fit(
        self, trained: list[dict[str, Any]], features: dict[str, Any], context: dict[str, Any]
    ) -> None:
        op = CandidateTrainOperator(task_id="train_candidates", pipeline=PIPELINE, candidate="hgb", features=features)
        assert execute(op, context) == trained[1]  # same artifact, same recorded fit time: not refitted


class TestCandidatesEvaluateOperator:
    def test_template_fields(self) -> None:
        assert CandidatesEvaluateOperator.template_fields == ("pipeline", "features", "trained")

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        op = CandidatesEvaluateOperator(task_id="evaluate_candidates", pipeline=MISSING, features={}, trained=[])
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_first_run_verdict(
        self,
        verdict: dict[str, Any],
        trained: list[dict[str, Any]],
        features: dict[str, Any],
        flights: SimpleNamespace,
    ) -> None:
        assert_json_xcom(verdict)
        assert set(verdict) >= {
            "pipeline",
            "run_id",
            "blessed",
            "decision",
            "best_candidate",
            "primary_metric",
            "candidates",
            "champion_version",
            "champion_seq",
            "champion_metrics",
            "champion_status",
            "rules",
            "reasons",
            "holdout_rows",
        }
        assert (verdict["pipeline"], verdict["run_id"], verdict["primary_metric"]) == (PIPELINE, RUN_ID, "roc_auc")
        assert verdict["holdout_rows"] == features["holdout_rows"]
        scores = verdict["candidates"]
        assert set(scores) == set(CANDIDATES)
        for metrics in scores.values():
            assert set(metrics) == {"roc_auc", "average_precision", "log_loss", "brier"}
            assert 0.5 < metrics["roc_auc"] < 1.0
            assert 0.0 < metrics["brier"] < 0.25
        assert verdict["best_candidate"] == max(scores, key=lambda c: scores[c]["roc_auc"])
        # No champion yet: the first model is promoted if it clears the floor (0.60 for flights_delay).
        assert scores[verdict["best_candidate"]]["roc_auc"] >= 0.60
        assert (verdict["blessed"], verdict["decision"]) == (True, "first")
        assert (verdict["champion_status"], verdict["champion_version"], verdict["champion_seq"]) == ("none", None, 0)
        assert verdict["champion_metrics"] is None
        assert [(r["rule"], r["passed"]) for r in verdict["rules"]] == [
            ("floor", True),
            ("champion", True),
            ("slice:origin", True),
            ("slice:carrier", True),
        ]
        assert verdict["reasons"] == [r["detail"] for r in verdict["rules"]]
        # The spec's slices are reported on a first run, none judged: there is nothing to compare with.
        assert {s["column"] for s in verdict["slices"]} == {"origin", "carrier"}
        assert {s["value"] for s in verdict["slices"] if s["column"] == "origin"} == {"EWR", "JFK", "LGA"}
        assert not any(s["judged"] for s in verdict["slices"])
        stored = flights.home / "artifacts" / PIPELINE / "runs" / run_key(RUN_ID) / "evaluate" / "verdict.json"
        assert json.loads(stored.read_text()) == verdict


class TestModelPromoteOperator:
    def test_template_fields(self) -> None:
        assert ModelPromoteOperator.template_fields == (
            "pipeline",
            "verdict",
            "trained",
            "snapshot",
            "features",
            "approval",
        )

    def test_init_does_no_io_and_spec_loads_in_execute(self, mlpipe_home: Path) -> None:
        verdict = {"pipeline": MISSING, "blessed": False, "reasons": ["none"], "champion_version": None}
        op = ModelPromoteOperator(
            task_id="promote_model", pipeline=MISSING, verdict=verdict, trained=[], snapshot={}, features={}
        )
        assert_lazy(op, mlpipe_home)
        assert_missing_spec_fails_fast(op)

    def test_the_first_blessed_model_becomes_champion(
        self,
        promotion: dict[str, Any],
        verdict: dict[str, Any],
        trained: list[dict[str, Any]],
        snapshot: dict[str, Any],
        features: dict[str, Any],
        flights: SimpleNamespace,
        registry: Registry,
    ) -> None:
        assert_json_xcom(promotion)
        best = verdict["best_candidate"]
        expected = {"promoted": True, "version": 1, "previous_version": None, "action": "first"}
        assert picked(promotion, expected) == expected
        assert best in promotion["message"] and "first champion" in promotion["message"]
        artifact = Path(promotion["artifact_uri"].removeprefix("file://"))
        assert artifact.is_relative_to(flights.home / "artifacts" / PIPELINE / "models" / "v1")
        chosen = next(t for t in trained if t["candidate"] == best)
        assert sha256_of(artifact) == chosen["model_sha256"]

        champion = registry.champion(PIPELINE)
        assert champion is not None
        assert (champion.version, champion.candidate, champion.run_id) == (1, best, RUN_ID)
        assert (champion.data_sha256, champion.data_rows) == (snapshot["sha256"], snapshot["rows"])
        assert champion.metrics == verdict["candidates"][best]
        assert champion.spec_sha256 == find_spec(PIPELINE).sha256()
        assert champion.code_version == CODE_VERSION
        assert champion.artifact_key == artifact.relative_to(flights.home / "artifacts").as_posix()
        assert champion.artifact_sha256 == chosen["model_sha256"]
        assert champion.lineage["trigger"]["dag_id"] == f"{PIPELINE}_train"
        assert champion.lineage["snapshot"]["sha256"] == snapshot["sha256"]
        assert champion.lineage["features"]["train_rows"] == features["train_rows"]
        assert [e.version for e in registry.champion_history(PIPELINE)] == [1]
        kept = flights.home / "artifacts" / PIPELINE / "runs" / run_key(RUN_ID) / "promote" / "result.json"
        assert json.loads(kept.read_text()) == promotion

    def test_the_operators_keep_the_run_index_up_to_date(
        self, promotion: dict[str, Any], verdict: dict[str, Any], snapshot: dict[str, Any], registry: Registry
    ) -> None:
        row = registry.indexed_run(PIPELINE, run_key(RUN_ID))
        assert row is not None, "extract, validate, evaluate and promote upsert the run's index row"
        assert (row["run_id"], row["trigger"], row["as_of"]) == (RUN_ID, "schedule", "2013-12-01T00:00:00+00:00")
        assert (row["data_sha256"], row["spec_sha256"]) == (snapshot["sha256"], find_spec(PIPELINE).sha256())
        assert row["code_version"] == CODE_VERSION
        assert row["verdict"]["best_candidate"] == verdict["best_candidate"] and row["verdict"]["blessed"]
        assert row["promotion"]["version"] == promotion["version"]
        assert {"validate/summary.json", "evaluate/verdict.json", "promote/result.json"} <= set(row["files"])
        assert registry.indexed_run_count(PIPELINE) == 1

    def test_a_rerun_of_the_run_does_nothing(
        self,
        promotion: dict[str, Any],
        verdict: dict[str, Any],
        trained: list[dict[str, Any]],
        snapshot: dict[str, Any],
        features: dict[str, Any],
        context: dict[str, Any],
        registry: Registry,
    ) -> None:
        again = execute(promote_operator(verdict, trained, snapshot, features), context)
        expected = {"promoted": False, "version": 1, "action": "already_done"}
        assert picked(again, expected) == expected
        assert again["artifact_uri"] == promotion["artifact_uri"]
        assert [v.version for v in registry.list_versions(PIPELINE)] == [1]
        assert len(registry.champion_history(PIPELINE)) == 1

    def test_an_unblessed_verdict_registers_nothing(
        self,
        promotion: dict[str, Any],
        verdict: dict[str, Any],
        trained: list[dict[str, Any]],
        snapshot: dict[str, Any],
        features: dict[str, Any],
        flights: SimpleNamespace,
        registry: Registry,
    ) -> None:
        rejected = copy.deepcopy(verdict)
        rejected.update(
            run_id="manual__rejected", blessed=False, decision="reject", reasons=["hgb roc_auc misses the floor"]
        )
        context = make_context(run_id="manual__rejected", run_type=DagRunType.MANUAL)
        # No champion change, so the task skips: no champion asset event starts scoring.
        with pytest.raises(AirflowSkipException, match=r"champion unchanged.*misses the floor"):
            execute(promote_operator(rejected, trained, snapshot, features), context)
        assert [v.version for v in registry.list_versions(PIPELINE)] == [1]
        assert registry.champion(PIPELINE).run_id == RUN_ID
        kept = flights.home / "artifacts" / PIPELINE / "runs" / "manual__rejected" / "promote" / "result.json"
        result = json.loads(kept.read_text())
        expected = {"promoted": False, "version": None, "action": "skipped"}
        assert picked(result, expected) == expected
        assert "misses the floor" in result["message"]


class TestPromotionByHand:
    """Forced promotion, approval answers and a subset of candidates, on the module's trained models."""

    def run(
        self,
        verdict: dict[str, Any],
        trained: list[dict[str, Any]],
        snapshot: dict[str, Any],
        features: dict[str, Any],
        registry: Registry,
        run_id: str,
        *,
        blessed: bool,
        params: dict[str, Any] | None = None,
        approval: dict[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Promote a copy of the module's verdict (blessed or not) as run ``run_id``; (result, event extra)."""
        from mlpipe.assets import champion_asset

        changed = copy.deepcopy(verdict)
        changed.update(
            run_id=run_id,
            blessed=blessed,
            decision="promote" if blessed else "reject",
            reasons=["gate passed"] if blessed else ["hgb roc_auc=0.7 vs champion v1 0.7: gain +0.0000"],
            champion_seq=registry.champion_seq(PIPELINE),
            champion_version=registry.champion(PIPELINE).version,
        )
        # The evaluation task checks the run's Params once and carries force_reason in the verdict.
        with fail_fast_on_user_errors():  # as the evaluation task does: a bad pair of Params fails it at once
            force_reason = train_params(params, find_spec(PIPELINE).spec).force_reason
        if force_reason is not None:
            changed["force_reason"] = force_reason
        context = make_context(run_id=run_id, run_type=DagRunType.MANUAL)
        context["dag_run"].triggering_user_name = "alice"
        context["params"] = params or {}
        asset = champion_asset(PIPELINE)
        events = {asset: SimpleNamespace(extra=None)}
        context["outlet_events"] = events
        op = ModelPromoteOperator(
            task_id="promote_model",
            pipeline=PIPELINE,
            verdict=changed,
            trained=trained,
            snapshot=snapshot,
            features=features,
            approval=approval,
            outlets=[asset],
        )
        try:
            result = execute(op, context)
        except AirflowSkipException:
            kept = flights_result(run_id)
            return kept, events[asset].extra
        return result, events[asset].extra

    def test_forced_promotion_is_recorded_with_its_reason_and_who(
        self, promotion, verdict, trained, snapshot, features, registry
    ) -> None:
        before = registry.champion_history(PIPELINE)
        params = {"force_promotion": True, "force_reason": "  the old model mislabels JFK  "}

        result, extra = self.run(
            verdict, trained, snapshot, features, registry, "manual__forced", blessed=False, params=params
        )

        assert (result["promoted"], result["action"]) == (True, "force")
        assert "forced by alice although not blessed" in result["message"]
        history = registry.champion_history(PIPELINE)
        assert history[:-1] == before, "the log only grew"
        event = history[-1]
        assert (event.action, event.actor, event.version) == ("force", "alice", result["version"])
        assert event.previous_version == before[-1].version
        assert event.reason.startswith("the old model mislabels JFK (forced; the gate said: hgb roc_auc")
        assert extra == {
            "pipeline": PIPELINE,
            "version": event.version,
            "previous_version": event.previous_version,
            "action": "force",
            "reason": event.reason,
            "actor": "alice",
            "seq": event.seq,
            "run_id": "manual__forced",
        }

    def test_forcing_without_a_reason_is_refused(
        self, promotion, verdict, trained, snapshot, features, registry
    ) -> None:
        before = registry.champion_history(PIPELINE)
        with pytest.raises(AirflowFailException, match=r"param force_reason: forcing the promotion .* needs a reason"):
            self.run(
                verdict,
                trained,
                snapshot,
                features,
                registry,
                "manual__no_reason",
                blessed=False,
                params={"force_promotion": True, "force_reason": "   "},
            )
        assert registry.champion_history(PIPELINE) == before
        assert registry.version_for_run(PIPELINE, "manual__no_reason") is None

    def test_a_rejected_approval_writes_nothing(
        self, promotion, verdict, trained, snapshot, features, registry
    ) -> None:
        before = registry.champion_history(PIPELINE)
        approval = {"asked": True, "approved": False, "by": "bob", "reason": "wait for the audit"}

        result, extra = self.run(
            verdict, trained, snapshot, features, registry, "manual__rejected_by_bob", blessed=True, approval=approval
        )

        assert (result["promoted"], result["action"]) == (False, "rejected")
        assert result["message"] == "rejected by bob: wait for the audit"
        assert extra is None, "no champion event"
        assert registry.champion_history(PIPELINE) == before
        assert registry.version_for_run(PIPELINE, "manual__rejected_by_bob") is None

    def test_an_approved_blessed_model_is_promoted(
        self, promotion, verdict, trained, snapshot, features, registry
    ) -> None:
        approval = {"asked": True, "approved": True, "by": "bob", "reason": ""}
        result, extra = self.run(
            verdict, trained, snapshot, features, registry, "manual__approved", blessed=True, approval=approval
        )
        assert (result["promoted"], result["action"]) == (True, "promote")
        assert registry.champion(PIPELINE).run_id == "manual__approved"
        assert extra["action"] == "promote" and extra["version"] == result["version"]

    def test_evaluation_judges_only_the_candidates_trained(
        self, features: dict[str, Any], trained: list[dict[str, Any]]
    ) -> None:
        only = [t for t in trained if t["candidate"] == "logreg"]
        op = CandidatesEvaluateOperator(
            task_id="evaluate_candidates", pipeline=PIPELINE, features=features, trained=tuple(only)
        )
        verdict = execute(op, make_context(run_id="manual__logreg_only", run_type=DagRunType.MANUAL))
        assert set(verdict["candidates"]) == {"logreg"} and verdict["best_candidate"] == "logreg"


def flights_result(run_id: str) -> dict[str, Any]:
    from mlpipe import config

    return json.loads(
        (config.mlpipe_home() / "artifacts" / PIPELINE / "runs" / run_id / "promote/result.json").read_text()
    )


class TestRunParams:
    """``check_params``: the training run's Params against the spec, before anything runs."""

    def check(self, params: dict[str, Any]) -> list[str]:
        from mlpipe.operators.promotion import RunParamsCheckOperator

        op = RunParamsCheckOperator(task_id="check_params", pipeline=PIPELINE)
        context = make_context(run_id="manual__params", run_type=DagRunType.MANUAL)
        context["params"] = params
        return execute(op, context)

    def test_defaults_train_every_candidate(self, flights: SimpleNamespace) -> None:
        assert self.check({}) == ["logreg", "hgb"]
        assert self.check({"candidates": ["hgb", "logreg"], "force_promotion": False}) == ["logreg", "hgb"]

    def test_a_subset_in_spec_order(self, flights: SimpleNamespace) -> None:
        assert self.check({"candidates": ["hgb"]}) == ["hgb"]

    @pytest.mark.parametrize(
        "params, match",
        [
            ({"candidates": ["hgb", "xgboost"]}, r"param candidates: \['xgboost'\] not in the spec of flights_delay"),
            ({"force_promotion": True}, "param force_reason: forcing the promotion of flights_delay"),
            ({"force_promotion": "yes", "force_reason": "x"}, "param force_promotion: must be true or false"),
        ],
    )
    def test_bad_params_fail_at_once(self, flights: SimpleNamespace, params: dict[str, Any], match: str) -> None:
        with pytest.raises(AirflowFailException, match=match):
            self.check(params)


# -- helpers -----------------------------------------------------------------------------------------


class TestMaterialize:
    def test_plain_list(self) -> None:
        values = [{"candidate": "a"}, {"candidate": "b"}]
        out = materialize(values)
        assert out == values and out is not values

    def test_indexes_by_length_only(self) -> None:
        class Lazy:
            """Like Airflow's lazy XCom sequence: probing past the end would be a failed lookup."""

            def __len__(self) -> int:
                return 2

            def __getitem__(self, i: int) -> str:
                if i >= 2:
                    raise AssertionError("probed past the last item")
                return "xy"[i]

            def __iter__(self):
                raise AssertionError("iterated instead of indexed")

        assert materialize(Lazy()) == ["x", "y"]
        assert materialize(()) == []


class TestRunInfo:
    def test_a_manual_run_without_logical_date_is_as_of_run_after(self) -> None:
        context = make_context(
            run_id="manual__2013-12-01T06:30:00+00:00",
            logical_date=None,
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.UI,
            conf={"note": "retrain"},
        )
        info = run_info(context)
        expected = {
            "dag_id": f"{PIPELINE}_train",
            "run_id": "manual__2013-12-01T06:30:00+00:00",
            "run_type": "manual",
            "trigger": "manual",
            "conf": {"note": "retrain"},
            "as_of": "2013-12-01T06:30:00+00:00",
        }
        assert picked(info, expected) == expected

    def test_a_new_data_event_is_the_trigger_with_its_figures(self) -> None:
        context = make_context(run_id="asset_triggered__2013-12-01", run_type=DagRunType.ASSET_TRIGGERED)
        event = SimpleNamespace(extra={"rows": 900, "watermark": '"2013-12-01 05:00:00"'})
        from airflow.sdk import Asset

        context["triggering_asset_events"] = {Asset(name=f"{PIPELINE}.new_data"): [event]}
        info = run_info(context)
        assert info["trigger"] == "new_data"
        assert info["asset_events"] == [{"asset": f"{PIPELINE}.new_data", "extra": dict(event.extra)}]
