"""Tests of mlpipe.demo: seeding and feeding the real flights, and the demo spec's SQL on a few hand-made ones."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mlpipe import config
from mlpipe.demo import (
    EXTRACT_COLUMNS,
    FLIGHTS_COLUMNS,
    FLIGHTS_ROWS,
    SHIPPED_DB,
    _table_rows,
    feed_flights,
    seed_flights,
    shipped_flights,
    write_flights_sqlite,
)
from mlpipe.errors import MlpipeError
from mlpipe.spec import load_spec
from mlpipe.stages.extract import extract_snapshot, read_snapshot
from mlpipe.storage import LocalStore


def flights(n: int = 6) -> pd.DataFrame:
    """``n`` flights an hour apart: on time, late, cancelled (no dep_time), diverted (no arr_delay)."""
    rows = []
    arr_delays = [-5.0, 30.0, None, None, 14.0, 15.0]
    dep_times = [600.0, 700.0, None, 900.0, 1000.0, 1100.0]
    for i in range(n):
        rows.append(
            {
                "id": i + 1, "year": 2013, "month": 1, "day": 1, "dep_time": dep_times[i % 6],
                "sched_dep_time": 600 + 100 * i, "dep_delay": 0.0, "arr_time": 900.0, "sched_arr_time": 900,
                "arr_delay": arr_delays[i % 6], "carrier": "UA", "flight": 100 + i, "tailnum": "N1",
                "origin": "EWR", "dest": "IAH", "air_time": 200.0, "distance": 1400, "hour": 6 + i, "minute": 0,
                "time_hour": f"2013-01-01 {11 + i:02d}:00:00",
            }
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(FLIGHTS_COLUMNS))


def test_write_flights_sqlite_publishes_one_complete_file(tmp_path: Path) -> None:
    db = tmp_path / "home" / "source.db"

    write_flights_sqlite(db, flights())
    write_flights_sqlite(db, flights(4))  # replaces, never appends

    assert _table_rows(db, "flights") == 4
    assert sorted(p.name for p in db.parent.iterdir()) == ["source.db"]  # no temp file left
    with sqlite3.connect(db) as conn:
        indexes = [r[1] for r in conn.execute("PRAGMA index_list('flights')")]
    conn.close()
    assert "ix_flights_time_hour" in indexes


def test_table_rows_of_a_missing_or_foreign_file(tmp_path: Path) -> None:
    assert _table_rows(tmp_path / "absent.db", "flights") is None
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all, just some bytes" * 10)
    assert _table_rows(tmp_path / "junk.db", "flights") is None


def test_seed_keeps_an_existing_table(tmp_path: Path) -> None:
    write_flights_sqlite(tmp_path / "source.db", flights())

    assert seed_flights(tmp_path) == (tmp_path / "source.db", 6, False)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole year as ``shipped_flights`` builds it, once for the module (the pandas step)."""
    home = tmp_path_factory.mktemp("shipped")
    path = shipped_flights(home)
    assert _table_rows(path, "flights") == FLIGHTS_ROWS
    return path


@pytest.fixture
def home(tmp_path: Path, shipped: Path) -> Path:
    shutil.copyfile(shipped, tmp_path / SHIPPED_DB)
    return tmp_path


def flights_in(db: Path) -> tuple[int, int, str | None, str | None]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT id), min(time_hour), max(time_hour) FROM flights"
        ).fetchone()


def test_seed_starts_with_january_and_february(home: Path, flights_frame: pd.DataFrame) -> None:
    db, rows, created = seed_flights(home)
    early = flights_frame[flights_frame["time_hour"] < "2013-03-01"]
    assert created and rows == len(early) == 51_801
    assert flights_in(db) == (len(early), len(early), early["time_hour"].min(), early["time_hour"].max())
    with closing(sqlite3.connect(db)) as conn:
        assert "ix_flights_time_hour" in [r[1] for r in conn.execute("PRAGMA index_list('flights')")]
        copied = pd.read_sql("SELECT * FROM flights ORDER BY id", conn)
    expected = early.sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(copied, expected, check_dtype=False)
    assert sorted(p.name for p in home.iterdir()) == [SHIPPED_DB, "source.db"], "no temp file left"


def test_seed_all_is_the_whole_year(home: Path) -> None:
    db, rows, created = seed_flights(home, until=None)
    assert created and rows == FLIGHTS_ROWS and flights_in(db)[:2] == (FLIGHTS_ROWS, FLIGHTS_ROWS)


def test_feed_appends_the_next_days_in_order_without_duplicates(home: Path, flights_frame: pd.DataFrame) -> None:
    db, rows, _ = seed_flights(home)
    th = flights_frame["time_hour"]

    added, newest = feed_flights(home, days=2)
    window = flights_frame[(th >= "2013-03-01") & (th < "2013-03-03")]
    assert added == len(window) and newest == window["time_hour"].max()
    assert flights_in(db) == (rows + added, rows + added, th.min(), newest)

    assert seed_flights(home)[2] is False, "seeding again must not reset fed data"
    assert flights_in(db)[0] == rows + added
    added_all, _ = feed_flights(home, days=400)
    assert rows + added + added_all == FLIGHTS_ROWS
    assert feed_flights(home, days=1) == (0, th.max())
    assert seed_flights(home, force=True)[1:] == (rows, True), "--force starts over"


def test_feed_needs_no_pandas_once_the_year_is_shipped(home: Path) -> None:
    """Feeding is a SQL copy between two SQLite files: cheap enough to run by the day."""
    seed_flights(home)
    probe = (
        "import sys; from pathlib import Path; from mlpipe.demo import feed_flights; "
        "added, newest = feed_flights(Path(sys.argv[1]), days=3); "
        "print(added, newest, 'pandas' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(home)], capture_output=True, text=True, check=True, timeout=120
    )
    added, day, _hour, pandas_loaded = done.stdout.split()
    assert int(added) > 2_000 and day == "2013-03-03" and pandas_loaded == "False", done.stdout


def test_a_missing_or_partial_shipped_year_is_rebuilt(tmp_path: Path, shipped: Path) -> None:
    partial = tmp_path / SHIPPED_DB
    shutil.copyfile(shipped, partial)
    with closing(sqlite3.connect(partial)) as conn, conn:
        conn.execute("DELETE FROM flights WHERE time_hour >= '2013-12-01'")
    seed_flights(tmp_path)
    assert _table_rows(partial, "flights") == FLIGHTS_ROWS


def test_feed_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(MlpipeError, match="demo seed"):
        feed_flights(tmp_path, days=1)
    with pytest.raises(MlpipeError, match="--days"):
        feed_flights(tmp_path, days=0)
    with pytest.raises(MlpipeError, match="--until"):
        seed_flights(tmp_path, until="March")


def test_demo_sql_labels_cancelled_and_diverted_flights_late(tmp_path: Path) -> None:
    db = tmp_path / "source.db"
    write_flights_sqlite(db, flights())
    loaded = load_spec(config.REPO_ROOT / "include" / "pipelines" / "flights_delay.yaml")
    engine = sa.create_engine(f"sqlite:///{db}")
    store = LocalStore(tmp_path / "artifacts")

    snap = extract_snapshot(loaded, engine, store, run_key="r1", as_of=datetime(2013, 1, 1, 16, 0, tzinfo=UTC))
    engine.dispose()

    frame = read_snapshot(store, snap.key, snap.sha256)
    assert snap.columns == list(EXTRACT_COLUMNS)
    # as_of 16:00 lets the flights of 11:00 to 15:00 through; 16:00 itself is not before as_of.
    assert frame["id"].tolist() == [1, 2, 3, 4, 5]
    assert frame["is_late"].tolist() == [0, 1, 1, 1, 0]
