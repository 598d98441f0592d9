"""Extraction: run the spec's SQL with bound parameters and stream the rows into a Parquet snapshot.

Rows arrive in chunks (server-side cursor where the driver has one) and each chunk is written as a
Parquet row group, so memory stays bounded by the chunk size, not the table size.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from mlpipe.errors import ExtractError
from mlpipe.spec import LoadedSpec
from mlpipe.stages.runs import read_json
from mlpipe.storage import ArtifactStore

SNAPSHOT_FILE = "snapshot.parquet"


@dataclass(frozen=True)
class Snapshot:
    key: str
    uri: str
    sha256: str
    rows: int
    columns: list[str]
    as_of: str
    reused: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_key(pipeline: str, run_key: str) -> str:
    return f"{pipeline}/runs/{run_key}/extract/{SNAPSHOT_FILE}"


def _manifest_key(snapshot_key: str) -> str:
    return snapshot_key.replace(SNAPSHOT_FILE, "snapshot.json")


def _null_column_types(loaded: LoadedSpec) -> dict[str, pa.DataType]:
    """Types for columns whose first chunk is all NULL (Arrow would call them 'null')."""
    spec = loaded.spec
    types: dict[str, pa.DataType] = {c: pa.float64() for c in spec.features.numeric}
    types.update({c: pa.string() for c in spec.features.categorical})
    return types


def _from_pandas(frame: Any) -> pa.Table:
    """Arrow table of a chunk; a column of mixed Python types becomes text, so validation can see it."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        frame = frame.copy()
        for name in frame.columns:
            try:
                pa.array(frame[name], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                col = frame[name]
                frame[name] = col.where(col.isna(), col.astype(str))
        return pa.Table.from_pandas(frame, preserve_index=False)


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
    table: pa.Table, schema: pa.Schema | None, null_types: dict[str, pa.DataType], first_row: int
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
        raise ExtractError(f"the query's columns changed between chunks: {schema.names} then {table.schema.names}")
    columns = []
    for name, target in zip(schema.names, schema.types, strict=False):
        col = table.column(name)
        try:
            columns.append(col.cast(target) if col.type != target else col)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ExtractError(
                f"column {name!r} changes type near row {first_row}: earlier rows were {target}, "
                f"these are {col.type} ({exc}); fix the source or cast it in the query"
            ) from None
    return pa.Table.from_arrays(columns, schema=schema)


def extract_snapshot(
    loaded: LoadedSpec,
    engine: sa.Engine,
    store: ArtifactStore,
    *,
    run_key: str,
    as_of: datetime,
) -> Snapshot:
    """Extract the rows the run may see (``time < as_of`` in the spec's SQL) into the store.

    Idempotent per run: if this run's snapshot already exists it is reused, so a retried or re-run
    task trains on exactly the data the run first saw.
    """
    import pandas as pd

    spec = loaded.spec
    key = snapshot_key(spec.name, run_key)
    started = time.perf_counter()
    as_of_naive = as_of.astimezone(UTC).replace(tzinfo=None)
    if store.exists(key):
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
            as_of=first.get("as_of") or as_of_naive.isoformat(),
            reused=True,
            seconds=round(time.perf_counter() - started, 3),
        )

    # SQLite keeps timestamps as ISO text: bind text there (same ordering), a datetime elsewhere.
    as_of_param: Any = as_of_naive.isoformat(sep=" ") if engine.dialect.name == "sqlite" else as_of_naive
    params = {**spec.source.params, "as_of": as_of_param}
    query = sa.text(loaded.query_text())
    null_types = _null_column_types(loaded)
    rows = 0
    schema: pa.Schema | None = None
    # Columns all NULL so far and typed by no spec: written as text until a chunk shows their type.
    untyped: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="mlpipe-extract-") as tmp:
        out = Path(tmp) / SNAPSHOT_FILE
        writer: pq.ParquetWriter | None = None
        try:
            with engine.connect() as conn:
                conn = conn.execution_options(stream_results=True, yield_per=spec.source.chunk_rows)
                try:
                    chunks = pd.read_sql(query, conn, params=params, chunksize=spec.source.chunk_rows)
                    for frame in chunks:
                        chunk = _from_pandas(frame)
                        late = _late_types(chunk, untyped) if writer is not None else {}
                        if late:
                            writer.close()
                            schema = pa.schema([pa.field(f.name, late.get(f.name, f.type)) for f in schema])
                            writer = _retype_written(out, schema)
                            untyped -= late.keys()
                        table = _to_table(chunk, schema, null_types, rows)
                        if writer is None:
                            schema = table.schema
                            untyped = {f.name for f in chunk.schema if pa.types.is_null(f.type)} - null_types.keys()
                            writer = pq.ParquetWriter(out, schema, compression="zstd")
                        writer.write_table(table)
                        rows += table.num_rows
                except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
                    cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) else exc
                    if isinstance(cause, sa.exc.DBAPIError) and cause.connection_invalidated:
                        raise  # the connection dropped: a retry can help, so keep it retryable
                    raise ExtractError(
                        f"query {loaded.query_path} failed against {engine.url.render_as_string(hide_password=True)}: "
                        f"{getattr(exc.__cause__, 'orig', None) or getattr(exc, 'orig', None) or exc}"
                    ) from None
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            # No rows at all: still write a valid, empty snapshot so validation can say so.
            pq.write_table(pa.table({}), out)
        artifact = store.put_file(key, out)
    snap = Snapshot(
        key=key,
        uri=artifact.uri,
        sha256=artifact.sha256,
        rows=rows,
        columns=list(schema.names) if schema is not None else [],
        as_of=as_of_naive.isoformat(),
        reused=False,
        seconds=round(time.perf_counter() - started, 3),
    )
    store.put_bytes(_manifest_key(key), json.dumps(snap.as_dict(), indent=2).encode())
    return snap


def read_snapshot(store: ArtifactStore, key: str, sha256: str | None = None, columns: list[str] | None = None) -> Any:
    """The snapshot as a pandas DataFrame (verified against ``sha256`` when given)."""
    with store.local_copy(key, expected_sha256=sha256) as path:
        return pq.read_table(path, columns=columns).to_pandas()
