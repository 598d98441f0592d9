"""SQL sources: the spec's query streamed in chunks, the watch's count past the watermark, the monitor's window.

Any database SQLAlchemy has a dialect for, reached through an engine (see ``mlpipe.hooks.sql`` for
how a Connection becomes one). Rows stream through a server-side cursor (``stream_results``:
PostgreSQL's named cursors, MySQL's ``SSCursor``), so memory stays bounded by the chunk size.

New-data detection counts how many rows of the source lie past the pipeline's watermark.

A watermark is a value of the watermark column plus how many rows *at* that value were already
announced. The column need not be unique (``time_hour`` is shared by every flight of an hour), so
rows that arrive late carrying exactly the watermark's value are still counted, once, while rows
strictly below it stay behind the watermark for good.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from mlpipe.contracts import NewRowsFound
from mlpipe.errors import ExtractError
from mlpipe.registry import encode_watermark
from mlpipe.sources import Plan, SourceInfo, describe
from mlpipe.sources.chunks import frame_to_arrow
from mlpipe.sources.columns import check_result_columns
from mlpipe.spec import LoadedSpec
from mlpipe.sqltext import executable
from mlpipe.storage import ArtifactStore


@dataclass(frozen=True)
class NewRows:
    rows: int  # rows not announced yet: past the watermark, plus late ones at its value
    watermark_from: Any
    at_watermark_from: int | None  # rows at ``watermark_from`` already announced (None: all of them)
    watermark_to: Any  # the watermark once these rows are announced
    at_watermark_to: int  # rows at ``watermark_to`` then announced

    def found(self) -> NewRowsFound:
        """The watch's contract: watermarks in the registry's typed encoding (see ``decode_watermark``)."""
        return NewRowsFound(
            rows=self.rows,
            watermark_from=None if self.watermark_from is None else encode_watermark(self.watermark_from),
            at_watermark_from=self.at_watermark_from,
            watermark_to=None if self.watermark_to is None else encode_watermark(self.watermark_to),
            at_watermark_to=self.at_watermark_to,
        )


def _table(table: str, column: str, alias: str) -> tuple[Any, sa.ColumnElement]:
    schema, _, name = table.rpartition(".")
    tbl = sa.table(name, sa.column(column), schema=schema or None).alias(alias)
    return tbl, tbl.c[column]


def new_rows_query(table: str, column: str, watermark: Any) -> sa.Select:
    """One statement: rows at or past ``watermark``, rows at it, the newest value and rows at that.

    The newest value and its row count are scalar subqueries on the same table, so the figures come
    from one snapshot of the source. With an index on the column every part is an index search.
    """
    tbl, col = _table(table, column, "src")
    newest_tbl, newest_col = _table(table, column, "newest")
    high_tbl, high_col = _table(table, column, "high")
    newest = sa.select(sa.func.max(newest_col)).select_from(newest_tbl).scalar_subquery()
    at_newest = sa.select(sa.func.count()).select_from(high_tbl).where(high_col == newest).scalar_subquery()
    if watermark is None:
        return sa.select(sa.func.count(), sa.literal(0), sa.func.max(col), at_newest).select_from(tbl)
    mark = sa.bindparam("watermark", watermark)
    at_mark = sa.func.coalesce(sa.func.sum(sa.case((col == mark, 1), else_=0)), 0)
    return sa.select(sa.func.count(), at_mark, sa.func.max(col), at_newest).select_from(tbl).where(col >= mark)


def count_new_rows(engine: sa.Engine, *, table: str, column: str, watermark: Any, at_watermark: int = 0) -> NewRows:
    """Rows of ``table`` not announced yet, with the watermark that announcing them would set.

    New are the rows with ``column > watermark`` and, of the rows with ``column = watermark``, those
    beyond the ``at_watermark`` already announced (all rows when there is no watermark yet). One
    query per check (see :func:`new_rows_query`).
    """
    stmt = new_rows_query(table, column, watermark)
    try:
        with engine.connect() as conn:
            at_or_past, at_mark, high, at_high = conn.execute(stmt).one()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or (isinstance(exc, sa.exc.OperationalError) and "connect" in str(exc).lower()):
            raise
        raise ExtractError(
            f"cannot count new rows of {table}.{column} in {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}"
        ) from None
    at_or_past, at_mark, at_high = int(at_or_past), int(at_mark or 0), int(at_high or 0)
    # Rows at the watermark's value beyond those announced are late arrivals; fewer than announced
    # (rows deleted) announce nothing and leave the count alone.
    rows = at_or_past - (at_mark if at_watermark is None else min(at_mark, at_watermark))
    if rows <= 0 or high is None:
        return NewRows(0, watermark, at_watermark, watermark, at_watermark)
    return NewRows(rows, watermark, at_watermark, high, at_high)


# -- binding times, reading in UTC ------------------------------------------------------------------


def bind_time(value: datetime, dialect: str) -> Any:
    """A UTC time as a bound parameter of the source's SQL (``:as_of``, the monitor's window start).

    SQLite keeps timestamps as ISO text, so it gets ISO text (same ordering). PostgreSQL gets the
    same text as an untyped literal, which it reads as the type of the column it is compared with:
    text (ISO order), timestamp, timestamptz (the session runs in UTC, see :func:`utc_session`) or
    date (the day of ``value``). Other databases (MySQL/MariaDB, ...) get a naive UTC datetime,
    which the driver sends as ``'YYYY-MM-DD HH:MM:SS'``: compared as such with DATETIME, TIMESTAMP
    (read in the UTC session) and ISO text columns, and as its day with DATE columns.
    """
    naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    return naive.isoformat(sep=" ") if dialect in {"sqlite", "postgresql"} else naive


def utc_session(conn: sa.Connection) -> None:
    """Read and compare times in UTC on this connection, whatever the server's time zone setting."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TIME ZONE 'UTC'")
    elif dialect in {"mysql", "mariadb"}:
        conn.exec_driver_sql("SET time_zone = '+00:00'")


def query_error(exc: Exception, query_path: Path, engine: sa.Engine) -> Exception:
    """What to raise for a query that failed: the exception itself when the connection dropped (a retry
    can help), else an ExtractError naming the query file, the database and the driver's message."""
    cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
    if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
        return exc
    return ExtractError(
        f"query {query_path} failed against {engine.url.render_as_string(hide_password=True)}: "
        f"{getattr(exc.__cause__, 'orig', None) or getattr(exc, 'orig', None) or exc}"
    )


def _as_datetime(value: Any) -> datetime:
    """A watermark value as a naive UTC datetime (timestamptz values arrive aware, text ones as ISO text)."""
    value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


# -- the reader -------------------------------------------------------------------------------------


class SqlReader:
    """The spec's SQL source over a SQLAlchemy engine (see :class:`mlpipe.sources.SourceReader`)."""

    hint = "fix the source or cast it in the query"

    def __init__(self, loaded: LoadedSpec, engine: sa.Engine) -> None:
        self.loaded = loaded
        self.engine = engine
        self.source = loaded.spec.source
        self.info: SourceInfo = describe(self.source)

    def null_types(self) -> dict[str, pa.DataType]:
        return {}

    def plan(self, store: ArtifactStore, snapshot_key: str, as_of: datetime) -> Plan:
        # The query with time < as_of is the plan: the same as_of reads the same rows again.
        return Plan(as_of=as_of.isoformat())

    def chunks(self, plan: Plan, tmp: Path) -> Iterator[tuple[pa.Table, str]]:
        """The query's rows with ``:as_of`` bound, through a server-side cursor, ``chunk_rows`` at a time."""
        chunk_rows = self.source.chunk_rows
        # Comments stripped and only the parameters the statement really has bound (mlpipe.sqltext).
        text, params = executable(
            self.loaded.query_text(),
            {**self.source.params, "as_of": bind_time(datetime.fromisoformat(plan.as_of), self.engine.dialect.name)},
        )
        query = sa.text(text)
        rows = 0
        with self.engine.connect() as conn:
            utc_session(conn)
            conn = conn.execution_options(stream_results=True, yield_per=chunk_rows)
            try:
                for frame in pd.read_sql(query, conn, params=params, chunksize=chunk_rows):
                    table = frame_to_arrow(frame)
                    if rows == 0:  # the first chunk: fail in seconds, naming the spec field
                        check_result_columns(self.loaded, table.schema)
                    yield table, f"near row {rows}"
                    rows += len(frame)
            except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
                raise query_error(exc, self.loaded.query_path, self.engine) from None

    def failed(self, store: ArtifactStore, snapshot_key: str, exc: Exception) -> Exception:
        return exc

    def count_new(self, watermark: Any, at_watermark: int | None = 0) -> NewRows:
        return count_new_rows(
            self.engine,
            table=self.source.table,
            column=self.source.watermark_column,
            watermark=watermark,
            at_watermark=at_watermark,
        )

    def window(self, days: float) -> tuple[pd.DataFrame, str | None, str | None]:
        """The newest ``days`` by the watermark column, through the spec's query."""
        source = self.source
        newest = self.count_new(None)
        if newest.watermark_to is None:
            return pd.DataFrame(), None, None
        end = _as_datetime(newest.watermark_to)
        start = end - timedelta(days=days)
        dialect = self.engine.dialect.name
        inner, params = executable(
            self.loaded.query_text(), {**source.params, "as_of": bind_time(end + timedelta(seconds=1), dialect)}
        )
        query = sa.text(
            f"SELECT * FROM ({inner.rstrip(';')}) AS mlpipe_window "
            f"WHERE mlpipe_window.{source.watermark_column} >= :window_start"
        )
        params["window_start"] = bind_time(start, dialect)
        with self.engine.connect() as conn:
            utc_session(conn)
            frame = pd.read_sql(query, conn, params=params)
        return frame, start.isoformat(sep=" "), end.isoformat(sep=" ")
