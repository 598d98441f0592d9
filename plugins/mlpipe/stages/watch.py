"""New-data detection: how many rows of the source lie past the pipeline's watermark."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.registry import encode_watermark


@dataclass(frozen=True)
class NewRows:
    rows: int
    watermark_from: Any
    watermark_to: Any

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, with watermarks in the registry's typed encoding (see ``decode_watermark``)."""
        out = asdict(self)
        for key in ("watermark_from", "watermark_to"):
            out[key] = None if out[key] is None else encode_watermark(out[key])
        return out


def _column(table: str, column: str) -> tuple[sa.TableClause, sa.ColumnClause]:
    schema, _, name = table.rpartition(".")
    col = sa.column(column)
    return sa.table(name, col, schema=schema or None), col


def count_new_rows(engine: sa.Engine, *, table: str, column: str, watermark: Any) -> NewRows:
    """Rows with ``column > watermark`` (all rows when there is no watermark yet) and their maximum.

    One aggregate query per check; with an index on the watermark column it reads only the new rows.
    """
    tbl, col = _column(table, column)
    stmt = sa.select(sa.func.count(), sa.func.max(col)).select_from(tbl)
    if watermark is not None:
        stmt = stmt.where(col > sa.bindparam("watermark", watermark))
    try:
        with engine.connect() as conn:
            count, high = conn.execute(stmt).one()
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or (isinstance(exc, sa.exc.OperationalError) and "connect" in str(exc).lower()):
            raise
        raise ExtractError(
            f"cannot count new rows of {table}.{column} in {engine.url.render_as_string(hide_password=True)}: "
            f"{exc.orig}"
        ) from None
    return NewRows(rows=int(count), watermark_from=watermark, watermark_to=high if count else watermark)
