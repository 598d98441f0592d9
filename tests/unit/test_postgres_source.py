"""A SQL source on a real PostgreSQL: as_of against each kind of time column, type mapping, the watch's
count and the monitor's window.

The database runs with ``timezone = 'America/New_York'``, as a server outside UTC would: mlpipe must
still compare and read times in UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from mlpipe.registry import decode_watermark
from mlpipe.sources.sql import count_new_rows
from mlpipe.spec import LoadedSpec, load_spec
from mlpipe.stages.extract import extract_snapshot, read_snapshot
from mlpipe.stages.monitor import read_window
from mlpipe.storage import LocalStore
from unit.conftest import spec_dict, write_include

ROWS = 2500
START = datetime(2013, 1, 1)
# Rows before this one have NULL in the nullable columns: more than the first chunk of 1000.
NULL_BEFORE = 1200
SERVER_ZONE = "America/New_York"


def row(i: int) -> dict:
    ts = START + timedelta(hours=i)
    known = i >= NULL_BEFORE
    return {
        "id": i,
        "ts": ts,
        "tz": ts.replace(tzinfo=UTC),
        "tx": ts.strftime("%Y-%m-%d %H:%M:%S"),
        "d": ts.date(),
        "n": f"{i}.25" if known else None,
        "b": (i % 2 == 0) if known else None,
        "r": i / 4 if known else None,
        "small": i % 300 if known else None,
        "big": 10**12 + i,
        "u": f"00000000-0000-0000-0000-{i:012d}",
        "cat": f"c{i % 3}",
        "y": i % 2,
    }


@pytest.fixture(scope="module")
def engine(pg_url: str) -> Iterator[sa.Engine]:
    eng = sa.create_engine(pg_url)
    with eng.begin() as conn:
        database = conn.exec_driver_sql("SELECT current_database()").scalar()
        conn.exec_driver_sql(f"ALTER DATABASE \"{database}\" SET timezone TO '{SERVER_ZONE}'")
        conn.execute(
            sa.text(
                "CREATE TABLE flights (id integer PRIMARY KEY, ts timestamp, tz timestamptz, tx text, d date, "
                "n numeric(12, 2), b boolean, r real, small smallint, big bigint, u uuid, cat text, y integer)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO flights VALUES (:id, :ts, :tz, :tx, :d, CAST(:n AS numeric), :b, :r, :small, :big, "
                "CAST(:u AS uuid), :cat, :y)"
            ),
            [row(i) for i in range(ROWS)],
        )
    eng.dispose()  # new connections pick up the database's time zone
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SHOW timezone").scalar() == SERVER_ZONE
    yield eng
    eng.dispose()


def loaded_for(include_tree, make_spec, sql: str, **spec: object) -> LoadedSpec:
    return load_spec(include_tree(make_spec(**spec), sql=sql))


def as_of_after(rows: int) -> datetime:
    """The as_of that lets exactly the first ``rows`` rows through on a timestamp column."""
    return (START + timedelta(hours=rows)).replace(tzinfo=UTC)


class TestAsOf:
    """``WHERE <column> < :as_of`` on each kind of column a time can live in."""

    @pytest.mark.parametrize(
        ("column", "rows"),
        [
            pytest.param("ts", 1500, id="timestamp"),
            pytest.param("tz", 1500, id="timestamptz-server-not-in-utc"),
            pytest.param("tx", 1500, id="iso-text"),
            # A date column holds whole days: the day as_of falls in (12:00 here) is not over, so it is left out.
            pytest.param("d", 1500 - 12, id="date"),
        ],
    )
    def test_as_of_keeps_the_rows_before_it(
        self, include_tree, make_spec, engine: sa.Engine, tmp_path, column: str, rows: int
    ) -> None:
        sql = f"SELECT id, ts, cat, r AS num, y FROM flights WHERE {column} < :as_of ORDER BY id\n"
        loaded = loaded_for(include_tree, make_spec, sql)
        store = LocalStore(tmp_path / "store")

        snap = extract_snapshot(loaded, engine, store, run_key="r1", as_of=as_of_after(1500))

        assert snap.rows == rows
        assert read_snapshot(store, snap.key)["id"].max() == rows - 1

    def test_as_of_in_another_zone_means_the_same_instant(
        self, include_tree, make_spec, engine: sa.Engine, tmp_path
    ) -> None:
        sql = "SELECT id, ts, cat, r AS num, y FROM flights WHERE tz < :as_of ORDER BY id\n"
        loaded = loaded_for(include_tree, make_spec, sql)
        as_of = as_of_after(10).astimezone(ZoneInfo("Asia/Tokyo"))

        snap = extract_snapshot(loaded, engine, LocalStore(tmp_path / "store"), run_key="r1", as_of=as_of)

        assert snap.rows == 10


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory, engine: sa.Engine):
    """Every column of the table, extracted in chunks of 1000 rows."""
    root = tmp_path_factory.mktemp("types")
    sql = "SELECT id, ts, tz, tx, d, n, b, r, small, big, u, cat, y FROM flights WHERE ts < :as_of ORDER BY id\n"
    spec = spec_dict(features={"numeric": ["n", "r"], "categorical": ["cat"]}, split={"method": "random"})
    loaded = load_spec(write_include(root / "include", spec, sql=sql))
    store = LocalStore(root / "store")
    snap = extract_snapshot(loaded, engine, store, run_key="r1", as_of=datetime(2014, 1, 1, tzinfo=UTC))
    return snap, store


class TestTypes:
    def test_each_postgresql_type_maps_to_its_arrow_type(self, extracted) -> None:
        snap, store = extracted
        schema = pq.read_schema(store.path(snap.key))
        expected = {
            "id": pa.int64(),
            "ts": pa.timestamp("us"),
            "tz": pa.timestamp("us", tz="UTC"),
            "tx": pa.string(),
            "d": pa.date32(),
            "n": pa.float64(),  # numeric: a float, as the features stage reads numbers
            "b": pa.bool_(),
            "r": pa.float64(),
            "big": pa.int64(),
            "u": pa.string(),  # uuid: its text form
            "cat": pa.string(),
            "y": pa.int64(),
        }
        assert {name: schema.field(name).type for name in expected} == expected
        # All NULL in the first chunk and typed by no spec: typed by the later values (pandas reads
        # a nullable integer column as floats).
        assert pa.types.is_floating(schema.field("small").type)
        assert pq.read_metadata(store.path(snap.key)).num_row_groups == 3

    def test_values_survive_the_trip(self, extracted) -> None:
        snap, store = extracted
        frame = read_snapshot(store, snap.key, snap.sha256).set_index("id")
        assert snap.rows == ROWS
        last = frame.loc[ROWS - 1]
        expected = row(ROWS - 1)
        # timestamptz comes back in UTC, not in the server's zone.
        assert last["tz"].isoformat() == expected["tz"].isoformat()
        assert last["ts"].to_pydatetime() == expected["ts"]
        assert last["tx"] == expected["tx"]
        assert last["d"] == expected["d"]
        assert last["n"] == pytest.approx(ROWS - 1 + 0.25)
        assert bool(last["b"]) is expected["b"]
        assert last["big"] == 10**12 + ROWS - 1
        assert last["u"] == expected["u"]
        assert frame.loc[: NULL_BEFORE - 1, ["n", "b", "r", "small"]].isna().all().all()


class TestWatchCount:
    @pytest.mark.parametrize("column", ["ts", "tz", "tx", "id"])
    def test_counts_past_a_watermark_kept_in_the_registry(self, engine: sa.Engine, column: str) -> None:
        from mlpipe.registry import encode_watermark

        everything = count_new_rows(engine, table="flights", column=column, watermark=None)
        assert everything.rows == ROWS
        # The watermark round-trips through the registry's text encoding, then binds again.
        stored = decode_watermark(encode_watermark(_value_at(engine, column, 1999)))
        # Every value is unique here: announcing up to row 1999 announced its one row at that value.
        later = count_new_rows(engine, table="flights", column=column, watermark=stored, at_watermark=1)
        assert later.rows == ROWS - 2000
        assert decode_watermark(later.found().watermark_to) == everything.watermark_to
        assert later.at_watermark_to == 1
        nothing = count_new_rows(
            engine, table="flights", column=column, watermark=later.watermark_to, at_watermark=later.at_watermark_to
        )
        assert (nothing.rows, nothing.watermark_to) == (0, later.watermark_to)


def _value_at(engine: sa.Engine, column: str, row_id: int):
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT {column} FROM flights WHERE id = :id"), {"id": row_id}).scalar()


class TestMonitorWindow:
    @pytest.mark.parametrize("column", ["ts", "tz", "tx"])
    def test_the_newest_days_by_the_watermark_column(
        self, include_tree, make_spec, engine: sa.Engine, column: str
    ) -> None:
        sql = f"SELECT id, {column}, cat, y FROM flights WHERE {column} < :as_of ORDER BY id\n"
        spec = make_spec(
            source={"query": "tiny.sql", "table": "flights", "watermark_column": column},
            features={"numeric": [], "categorical": ["cat"]},
            split={"method": "random"},
            monitor={"window_days": 2},
        )
        loaded = load_spec(include_tree(spec, sql=sql))

        frame, start, end = read_window(loaded, engine, days=2)

        # The newest row is id 2499 at START + 2499 h; two days back from it, 48 + 1 rows.
        assert sorted(frame["id"]) == list(range(ROWS - 49, ROWS))
        newest = START + timedelta(hours=ROWS - 1)
        assert (start, end) == (str(newest - timedelta(days=2)), str(newest))
