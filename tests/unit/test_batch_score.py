"""Tests of batch scoring (stages/batch_score.py, stages/predictions.py) on tiny SQLite sources.

Both outputs (a SQL table, Parquet in the store) are held to the same rules: every row scored once
per champion, a re-run replaces its window, bad rows set aside with reasons, no partial window ever
visible, and the champion's artifact verified before it is loaded.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlpipe import layout
from mlpipe.errors import ArtifactIntegrityError, FeatureError
from mlpipe.registry import ModelVersion, Registry
from mlpipe.spec import LoadedSpec, load_spec
from mlpipe.stages import batch_score
from mlpipe.stages.batch_score import predictions_sink, score_window
from mlpipe.stages.predict import predict
from mlpipe.stages.predictions import KeySet, ParquetSink
from mlpipe.stages.train import build_model
from mlpipe.storage import ArtifactStore, LocalStore, S3Store

AS_OF = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
LATER = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


class Scoring:
    """A tiny pipeline with a score section: source DB, registry, store, a champion, and its outputs."""

    def __init__(
        self,
        tmp: Path,
        loaded: LoadedSpec,
        frame: pd.DataFrame,
        target_url: str | None = None,
        store: ArtifactStore | None = None,
    ) -> None:
        self.tmp, self.loaded, self.frame = tmp, loaded, frame
        self.db = tmp / "source.db"
        self.source = sa.create_engine(f"sqlite:///{self.db}")
        self.target = sa.create_engine(target_url) if target_url else self.source
        self.store = store or LocalStore(tmp / "artifacts")
        self.registry = Registry.from_url(f"sqlite:///{tmp / 'registry.db'}")
        self.append(frame)

    @property
    def spec(self) -> Any:
        return self.loaded.spec

    def append(self, rows: pd.DataFrame) -> None:
        with closing(sqlite3.connect(self.db)) as conn, conn:
            rows.to_sql("flights", conn, if_exists="append", index=False)

    def promote(self, version: int, frame: pd.DataFrame | None = None) -> Any:
        """Fit the first candidate on ``frame`` and make it champion ``version``."""
        frame = self.frame if frame is None else frame
        model = build_model(self.spec, self.spec.candidates[0]).fit(frame[self.spec.features.columns], frame["y"])
        path = self.tmp / f"model-v{version}.joblib"
        joblib.dump(model, path)
        art = self.store.put_file(layout.model_key(self.spec.name, version, f"train-{version}"), path)
        self.registry.register_and_promote(
            ModelVersion(
                pipeline=self.spec.name, version=version, run_id=f"train-{version}", candidate="logreg",
                estimator="x", params={}, metrics={}, data_sha256="a" * 64, data_rows=len(frame),
                spec_sha256="b" * 64, code_version="test", artifact_key=art.key, artifact_sha256=art.sha256,
            ),
            expected_seq=self.registry.champion_seq(self.spec.name),
            action="first" if version == 1 else "promote",
            reason="test",
            actor="tests",
        )  # fmt: skip
        return model

    def score(self, run_key: str = "w1", as_of: datetime = AS_OF) -> dict[str, Any]:
        return score_window(
            self.loaded,
            self.store,
            self.registry,
            self.source,
            self.target,
            run_id=f"scheduled__{run_key}",
            run_key=run_key,
            as_of=as_of,
        ).to_xcom()

    def predictions(self) -> pd.DataFrame:
        return self._read("predictions")

    def rejects(self) -> pd.DataFrame:
        return self._read("rejects")

    def _read(self, which: str) -> pd.DataFrame:
        sink = predictions_sink(self.loaded, self.store, self.target)
        if isinstance(sink, ParquetSink):
            parts = [sink.read(m, which) for m in sink.manifests()]
            return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        table = sink.table if which == "predictions" else sink.rejects_table
        if not sa.inspect(self.target).has_table(table):
            return pd.DataFrame()
        return pd.read_sql(sa.text(f"SELECT * FROM {table}"), self.target)


@pytest.fixture
def make_scoring(include_tree, make_spec, make_frame, tmp_path):
    def make(
        output: str = "table", n: int = 40, target_url: str | None = None, store: Any = None, **score: Any
    ) -> Scoring:
        spec = make_spec(score={"key": "id", "output": output, **score})
        return Scoring(tmp_path, load_spec(include_tree(spec)), make_frame("binary", n), target_url, store)

    return make


OUTPUTS = ["table", "parquet"]


@pytest.mark.parametrize("output", OUTPUTS)
def test_every_row_scored_once_with_version_score_and_window_time(make_scoring, output: str) -> None:
    s = make_scoring(output)
    model = s.promote(1)

    result = s.score()

    assert (result["status"], result["model_version"], result["input_rows"]) == ("scored", 1, 40)
    assert (result["scored"], result["already_scored"], result["rejected"]) == (40, 0, 0)
    got = s.predictions().sort_values("id").reset_index(drop=True)
    assert list(got.columns) == ["id", "model_version", "prediction", "score", "scored_at", "run_key"]
    assert got["id"].tolist() == list(range(40)) and set(got["model_version"]) == {1}
    expected = predict(s.spec, model, s.frame[s.spec.features.columns])
    assert np.allclose(got["score"], expected.score) and got["prediction"].tolist() == expected.prediction.tolist()
    assert pd.to_datetime(got["scored_at"], utc=True).eq(pd.Timestamp(AS_OF)).all(), "the window's time, not now()"
    assert set(got["run_key"]) == {"w1"}
    assert json.loads(s.store.get_bytes("tiny/score/w1/result.json"))["scored"] == 40
    timings = result["timings"]
    assert set(timings) == {"read", "keys", "check", "predict", "write", "commit"}
    assert all(v >= 0 for v in timings.values()) and sum(timings.values()) <= result["seconds"]


@pytest.mark.parametrize("output", OUTPUTS)
def test_rerun_replaces_the_window_and_never_duplicates(make_scoring, output: str) -> None:
    s = make_scoring(output)
    s.promote(1)
    first = s.score().copy()
    before = s.predictions().sort_values("id").reset_index(drop=True)

    again = s.score()

    after = s.predictions().sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert again["scored"] == first["scored"] == 40 and again["already_scored"] == 0


@pytest.mark.parametrize("output", OUTPUTS)
def test_next_window_scores_only_new_rows_and_a_new_champion_rescores(make_scoring, make_frame, output: str) -> None:
    s = make_scoring(output)
    s.promote(1)
    s.score("w1", AS_OF)
    new = make_frame("binary", 50).iloc[40:].assign(ts=lambda f: f["ts"].str.replace("2013", "2014"))
    s.append(new)

    second = s.score("w2", LATER)

    assert (second["input_rows"], second["scored"], second["already_scored"]) == (50, 10, 40)
    got = s.predictions()
    assert sorted(got.loc[got["run_key"] == "w2", "id"]) == list(range(40, 50))
    assert not got.duplicated(["id", "model_version"]).any()

    # The rule: predictions are per (key, model version). A new champion scores every row again and
    # keeps its predecessor's predictions beside its own.
    s.promote(2)
    third = s.score("w3", LATER)
    assert (third["model_version"], third["scored"], third["already_scored"]) == (2, 50, 0)
    got = s.predictions()
    assert got.groupby("model_version")["id"].nunique().to_dict() == {1: 50, 2: 50}
    assert s.score("w4", LATER)["scored"] == 0, "nothing left that v2 has not scored"


@pytest.mark.parametrize("output", OUTPUTS)
def test_bad_rows_are_set_aside_with_their_reasons(make_scoring, output: str) -> None:
    s = make_scoring(output, missing="reject")
    s.promote(1)
    bad = pd.DataFrame(
        {
            "id": [None, 100, 101, 102, 3, 104],
            # (The query keeps ts < as_of as text: a bad timestamp must sort low to reach scoring at all.)
            "ts": ["2013-01-09 10:00:00", "2013-01-09 10:00:00", "2013-02-30 25:00", "2013-01-09 11:00:00",
                   "2013-01-09 12:00:00", "2013-01-09 13:00:00"],
            "cat": ["a", "b", "c", None, "a", "b"],
            "num": [0.1, "abc", 0.3, 0.4, 0.5, float("inf")],
            "y": [1, 0, 1, 0, 1, 0],
        }
    )  # fmt: skip
    s.append(bad)

    result = s.score()

    rejects = s.rejects().set_index("key", drop=False)
    assert len(rejects) == 7 == result["rejected"]
    by_key = {("null" if pd.isna(k) else k): r for k, r in rejects["reason"].items()}
    assert by_key["null"] == "key: null"
    assert by_key["100"] == "num: not a number"
    assert by_key["101"] == "ts: unparseable timestamp"
    assert by_key["102"] == "cat: missing"
    assert by_key["3"] == "key: duplicate in this window"
    assert by_key["104"] == "num: not a finite number"
    # The tiny frame's row 5 has a null num: with missing=reject it is set aside too.
    assert by_key["5"] == "num: missing"
    assert json.loads(rejects.loc["101", "record"]) == {"id": 101, "num": "0.3", "cat": "c", "ts": "2013-02-30 25:00"}
    assert result["reject_reasons"]["num: not a number"] == 1
    scored = s.predictions()
    assert sorted(scored["id"]) == [i for i in range(40) if i != 5], "bad rows are never scored"
    assert set(rejects["model_version"]) == {1} and set(rejects["run_key"]) == {"w1"}


def test_nulls_are_imputed_by_default_as_in_training(make_scoring) -> None:
    s = make_scoring("table")
    s.promote(1)
    assert s.frame["num"].isna().sum() == 1
    result = s.score()
    assert (result["scored"], result["rejected"]) == (40, 0)


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_crash_mid_window_leaves_the_window_as_it_was(make_scoring, monkeypatch, output: str) -> None:
    s = make_scoring(output, n=2_500, chunk_rows=1_000)
    s.promote(1)
    s.score()
    before = s.predictions().sort_values("id").reset_index(drop=True)
    s.promote(2)  # the re-run would replace every row of the window with v2's
    calls = {"n": 0}
    real = batch_score.predict

    def fail_on_third_chunk(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(batch_score, "predict", fail_on_third_chunk)
    with pytest.raises(RuntimeError, match="worker lost"):
        s.score()

    assert calls["n"] == 3, "two chunks were written before the failure"
    pd.testing.assert_frame_equal(s.predictions().sort_values("id").reset_index(drop=True), before)
    monkeypatch.setattr(batch_score, "predict", real)
    assert s.score()["scored"] == 2_500
    assert set(s.predictions()["model_version"]) == {2}


KILL_WORKER = """
import sys, time
from pathlib import Path
from mlpipe.stages import batch_score
calls = {"n": 0}
real = batch_score.predict
def park_on_third_chunk(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:
        Path(sys.argv[1]).write_text("parked")
        time.sleep(600)
    return real(*args, **kwargs)
batch_score.predict = park_on_third_chunk
exec(sys.argv[2])
"""


def test_sigkill_mid_window_commits_nothing(make_scoring, tmp_path: Path) -> None:
    s = make_scoring("table", n=2_500, chunk_rows=1_000)
    s.promote(1)
    ready = tmp_path / "ready"
    call = (
        "import sqlalchemy as sa\n"
        "from datetime import datetime\n"
        "from mlpipe.registry import Registry\n"
        "from mlpipe.spec import load_spec\n"
        "from mlpipe.storage import LocalStore\n"
        f"engine = sa.create_engine('sqlite:///{s.db}')\n"
        f"batch_score.score_window(load_spec('{s.loaded.path}'), LocalStore('{s.store.root}'), "
        f"Registry.from_url('sqlite:///{tmp_path / 'registry.db'}'), engine, engine, run_id='r', run_key='w1', "
        f"as_of=datetime.fromisoformat('{AS_OF.isoformat()}'))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", KILL_WORKER, str(ready), call], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the scoring child exited before it parked"
            assert time.monotonic() < deadline, "the scoring child never reached its third chunk"
            time.sleep(0.1)
        # Two chunks are inserted, uncommitted, in the child's open transaction.
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)

    assert s.predictions().empty, "nothing of the killed window is visible"
    assert s.score()["scored"] == 2_500
    assert len(s.predictions()) == 2_500


def test_table_output_on_postgresql(make_scoring, pg_url: str) -> None:
    s = make_scoring("table", target_url=pg_url, table="scores.tiny_predictions")
    with s.target.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA IF NOT EXISTS scores"))
    s.promote(1)
    assert s.score()["scored"] == 40
    assert s.score()["scored"] == 40
    got = pd.read_sql(sa.text("SELECT * FROM scores.tiny_predictions"), s.target)
    assert len(got) == 40 and got["id"].is_unique
    with pytest.raises(sa.exc.IntegrityError), s.target.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO scores.tiny_predictions (id, model_version, prediction, score, scored_at, run_key) "
                "VALUES (0, 1, 1, 0.5, now(), 'other')"
            )
        )


@pytest.mark.parametrize("key", ["id", "code"])
def test_mysql_source_and_predictions_table(
    include_tree, make_spec, make_frame, tmp_path, mysql_url: str, key: str
) -> None:
    """The score DAG on MariaDB: the window read from a MySQL source, predictions written back beside it."""
    spec = make_spec(score={"key": key, "output": "table", "table": f"tiny_predictions_{key}"})
    sql = "SELECT id, code, ts, cat, num, y FROM flights WHERE ts < :as_of ORDER BY ts, id\n"
    frame = make_frame("binary", 40).assign(code=[f"k{i:03d}" for i in range(40)])
    s = Scoring(tmp_path, load_spec(include_tree(spec, sql=sql)), frame, mysql_url)
    s.source = s.target
    frame.to_sql("flights", s.target, if_exists="replace", index=False)
    s.promote(1)
    assert s.score()["scored"] == 40
    assert s.score()["scored"] == 40, "a re-run replaces its window"
    got = s.predictions()
    assert len(got) == 40 and got[key].is_unique
    assert pd.to_datetime(got["scored_at"], utc=True).eq(pd.Timestamp(AS_OF)).all()
    with pytest.raises(sa.exc.IntegrityError), s.target.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO tiny_predictions_{key} ({key}, model_version, prediction, score, scored_at, run_key) "
                "VALUES (:key, 1, 1, 0.5, now(), 'other')"
            ),
            {"key": got[key].iloc[0].item() if key == "id" else got[key].iloc[0]},
        )


def test_parquet_windows_in_an_s3_store(make_scoring, s3_endpoint: str, monkeypatch) -> None:
    from conftest import make_s3_client

    client = make_s3_client(s3_endpoint)
    bucket = f"mlpipe-score-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    s = make_scoring("parquet", store=S3Store(bucket, "mlpipe", client))
    s.promote(1)
    assert s.score()["scored"] == 40 and s.score()["scored"] == 40, "a re-run replaces its window"
    assert sorted(s.predictions()["id"]) == list(range(40))

    monkeypatch.setattr(batch_score, "predict", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("lost")))
    with pytest.raises(RuntimeError, match="lost"):
        s.score()
    assert sorted(s.predictions()["id"]) == list(range(40)), "the committed attempt still counts"
    objects = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="mlpipe/tiny/predictions/")["Contents"]]
    attempts = {k.split("/")[4] for k in objects if not k.endswith("manifest.json")}
    assert len(attempts) == 1, f"one attempt's files per window, the earlier ones removed: {objects}"


def test_tampered_champion_is_refused_before_loading(make_scoring) -> None:
    s = make_scoring("table")
    s.promote(1)
    champion = s.registry.champion("tiny")
    s.store.path(champion.artifact_key).write_bytes(b"not the model that was registered")
    with pytest.raises(ArtifactIntegrityError, match="does not match its recorded sha256"):
        s.score()
    assert s.predictions().empty


def test_a_query_without_the_key_or_a_feature_fails_naming_them(make_scoring, tmp_path: Path) -> None:
    (tmp_path / "include" / "sql").mkdir(parents=True)
    (tmp_path / "include" / "sql" / "rows.sql").write_text("SELECT ts, cat FROM flights WHERE ts < :as_of\n")
    s = make_scoring("table", query="rows.sql")
    s.promote(1)
    with pytest.raises(FeatureError, match=r"rows.sql returns no column\(s\) \['id', 'num'\]"):
        s.score()


def test_no_champion_scores_nothing(make_scoring) -> None:
    s = make_scoring("table")
    result = s.score()
    assert result["status"] == "no_champion" and result["scored"] == 0
    assert s.predictions().empty


@pytest.mark.parametrize("kind", ["int", "str"])
def test_keyset_agrees_with_a_set(kind: str) -> None:
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 5_000, size=rng.integers(1, 400)) for _ in range(60)]
    if kind == "str":
        batches = [np.asarray([f"k{v}" for v in b], dtype=object) for b in batches]
    keys, reference = KeySet(), set()
    for batch in batches:
        probe = batch[::-1]
        assert keys.contains(probe).tolist() == [v in reference for v in probe]
        keys.add(batch)
        reference.update(batch.tolist())
    assert len(keys) == len(reference) and len(keys._runs) <= 12
