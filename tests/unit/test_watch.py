"""New-row counting for the watch on SQLite and PostgreSQL: correct figures, late rows at the watermark
counted once, one query per check, clear errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.registry import Registry, decode_watermark
from mlpipe.sources.sql import NewRows, count_new_rows

START = datetime(2013, 1, 1)


class Source:
    """A table ``events`` whose ``at`` column repeats (like ``time_hour``): one value per hour, 100 hours."""

    def __init__(self, engine: sa.Engine, table: str, timestamps: bool) -> None:
        self.engine = engine
        self.table = table
        self.timestamps = timestamps  # PostgreSQL TIMESTAMP, MySQL DATETIME; SQLite: ISO text, as the demo stores it

    def at(self, hour: int) -> Any:
        value = START + timedelta(hours=hour)
        return value if self.timestamps else value.isoformat(sep=" ")

    def insert(self, hours: list[int]) -> None:
        with self.engine.begin() as conn:
            first = conn.execute(sa.text(f"SELECT coalesce(max(id), 0) FROM {self.table}")).scalar()
            conn.execute(
                sa.text(f"INSERT INTO {self.table} (id, at) VALUES (:id, :at)"),
                [{"id": first + 1 + i, "at": self.at(h)} for i, h in enumerate(hours)],
            )

    def count(self, watermark: Any, at_watermark: int = 0) -> NewRows:
        return count_new_rows(
            self.engine, table=self.table, column="at", watermark=watermark, at_watermark=at_watermark
        )


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Source]:
    if request.param == "sqlite":
        engine, column = sa.create_engine(f"sqlite:///{tmp_path / 'src.db'}"), "TEXT"
    elif request.param == "postgresql":
        engine, column = sa.create_engine(request.getfixturevalue("pg_url")), "TIMESTAMP"
    else:
        engine, column = sa.create_engine(request.getfixturevalue("mysql_url")), "DATETIME"
    table = f"events_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, at {column})"))
        conn.execute(sa.text(f"CREATE INDEX ix_{table}_at ON {table} (at)"))
    src = Source(engine, table, timestamps=request.param != "sqlite")
    # Hours 0..24 hold 4 rows each: 100 rows, the newest value (hour 24) shared by 4 of them.
    src.insert([h for h in range(25) for _ in range(4)])
    yield src
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


def test_counts_rows_past_the_watermark(source: Source) -> None:
    everything = source.count(None)
    assert everything == NewRows(100, None, 0, source.at(24), 4)
    later = source.count(source.at(22), at_watermark=4)
    assert later == NewRows(8, source.at(22), 4, source.at(24), 4)
    none = source.count(source.at(24), at_watermark=4)
    assert none == NewRows(0, source.at(24), 4, source.at(24), 4), "nothing new keeps the watermark"
    assert decode_watermark(later.found().watermark_to) == source.at(24)


def test_late_rows_at_the_watermark_value_are_new_once(source: Source) -> None:
    source.insert([24, 24])  # two rows of the newest hour arrive after it was announced
    late = source.count(source.at(24), at_watermark=4)
    assert late == NewRows(2, source.at(24), 4, source.at(24), 6)
    # Once announced (the watermark now counts 6 rows at hour 24) they are not new again.
    assert source.count(source.at(24), at_watermark=6).rows == 0
    # Late rows at the watermark value and rows past it, together.
    source.insert([24, 25, 25, 26])
    both = source.count(source.at(24), at_watermark=6)
    assert both == NewRows(4, source.at(24), 6, source.at(26), 1)


def test_a_watermark_without_its_row_count_takes_every_row_at_its_value_as_announced(source: Source) -> None:
    """Watermarks kept before rows at their value were counted (rows_at_value NULL)."""
    assert source.count(source.at(24), at_watermark=None) == NewRows(0, source.at(24), None, source.at(24), None)
    source.insert([24, 25])  # the late row at the value is behind such a watermark; the new one is not
    assert source.count(source.at(24), at_watermark=None) == NewRows(1, source.at(24), None, source.at(25), 1)


def test_rows_below_the_watermark_and_deleted_rows_announce_nothing(source: Source) -> None:
    source.insert([3, 3])  # older than the watermark: behind it for good
    assert source.count(source.at(24), at_watermark=4).rows == 0
    with source.engine.begin() as conn:  # rows at the watermark value removed from the source
        at = sa.text(f"SELECT id FROM {source.table} WHERE at = :at ORDER BY id LIMIT 2")
        ids = conn.execute(at, {"at": source.at(24)}).scalars().all()
        conn.execute(sa.text(f"DELETE FROM {source.table} WHERE id IN ({', '.join(map(str, ids))})"))
    assert source.count(source.at(24), at_watermark=4) == NewRows(0, source.at(24), 4, source.at(24), 4)


def test_the_watch_never_announces_a_row_twice_through_the_registry(source: Source, tmp_path: Path) -> None:
    """Check, announce (compare-and-swap), repeat, with rows arriving in between: every row once."""
    registry = Registry.from_url(f"sqlite:///{tmp_path / 'registry.db'}")
    announced: list[int] = []

    def watch() -> int:
        mark = registry.watermark("p")
        found = source.count(mark.value, mark.rows_at_value)
        if found.rows:
            assert registry.advance_watermark(
                "p",
                expected=found.watermark_from,
                expected_at_value=found.at_watermark_from,
                new=found.watermark_to,
                new_at_value=found.at_watermark_to,
                rows=found.rows,
                run_id=f"w{len(announced)}",
            )
            announced.append(found.rows)
        return found.rows

    try:
        assert watch() == 100
        assert watch() == 0
        source.insert([24])  # late, at the watermark's value
        assert watch() == 1
        source.insert([24, 25, 3])  # one late at the value, one new, one older than the watermark
        assert watch() == 2
        assert watch() == 0
        mark = registry.watermark("p")
        assert (mark.value, mark.rows_at_value, mark.rows_seen) == (source.at(25), 1, 103)
        assert sum(announced) == 103  # the 104 rows minus the one behind the watermark
    finally:
        registry.dispose()


def test_one_query_per_check(source: Source) -> None:
    statements: list[str] = []
    sa.event.listen(source.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    source.count(source.at(2), at_watermark=4)
    source.count(None)
    assert len(statements) == 2
    assert all("count(" in s.lower() and "max(" in s.lower() for s in statements)


def test_a_bad_column_names_table_and_column(source: Source) -> None:
    with pytest.raises(ExtractError, match=rf"{source.table}\.missing"):
        count_new_rows(source.engine, table=source.table, column="missing", watermark=None)


def test_an_unreachable_database_stays_retryable() -> None:
    dead = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError):
        count_new_rows(dead, table="events", column="at", watermark=None)
