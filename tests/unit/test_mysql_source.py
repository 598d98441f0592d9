"""A SQL source on a real MariaDB (MySQL) through the MySQL provider's hook: as_of against each kind of time
column, type mapping, the watch's count and the monitor's window, and memory that does not grow with the table.

The engine's sessions start in time zone -05:00 (``init_command``), as a server outside UTC would:
mlpipe must still compare and read times in UTC (``utc_session``). The database URL is what
``MySqlHook`` makes of an Airflow Connection (see ``new_mysql_database`` in conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from mlpipe.registry import decode_watermark, encode_watermark
from mlpipe.sources.sql import count_new_rows
from mlpipe.spec import load_spec
from mlpipe.stages.extract import extract_snapshot, read_snapshot
from mlpipe.stages.monitor import read_window
from mlpipe.storage import LocalStore
from unit.conftest import spec_dict, write_include
from unit.test_postgres_source import _value_at, as_of_after, loaded_for

ROWS = 2500
START = datetime(2013, 1, 1)
# Rows before this one have NULL in the nullable columns: more than the first chunk of 1000.
NULL_BEFORE = 1200
SESSION_ZONE = "-05:00"


def row(i: int) -> dict:
    ts = START + timedelta(hours=i)
    known = i >= NULL_BEFORE
    return {
        "id": i,
        "ts": ts,
        "tz": ts,  # TIMESTAMP: written in a UTC session, so the value is the UTC instant
        "tx": ts.strftime("%Y-%m-%d %H:%M:%S"),
        "d": ts.date(),
        "n": f"{i}.25" if known else None,
        "r": i / 4 if known else None,
        "small": i % 300 if known else None,
        "big": 10**12 + i,
        "u": f"00000000-0000-0000-0000-{i:012d}",
        "cat": f"c{i % 3}",
        "y": i % 2,
    }


@pytest.fixture(scope="module")
def engine(mysql_url: str) -> Iterator[sa.Engine]:
    with sa.create_engine(mysql_url).begin() as conn:
        conn.exec_driver_sql("SET time_zone = '+00:00'")
        conn.execute(
            sa.text(
                "CREATE TABLE flights (id integer PRIMARY KEY, ts datetime, tz timestamp NULL, tx varchar(19), "
                "d date, n decimal(12, 2), r float, small smallint, big bigint, u uuid, cat text, y integer, "
                "INDEX ix_ts (ts))"
            )
        )
        conn.execute(
            sa.text("INSERT INTO flights VALUES (:id, :ts, :tz, :tx, :d, :n, :r, :small, :big, :u, :cat, :y)"),
            [row(i) for i in range(ROWS)],
        )
    eng = sa.create_engine(mysql_url, connect_args={"init_command": f"SET time_zone = '{SESSION_ZONE}'"})
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SELECT @@session.time_zone").scalar() == SESSION_ZONE
    yield eng
    eng.dispose()


class TestAsOf:
    """``WHERE <column> < :as_of`` on each kind of column a time can live in."""

    @pytest.mark.parametrize(
        ("condition", "rows"),
        [
            pytest.param("ts < :as_of", 1500, id="datetime"),
            pytest.param("tz < :as_of", 1500, id="timestamp-session-not-in-utc"),
            pytest.param("tx < :as_of", 1500, id="iso-text"),
            # A date column holds whole days: the day as_of falls in (12:00 here) is not over, so it is left
            # out, once as_of is cast to its day (docs/spec.md: ":as_of per database").
            pytest.param("d < DATE(:as_of)", 1500 - 12, id="date"),
        ],
    )
    def test_as_of_keeps_the_rows_before_it(
        self, include_tree, make_spec, engine: sa.Engine, tmp_path, condition: str, rows: int
    ) -> None:
        sql = f"SELECT id, ts, cat, r AS num, y FROM flights WHERE {condition} ORDER BY id\n"
        loaded = loaded_for(include_tree, make_spec, sql)
        store = LocalStore(tmp_path / "store")

        snap = extract_snapshot(loaded, engine, store, run_key="r1", as_of=as_of_after(1500))

        assert snap.rows == rows
        assert read_snapshot(store, snap.key)["id"].max() == rows - 1

    def test_a_date_column_against_the_bare_as_of_takes_in_the_whole_day(
        self, include_tree, make_spec, engine: sa.Engine, tmp_path
    ) -> None:
        """MySQL compares DATE with a DATETIME as the day's midnight: why docs/spec.md says DATE(:as_of)."""
        loaded = loaded_for(include_tree, make_spec, "SELECT id, ts, cat, r AS num, y FROM flights WHERE d < :as_of\n")
        snap = extract_snapshot(loaded, engine, LocalStore(tmp_path / "store"), run_key="r1", as_of=as_of_after(1500))
        assert snap.rows == 1500 - 12 + 24  # rows up to 23:00 of as_of's day, 12 h past as_of

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
    sql = "SELECT id, ts, tz, tx, d, n, r, small, big, u, cat, y FROM flights WHERE ts < :as_of ORDER BY id\n"
    spec = spec_dict(features={"numeric": ["n", "r"], "categorical": ["cat"]}, split={"method": "random"})
    loaded = load_spec(write_include(root / "include", spec, sql=sql))
    store = LocalStore(root / "store")
    snap = extract_snapshot(loaded, engine, store, run_key="r1", as_of=datetime(2014, 1, 1, tzinfo=UTC))
    return snap, store


class TestTypes:
    def test_each_mysql_type_maps_to_its_arrow_type(self, extracted) -> None:
        snap, store = extracted
        schema = pq.read_schema(store.path(snap.key))
        expected = {
            "id": pa.int64(),
            "ts": pa.timestamp("us"),
            "tz": pa.timestamp("us"),  # TIMESTAMP: naive, read in the UTC session
            "tx": pa.string(),
            "d": pa.date32(),
            "n": pa.float64(),  # decimal: a float, as the features stage reads numbers
            "r": pa.float64(),
            "big": pa.int64(),
            "u": pa.string(),  # uuid: its text form
            "cat": pa.string(),
            "y": pa.int64(),
        }
        assert {name: schema.field(name).type for name in expected} == expected
        # All NULL in the first chunk and typed by no spec: typed by the later values.
        assert pa.types.is_floating(schema.field("small").type)
        assert pq.read_metadata(store.path(snap.key)).num_row_groups == 3

    def test_values_survive_the_trip(self, extracted) -> None:
        snap, store = extracted
        frame = read_snapshot(store, snap.key, snap.sha256).set_index("id")
        assert snap.rows == ROWS
        last = frame.loc[ROWS - 1]
        expected = row(ROWS - 1)
        # TIMESTAMP comes back as the UTC instant, not in the session's -05:00.
        assert last["tz"].to_pydatetime() == expected["tz"]
        assert last["ts"].to_pydatetime() == expected["ts"]
        assert last["tx"] == expected["tx"]
        assert last["d"] == expected["d"]
        assert last["n"] == pytest.approx(ROWS - 1 + 0.25)
        assert last["big"] == 10**12 + ROWS - 1
        assert last["u"] == expected["u"]
        assert frame.loc[: NULL_BEFORE - 1, ["n", "r", "small"]].isna().all().all()


class TestWatchCount:
    @pytest.mark.parametrize("column", ["ts", "tz", "tx", "id"])
    def test_counts_past_a_watermark_kept_in_the_registry(self, engine: sa.Engine, column: str) -> None:
        everything = count_new_rows(engine, table="flights", column=column, watermark=None)
        assert everything.rows == ROWS
        # The watermark round-trips through the registry's text encoding, then binds again.
        stored = decode_watermark(encode_watermark(_value_at(engine, column, 1999)))
        later = count_new_rows(engine, table="flights", column=column, watermark=stored, at_watermark=1)
        assert later.rows == ROWS - 2000
        assert decode_watermark(later.found().watermark_to) == everything.watermark_to
        assert later.at_watermark_to == 1
        nothing = count_new_rows(
            engine, table="flights", column=column, watermark=later.watermark_to, at_watermark=later.at_watermark_to
        )
        assert (nothing.rows, nothing.watermark_to) == (0, later.watermark_to)


class TestMonitorWindow:
    @pytest.mark.parametrize("column", ["ts", "tx"])
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


# -- memory: the peak does not grow with the table ---------------------------------------------------

SMALL_ROWS, DOUBLINGS = 20_000, 3  # 20,000 rows, then 160,000 (~200 bytes a row)
MEMORY_CHUNK_ROWS = 10_000
# Peak RSS of the 160,000-row extraction over the 20,000-row one. Streamed, it measures 1.00 (191 MiB
# both); the whole table in one chunk (the control below) measured 2.46x at 320,000 rows (470 MiB).
MEMORY_GROWTH_LIMIT = 1.25

# One child, three extractions in a row; VmHWM (the peak so far) after each. The peak only rises, so
# the 160,000 rows streamed must leave it near the 20,000 rows' peak, and the control raises it.
MEMORY_CHILD = """
import json, sys
from datetime import datetime
import sqlalchemy as sa
from bench import self_peak_rss_kib
from mlpipe.spec import load_spec
from mlpipe.stages.extract import extract_snapshot
from mlpipe.storage import LocalStore
url, store = sys.argv[1:3]
engine = sa.create_engine(url)
for i, spec_path in enumerate(sys.argv[3:]):
    snap = extract_snapshot(load_spec(spec_path), engine, LocalStore(store), run_key=str(i), as_of=datetime(2030, 1, 1))
    print(json.dumps({"rows": snap.rows, "peak_rss_kib": self_peak_rss_kib()}), flush=True)
engine.dispose()
"""


@pytest.fixture(scope="module")
def wide_tables(engine: sa.Engine) -> dict[str, int]:
    """``wide_small`` (20,000 rows) and ``wide_large`` (8 times as many), built inside MariaDB."""
    columns = "id integer PRIMARY KEY, ts datetime, cat varchar(8), num double, pad varchar(200), y integer"
    with engine.begin() as conn:
        for table in ("wide_small", "wide_large"):
            conn.execute(sa.text(f"CREATE TABLE {table} ({columns})"))
        conn.execute(
            sa.text("INSERT INTO wide_small VALUES (:id, :ts, :cat, :num, :pad, :y)"),
            [
                {
                    "id": i,
                    "ts": START + timedelta(minutes=i),
                    "cat": f"c{i % 5}",
                    "num": i / 7,
                    "pad": f"{i:0150d}",
                    "y": i % 2,
                }
                for i in range(SMALL_ROWS)
            ],
        )
        conn.execute(sa.text("INSERT INTO wide_large SELECT * FROM wide_small"))
        for k in range(DOUBLINGS):
            shift = SMALL_ROWS * 2**k
            conn.execute(
                sa.text(
                    f"INSERT INTO wide_large SELECT id + {shift}, ts + INTERVAL {shift} MINUTE, cat, num, pad, y "
                    "FROM wide_large"
                )
            )
    return {"wide_small": SMALL_ROWS, "wide_large": SMALL_ROWS * 2**DOUBLINGS}


def _extract_in_child(tmp_path, mysql_url: str, runs: list[tuple[str, int]]) -> list[dict]:
    """Extract each (table, chunk_rows) in turn in one child process; its rows and peak RSS after each."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    specs = []
    for table, chunk_rows in runs:
        spec = spec_dict(
            source={"query": "tiny.sql", "chunk_rows": chunk_rows},
            features={"numeric": ["num"], "categorical": ["cat"]},
            split={"method": "random"},
        )
        sql = f"SELECT * FROM {table} WHERE ts < :as_of\n"
        specs.append(str(write_include(tmp_path / f"include-{table}-{chunk_rows}", spec, sql=sql)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, mysql_url, str(tmp_path / "store"), *specs],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.strip().splitlines()]


def test_peak_memory_does_not_grow_with_the_table(wide_tables, mysql_url: str, tmp_path) -> None:
    small_rows, large_rows = wide_tables["wide_small"], wide_tables["wide_large"]
    small, large, control = _extract_in_child(
        tmp_path,
        mysql_url,
        [("wide_small", MEMORY_CHUNK_ROWS), ("wide_large", MEMORY_CHUNK_ROWS), ("wide_large", large_rows)],
    )

    assert (small["rows"], large["rows"], control["rows"]) == (small_rows, large_rows, large_rows)
    growth = large["peak_rss_kib"] / small["peak_rss_kib"]
    assert growth < MEMORY_GROWTH_LIMIT, (
        f"peak RSS {large['peak_rss_kib'] >> 10} MiB at {large_rows:,} rows vs {small['peak_rss_kib'] >> 10} MiB "
        f"at {small_rows:,} ({growth:.2f}x, limit {MEMORY_GROWTH_LIMIT}x): extraction from MySQL no longer streams"
    )
    # The bound can tell: the same rows in one chunk (held at once) raise the peak past it.
    assert control["peak_rss_kib"] / small["peak_rss_kib"] > MEMORY_GROWTH_LIMIT, (small, large, control)
