"""Profile a sample of a query's result (or a run's snapshot) and draft a GX 1.x suite from it.

GX 1.x has no profiler any more, so this one is small and says what it did: every expectation is
built with GX's own expectation class and carries in ``notes`` the figures it was derived from
(rows seen, nulls, values, the range and the margin added to it). The draft passes on the data it
was drawn from; review it before you rely on it.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import sqlalchemy as sa

from mlpipe.sources.chunks import frame_to_arrow
from mlpipe.sources.sql import bind_time, utc_session
from mlpipe.sqltext import executable
from mlpipe.stages.validate import _gx_friendly, _import_gx

# A column with at most this many distinct values (and at least 5 rows per value) gets a value set.
VALUE_SET_MAX = 20
# Ranges are widened by this share of (max - min) on each side.
RANGE_MARGIN = 0.1
# A column with nulls in at most this share of rows gets a 'mostly' not-null expectation.
MOSTLY_MAX_NULL_SHARE = 0.5
ID_NAME = re.compile(r"^(id|.*_id|key|.*_key|uuid)$", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """The first rows of a query's result, typed as a snapshot of it would be read back."""

    frame: pd.DataFrame
    truncated: bool  # the query has more rows than were read
    as_of: str | None  # what :as_of was bound to (None: the query has no :as_of)


def sample_query(engine: sa.Engine, sql: str, params: dict[str, Any], rows: int) -> Sample:
    """Run ``sql`` (comments stripped, ``:as_of`` bound to now) and keep its first ``rows`` rows.

    The rows go through the same Arrow/Parquet conversion as extraction, so column types are those
    the validation stage and training will see. Only ``rows + 1`` rows are fetched (a server-side
    cursor where the driver has one), whatever the size of the result.
    """
    as_of = bind_time(datetime.now(UTC), engine.dialect.name)
    text, bound = executable(sql, {**params, "as_of": as_of})
    with engine.connect() as conn:
        utc_session(conn)
        result = conn.execution_options(stream_results=True, yield_per=rows + 1).execute(sa.text(text), bound)
        columns = list(result.keys())
        records = result.fetchmany(rows + 1)
        result.close()
    truncated = len(records) > rows
    frame = pd.DataFrame.from_records(records[:rows], columns=columns, coerce_float=True)
    return Sample(frame=as_snapshot(frame), truncated=truncated, as_of=str(as_of) if "as_of" in bound else None)


def as_snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as it reads back from a snapshot (Arrow conversion, Parquet round trip)."""
    buffer = io.BytesIO()
    pq.write_table(frame_to_arrow(frame), buffer)
    buffer.seek(0)
    return pq.read_table(buffer).to_pandas()


@dataclass
class ColumnProfile:
    """What a sample shows of one column."""

    name: str
    kind: str  # int, float, bool, text, time, other
    type_name: str  # the type GX sees (expect_column_values_to_be_in_type_list)
    rows: int
    nulls: int
    distinct: int
    values: list[Any] = field(default_factory=list)  # all distinct values when few
    min: Any = None
    max: Any = None
    mean_length: float = 0.0  # text: average characters
    looks_like_time: bool = False

    @property
    def null_share(self) -> float:
        return self.nulls / self.rows if self.rows else 0.0

    @property
    def unique(self) -> bool:
        return self.rows > 0 and self.nulls == 0 and self.distinct == self.rows

    @property
    def is_id(self) -> bool:
        return bool(ID_NAME.match(self.name)) and self.unique and self.kind in ("int", "text")

    @property
    def has_value_set(self) -> bool:
        present = self.rows - self.nulls
        return (
            self.kind in ("int", "text", "bool")
            and 1 <= self.distinct <= VALUE_SET_MAX
            and present >= 5 * self.distinct
        )


_TIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?([+-]\d{2}:?\d{2}|Z)?$")


def _plain(value: Any) -> Any:
    """A numpy/pandas scalar as a plain Python value (for JSON and YAML)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def profile_column(series: pd.Series) -> ColumnProfile:
    rows, nulls = len(series), int(series.isna().sum())
    present = series.dropna()
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        kind = "bool"
    elif pd.api.types.is_integer_dtype(dtype):
        kind = "int"
    elif pd.api.types.is_float_dtype(dtype):
        kind = "float"
    elif pd.api.types.is_datetime64_any_dtype(dtype):
        kind = "time"
    elif len(present) and all(isinstance(v, str) for v in present.head(1000)):
        kind = "text"
    else:
        kind = "other"
    if kind in ("text", "other"):
        first = present.iloc[0] if len(present) else ""
        type_name = type(first).__name__
    else:
        type_name = str(dtype)
    distinct = int(present.nunique())
    profile = ColumnProfile(series.name, kind, type_name, rows, nulls, distinct)
    if distinct <= VALUE_SET_MAX and kind in ("int", "text", "bool"):
        profile.values = sorted(_plain(v) for v in present.unique())
    if kind in ("int", "float") and len(present):
        profile.min, profile.max = _plain(present.min()), _plain(present.max())
    if kind == "text" and len(present):
        lengths = present.str.len()
        profile.mean_length = float(lengths.mean())
        head = present.head(200)
        profile.looks_like_time = bool(head.map(lambda v: bool(_TIME_TEXT.match(v))).all())
    if kind == "time":
        profile.looks_like_time = True
    return profile


def profile_frame(frame: pd.DataFrame) -> list[ColumnProfile]:
    return [profile_column(frame[c]) for c in frame.columns]


def _widened(p: ColumnProfile, seen: str) -> tuple[float, float, str]:
    """The range of a numeric column with its margin, and the note saying so."""
    low, high = float(p.min), float(p.max)
    margin = RANGE_MARGIN * (high - low) if high > low else max(abs(high) * RANGE_MARGIN, 1.0)
    lo, hi = low - margin, high + margin
    kept = []
    if low >= 0 > lo:
        lo = 0.0
        kept.append("not below 0: no negative value was seen")
    if high <= 0 < hi:
        hi = 0.0
        kept.append("not above 0: no positive value was seen")
    if p.kind == "int":
        lo, hi = float(math.floor(lo)), float(math.ceil(hi))
    else:
        lo, hi = _round(lo, down=True), _round(hi, down=False)
    note = (
        f"Values {p.min}..{p.max} in {seen}, widened by "
        f"{RANGE_MARGIN:.0%} of that range on each side" + (f" ({'; '.join(kept)})" if kept else "") + "."
    )
    return lo, hi, note


def _round(value: float, *, down: bool) -> float:
    """``value`` to 4 significant digits, rounded outwards so the range only grows."""
    if value == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(value))) - 3)
    return (math.floor if down else math.ceil)(value / scale) * scale


def draft_suite(
    frame: pd.DataFrame,
    *,
    name: str,
    drawn_from: str,
    truncated: bool = False,
    id_columns: list[str] | None = None,
) -> dict[str, Any]:
    """A GX 1.x suite (as the JSON mlpipe reads) that the rows of ``frame`` pass, from GX's own classes."""
    gx = _import_gx()
    ex = gx.expectations
    frame = _gx_friendly(frame)
    profiles = profile_frame(frame)
    rows = len(frame)
    seen = f"{rows:,} rows of {drawn_from}"
    expectations: list[Any] = [
        ex.ExpectTableColumnsToMatchSet(
            column_set=list(frame.columns),
            exact_match=True,
            notes=f"The {len(frame.columns)} columns of {drawn_from}: one added, dropped or renamed fails here.",
        )
    ]
    if truncated:
        expectations.append(
            ex.ExpectTableRowCountToBeBetween(
                min_value=max(1, rows // 2),
                max_value=None,
                notes=f"The sample stopped at {rows:,} rows (the result has more): at least half of that, no upper "
                "bound.",
            )
        )
    else:
        expectations.append(
            ex.ExpectTableRowCountToBeBetween(
                min_value=max(1, rows // 2),
                max_value=max(rows * 100, 1000),
                notes=f"{rows:,} rows in {drawn_from}: at least half of that (a truncated extract), at most 100 "
                "times (a join that multiplies rows); data that grows stays inside.",
            )
        )
    ids = set(id_columns or []) | {p.name for p in profiles if p.is_id}
    for p in profiles:
        column = str(p.name)
        expectations.append(
            ex.ExpectColumnValuesToBeInTypeList(
                column=column,
                type_list=[p.type_name],
                notes=f"{column!r} was {p.type_name} in {seen}; a column read back as text, or as float "
                "because a NULL crept into integers, fails here.",
            )
        )
        if p.nulls == 0 and rows:
            expectations.append(ex.ExpectColumnValuesToNotBeNull(column=column, notes=f"No nulls in {seen}."))
        elif 0 < p.null_share <= MOSTLY_MAX_NULL_SHARE:
            allowed = min(1.0, p.null_share * 1.5 + 0.01)
            mostly = math.floor((1 - allowed) * 10_000) / 10_000
            expectations.append(
                ex.ExpectColumnValuesToNotBeNull(
                    column=column,
                    mostly=mostly,
                    notes=f"Nulls in {p.null_share:.2%} of {seen}; up to {1 - mostly:.2%} allowed "
                    "(1.5 times that share plus 1 point).",
                )
            )
        if column in ids:
            expectations.append(
                ex.ExpectColumnValuesToBeUnique(column=column, notes=f"{column!r} identifies a row: unique in {seen}.")
            )
            continue  # ids grow: no value set, no range
        if p.has_value_set:
            expectations.append(
                ex.ExpectColumnValuesToBeInSet(
                    column=column,
                    value_set=p.values,
                    notes=f"The {p.distinct} values seen in {seen}; a new value (a new category, a typo) "
                    "fails here: add it if it is real.",
                )
            )
        elif p.kind in ("int", "float") and p.min is not None:
            low, high, note = _widened(p, seen)
            expectations.append(
                ex.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, notes=note)
            )
    suite = gx.ExpectationSuite(
        name=name,
        expectations=expectations,
        meta={
            "notes": f"Drafted by `mlpipe suite draft` from {seen} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC). "
            "Each expectation's notes say what it was derived from; review them: a draft checks what the "
            "sample showed, not what the data must be."
        },
    )
    data = suite.to_json_dict()
    for key in ("id", "notes"):
        if data.get(key) is None:
            data.pop(key, None)
    return data
