"""New-data detection: how many rows of the source lie past the pipeline's watermark.

A watermark is a value of the watermark column plus how many rows *at* that value were already
announced. The column need not be unique (``time_hour`` is shared by every flight of an hour), so
rows that arrive late carrying exactly the watermark's value are still counted, once, while rows
strictly below it stay behind the watermark for good.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.registry import encode_watermark


@dataclass(frozen=True)
class NewRows:
    rows: int  # rows not announced yet: past the watermark, plus late ones at its value
    watermark_from: Any
    at_watermark_from: int | None  # rows at ``watermark_from`` already announced (None: all of them)
    watermark_to: Any  # the watermark once these rows are announced
    at_watermark_to: int  # rows at ``watermark_to`` then announced

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, with watermarks in the registry's typed encoding (see ``decode_watermark``)."""
        out = asdict(self)
        for key in ("watermark_from", "watermark_to"):
            out[key] = None if out[key] is None else encode_watermark(out[key])
        return out


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
