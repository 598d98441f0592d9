"""Extraction: stream the source's rows into a Parquet snapshot, through the source's reader (``mlpipe.sources``).

Rows arrive in chunks (server-side cursor where the driver has one; one object, row group or CSV
block at a time for S3) and each chunk is written as a Parquet row group, so memory stays bounded
by the chunk size, not the source's size.
"""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mlpipe import layout
from mlpipe.contracts import Snapshot
from mlpipe.errors import ExtractError
from mlpipe.layout import snapshot_key
from mlpipe.sources import reader_for
from mlpipe.sources.chunks import spec_column_types
from mlpipe.spec import LoadedSpec
from mlpipe.stages.runs import read_json
from mlpipe.storage import ArtifactStore


def _manifest_key(snapshot_key: str) -> str:
    return layout.beside(snapshot_key, layout.SNAPSHOT_RECORD_FILE)


def _late_types(table: pa.Table, untyped: set[str]) -> dict[str, pa.DataType]:
    """Types of columns that were all NULL so far (written as text) and now arrive with values."""
    late = {}
    for name in untyped & set(table.schema.names):
        typ = table.schema.field(name).type
        if not pa.types.is_null(typ):
            late[name] = pa.string() if pa.types.is_large_string(typ) else typ
    return late


def _retype_written(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """Rewrite the row groups written so far with ``schema``, one at a time; return the writer to go on with.

    Only columns that were all NULL change type, so every cast is of NULLs and cannot fail.
    """
    old = path.with_name(path.name + ".old")
    path.rename(old)
    writer = pq.ParquetWriter(path, schema, compression="zstd")
    with pq.ParquetFile(old) as written:
        for i in range(written.num_row_groups):
            writer.write_table(written.read_row_group(i).cast(schema))
    old.unlink()
    return writer


def _to_table(
    table: pa.Table, schema: pa.Schema | None, null_types: dict[str, pa.DataType], where: str, hint: str
) -> pa.Table:
    if schema is None:
        fields = []
        for f in table.schema:
            typ = f.type
            if pa.types.is_null(typ):
                typ = null_types.get(f.name, pa.string())
            elif pa.types.is_large_string(typ):
                typ = pa.string()
            fields.append(pa.field(f.name, typ))
        schema = pa.schema(fields)
    if table.schema.names != schema.names:
        raise ExtractError(f"the columns change {where}: {schema.names} before, {table.schema.names} here; {hint}")
    columns = []
    for name, target in zip(schema.names, schema.types, strict=False):
        col = table.column(name)
        try:
            columns.append(col.cast(target) if col.type != target else col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ExtractError(
                f"column {name!r} changes type {where}: earlier rows were {target}, these are {col.type} "
                f"({exc}); {hint}"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


class SnapshotWriter:
    """Arrow chunks -> one Parquet file with one schema, in row groups of about ``row_group_rows`` rows.

    The first chunk fixes the schema; each later chunk is cast to it as it arrives, and a change of
    columns or a type that cannot be cast is an :class:`ExtractError` naming the column and
    ``where`` the chunk came from. Columns all NULL so far get their type from the spec
    (``null_types``) or, when the spec does not type them, from the first chunk that has values
    (row groups written until then are rewritten). Chunks are buffered until ``row_group_rows``
    rows are in, so small chunks (one per S3 object) still make row groups of a useful size, and
    memory stays below two row groups. Sources of every kind write through this class, so their
    snapshots agree.
    """

    def __init__(self, path: Path, null_types: dict[str, pa.DataType], *, hint: str, row_group_rows: int) -> None:
        self.path = path
        self.null_types = null_types
        self.hint = hint
        self.row_group_rows = row_group_rows
        self.rows = 0
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        # Columns all NULL so far and typed by no spec: written as text until a chunk shows their type.
        self._untyped: set[str] = set()

    def write(self, chunk: pa.Table, where: str) -> None:
        late = _late_types(chunk, self._untyped) if self.schema is not None else {}
        if late:
            self.schema = pa.schema([pa.field(f.name, late.get(f.name, f.type)) for f in self.schema])
            if self._writer is not None:
                self._writer.close()
                self._writer = _retype_written(self.path, self.schema)
            self._pending = [t.cast(self.schema) for t in self._pending]
            self._untyped -= late.keys()
        table = _to_table(chunk, self.schema, self.null_types, where, self.hint)
        if self.schema is None:
            self.schema = table.schema
            self._untyped = {f.name for f in chunk.schema if pa.types.is_null(f.type)} - self.null_types.keys()
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self._writer.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def close(self) -> None:
        """Finish the file; with no rows at all, still a valid, empty snapshot so validation can say so."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
        elif not self.path.exists():
            pq.write_table(pa.table({}), self.path)

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names) if self.schema is not None else []


def reused_snapshot(store: ArtifactStore, key: str, as_of: str, started: float) -> Snapshot | None:
    """This run's snapshot if an earlier attempt finished it, else None."""
    if not store.exists(key):
        return None
    with store.local_copy(key) as path:
        meta = pq.read_metadata(path)
    # The rows are those of the first attempt's as_of, whatever as_of this attempt was given.
    first = read_json(store, _manifest_key(key)) or {}
    return Snapshot(
        key=key,
        uri=store.uri(key),
        sha256=store.sha256(key),
        rows=meta.num_rows,
        columns=meta.schema.to_arrow_schema().names,
        as_of=first.get("as_of") or as_of,
        reused=True,
        seconds=round(time.perf_counter() - started, 3),
    )


def publish_snapshot(
    store: ArtifactStore,
    key: str,
    written: SnapshotWriter,
    *,
    as_of: str,
    started: float,
    source: dict[str, Any] | None = None,
) -> Snapshot:
    """Publish the finished file (atomically) and its manifest; ``source`` says what was read."""
    artifact = store.put_file(key, written.path)
    snap = Snapshot(
        key=key,
        uri=artifact.uri,
        sha256=artifact.sha256,
        rows=written.rows,
        columns=written.columns,
        as_of=as_of,
        reused=False,
        seconds=round(time.perf_counter() - started, 3),
    )
    manifest = {**snap.to_xcom(), **({"source": source} if source else {})}
    store.put_bytes(_manifest_key(key), json.dumps(manifest, indent=2).encode())
    return snap


def extract_snapshot(
    loaded: LoadedSpec,
    source: Any,
    store: ArtifactStore,
    *,
    run_key: str,
    as_of: datetime,
) -> Snapshot:
    """Extract the data the run may see into the store, through the source's reader: the rows of the
    spec's SQL with ``time < as_of`` (``source`` is a SQLAlchemy engine), or for an S3 source the
    objects that belong to the run (``source`` is a boto3 S3 client); or ``source`` is the reader.

    Idempotent per run: if this run's snapshot already exists it is reused, so a retried or re-run
    task trains on exactly the data the run first saw. Nothing is published unless every chunk was read.
    """
    reader = reader_for(loaded, source)
    spec = loaded.spec
    key = snapshot_key(spec.name, run_key)
    started = time.perf_counter()
    as_of_naive = as_of.astimezone(UTC).replace(tzinfo=None) if as_of.tzinfo else as_of
    reused = reused_snapshot(store, key, as_of_naive.isoformat(), started)
    if reused is not None:
        return reused

    plan = reader.plan(store, key, as_of_naive)
    try:
        with tempfile.TemporaryDirectory(prefix="mlpipe-extract-") as tmp:
            written = SnapshotWriter(
                Path(tmp) / layout.SNAPSHOT_FILE,
                {**spec_column_types(loaded), **reader.null_types()},
                hint=reader.hint,
                row_group_rows=spec.source.chunk_rows,
            )
            try:
                for chunk, where in reader.chunks(plan, Path(tmp)):
                    written.write(chunk, where)
            finally:
                written.close()
            return publish_snapshot(store, key, written, as_of=plan.as_of, started=started, source=plan.source)
    except Exception as exc:
        raised = reader.failed(store, key, exc)
        if raised is exc:
            raise
        raise raised from None


def read_snapshot(store: ArtifactStore, key: str, sha256: str | None = None, columns: list[str] | None = None) -> Any:
    """The snapshot as a pandas DataFrame (verified against ``sha256`` when given)."""
    with store.local_copy(key, expected_sha256=sha256) as path:
        return pq.read_table(path, columns=columns).to_pandas()
