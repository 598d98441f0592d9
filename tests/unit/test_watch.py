"""New-row counting for the watch: correct figures, one query per check, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.registry import decode_watermark
from mlpipe.stages.watch import count_new_rows


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'src.db'}")
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT)"))
        conn.execute(
            sa.text("INSERT INTO events (id, at) VALUES (:id, :at)"),
            [{"id": i, "at": f"2013-01-{1 + i // 24:02d} {i % 24:02d}:00:00"} for i in range(100)],
        )
    yield eng
    eng.dispose()


def test_counts_rows_past_the_watermark(engine: sa.Engine) -> None:
    everything = count_new_rows(engine, table="events", column="at", watermark=None)
    assert (everything.rows, everything.watermark_to) == (100, "2013-01-05 03:00:00")
    later = count_new_rows(engine, table="events", column="at", watermark="2013-01-04 23:00:00")
    assert (later.rows, later.watermark_from, later.watermark_to) == (4, "2013-01-04 23:00:00", "2013-01-05 03:00:00")
    none = count_new_rows(engine, table="events", column="id", watermark=99)
    assert (none.rows, none.watermark_to) == (0, 99), "no new rows keeps the watermark"
    as_dict = later.as_dict()
    assert decode_watermark(as_dict["watermark_to"]) == "2013-01-05 03:00:00"


def test_one_query_per_check(engine: sa.Engine) -> None:
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    count_new_rows(engine, table="events", column="at", watermark="2013-01-02 00:00:00")
    assert len(statements) == 1
    assert "count(" in statements[0].lower() and "max(" in statements[0].lower()


def test_a_bad_column_names_table_and_column(engine: sa.Engine) -> None:
    with pytest.raises(ExtractError, match=r"events\.missing"):
        count_new_rows(engine, table="events", column="missing", watermark=None)


def test_an_unreachable_database_stays_retryable() -> None:
    dead = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
    with pytest.raises(sa.exc.OperationalError):
        count_new_rows(dead, table="events", column="at", watermark=None)
