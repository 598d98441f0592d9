"""Where a pipeline's data comes from: one reader protocol, a SQL reader and an S3 reader behind it.

A reader streams the rows a run may see as Arrow chunks, counts the data past the watch's
watermark, reads the monitor's newest window, and describes itself for DAG docs and lineage.
Stages (extraction, the watch, the monitor) talk to the protocol; which reader serves a spec is
decided here, once (:func:`reader_for`). This module is cheap to import (DAG parse time):
:func:`describe` needs only the spec, the readers' modules load on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    import pandas as pd
    import pyarrow as pa

    from mlpipe.spec import LoadedSpec, SourceSpec
    from mlpipe.storage import ArtifactStore


@dataclass(frozen=True)
class SourceInfo:
    """What a source is, in words and names: for DAG docs, logs and lineage (OpenLineage-style namespace/name)."""

    kind: str  # the spec's source.kind: sql | s3
    connection_id: str
    summary: str  # one sentence of DAG docs
    unit: str  # what the watch counts: rows | objects
    watches: str | None  # what new data lands in (a table, an s3:// prefix); None: nothing to watch
    new_data: str  # the watch's wait, in words (needs the watch's minimum, see ``new_data_text``)
    window_of: str  # what the monitor's window is taken from
    window_by: str  # and how
    namespace: str  # lineage: the dataset's namespace (s3://bucket, or the Connection)
    name: str  # lineage: the dataset's name (prefix, table or query file)


def _describe_sql(source: Any) -> SourceInfo:
    landing = (
        f" New rows land in `{source.table}`, ordered by `{source.watermark_column}`."
        if source.table and source.watermark_column
        else ""
    )
    return SourceInfo(
        kind=source.kind,
        connection_id=source.connection_id,
        summary=(
            f"`{source.kind}` query `include/sql/{source.query}` through connection `{source.connection_id}`.{landing}"
        ),
        unit="rows",
        watches=source.table,
        new_data=f"new row(s) of `{source.table}` past the watermark",
        window_of=str(source.table),
        window_by=f"by `{source.watermark_column}`",
        namespace=f"airflow-connection://{source.connection_id}",
        name=source.table or f"include/sql/{source.query}",
    )


def _describe_s3(source: Any) -> SourceInfo:
    return SourceInfo(
        kind="s3",
        connection_id=source.connection_id,
        summary=f"`s3` objects under `{source.uri}` through connection `{source.connection_id}`.",
        unit="objects",
        watches=source.uri,
        new_data=f"new object(s) under `{source.uri}` (by LastModified)",
        window_of=source.uri,
        window_by=(
            "whole objects, by their key's partition date" if source.partition else "whole objects, by LastModified"
        ),
        namespace=f"s3://{source.bucket}",
        name=source.prefix.rstrip("/") or "/",
    )


# Each source kind of the spec: how it is described, and the class that reads it (loaded on first use).
_KINDS: dict[str, tuple[Callable[[Any], SourceInfo], str]] = {
    "sql": (_describe_sql, "mlpipe.sources.sql:SqlReader"),
    "s3": (_describe_s3, "mlpipe.sources.s3:S3Reader"),
}


def describe(source: SourceSpec) -> SourceInfo:
    """The source in words and names, from the spec alone: no Connection, no heavy import."""
    return _KINDS[source.kind][0](source)


@dataclass
class Plan:
    """What one extraction reads: fixed before the first row is read, so a retry reads the same."""

    as_of: str  # naive UTC ISO: the as-of time the rows are of (a retry's plan keeps the first attempt's)
    source: dict[str, Any] | None = None  # what the snapshot manifest records about the source
    items: list[Any] = field(default_factory=list)  # the reader's own (S3: the objects)


class SourceReader(Protocol):
    """The one interface the stages read a source through."""

    info: SourceInfo
    hint: str  # what to do when a chunk's columns or types change (ends the ExtractError's message)

    def null_types(self) -> dict[str, pa.DataType]:
        """Types of columns whose first chunk is all NULL, beyond those the spec's features give."""
        ...

    def plan(self, store: ArtifactStore, snapshot_key: str, as_of: datetime) -> Plan:
        """What the run as of ``as_of`` (naive UTC) reads; kept beside the snapshot where a retry needs it."""
        ...

    def chunks(self, plan: Plan, tmp: Path) -> Iterator[tuple[pa.Table, str]]:
        """The plan's rows as Arrow chunks, each with where it came from (for error messages)."""
        ...

    def failed(self, store: ArtifactStore, snapshot_key: str, exc: Exception) -> Exception:
        """What to raise for an extraction that failed with ``exc`` (a reader may also drop its plan)."""
        ...

    def count_new(self, watermark: Any, at_watermark: int | None = 0) -> Any:
        """Data past the watermark: a value whose ``found()`` is the watch's contract (``info.unit`` its count)."""
        ...

    def window(self, days: float) -> tuple[pd.DataFrame, str | None, str | None]:
        """The newest ``days`` of the source, with the window's start and end."""
        ...


def reader_for(loaded: LoadedSpec, handle: Any) -> SourceReader:
    """The reader of ``loaded``'s source over ``handle``: a SQLAlchemy engine (sql) or a boto3 S3 client (s3).

    A reader passed as ``handle`` is returned as it is.
    """
    if hasattr(handle, "chunks") and hasattr(handle, "info"):
        return handle
    module, _, name = _KINDS[loaded.spec.source.kind][1].partition(":")
    return getattr(importlib.import_module(module), name)(loaded, handle)
