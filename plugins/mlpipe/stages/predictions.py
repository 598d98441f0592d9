"""Where batch predictions go: a SQL table (with a rejects table) or Parquet files in the artifact store.

Both keep predictions per *window*, the scoring run that wrote them (its ``run_key``), and commit a
window as a whole: a reader sees all of a window's rows or none, never part of one, and a re-run of
a window replaces it instead of adding to it.

* :class:`TableSink`: one database transaction per window. It deletes the window's earlier rows,
  inserts the new ones chunk by chunk and commits at the end; a failure or a killed process rolls
  everything back. A unique index on (key, model_version) makes a duplicate impossible.
* :class:`ParquetSink`: ``<pipeline>/predictions/<run_key>/`` holds one folder per attempt with
  ``predictions.parquet`` and ``rejects.parquet``, and ``manifest.json``, published last and
  atomically, which names the attempt that counts. Attempts without a manifest are never read and
  are removed by the window's next committed attempt.

Columns of a prediction: the spec's key column, ``model_version``, ``prediction`` (label or value),
``score`` (see :mod:`mlpipe.stages.predict`), ``scored_at`` (the window's as-of time, not the wall
clock) and ``run_key``. A reject: ``key`` (as text), ``reason``, ``record`` (the row's key and
features as JSON), ``model_version``, ``scored_at``, ``run_key``.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from mlpipe import layout
from mlpipe.errors import MlpipeError
from mlpipe.layout import MANIFEST_FILE, PREDICTIONS_FILE, REJECTS_FILE
from mlpipe.storage import ArtifactStore

KEY_READ_ROWS = 100_000
REJECT_COLUMNS = ("key", "reason", "record", "model_version", "scored_at", "run_key")


class KeySet:
    """A set of keys (int64 or str) that stays compact: disjoint sorted numpy runs, merged like a binary counter.

    Adding is amortised O(log n) per key and membership a binary search per run (O(log n) runs), at
    8 bytes per integer key: 3.4 M keys cost 27 MiB (a Python set would cost ~10x), plus the merge's
    copy of the runs it merges while it merges them.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(run.size for run in self._runs)

    def add(self, keys: np.ndarray) -> None:
        run = np.unique(np.asarray(keys))
        run = run[~self.contains(run)]  # runs stay disjoint: each key is kept once
        if run.size == 0:
            return
        self._runs.append(run)
        while len(self._runs) > 1 and self._runs[-2].size <= 2 * self._runs[-1].size:
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newer])
            del older, newer
            # Two sorted, disjoint runs: a stable sort (timsort) merges them in one linear pass.
            merged.sort(kind="stable")
            self._runs.append(merged)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys)
        found = np.zeros(keys.shape[0], dtype=bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, keys), run.size - 1)
            found |= run[at] == keys
        return found


@dataclass(frozen=True)
class Window:
    """The scoring run whose rows a sink writes and replaces as one."""

    run_key: str
    run_id: str
    model_version: int
    as_of: datetime


class WindowWriter:
    """What a sink hands the scoring loop for one window: the keys already scored and a writer."""

    key_kind: str | None  # "int" | "str" of what the sink already holds, None when empty

    def scored_keys(self) -> KeySet: ...

    def write(self, predictions: pd.DataFrame, rejects: pd.DataFrame) -> None: ...


# --- SQL table ------------------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return schema or None, table


class TableSink:
    """Predictions and rejects in two tables of a SQL database, one transaction per window."""

    def __init__(self, engine: sa.Engine, *, table: str, rejects_table: str, key: str) -> None:
        self.engine, self.table, self.rejects_table, self.key = engine, table, rejects_table, key

    def describe(self) -> str:
        return f"table {self.table} in {self.engine.url.render_as_string(hide_password=True)}"

    def define_predictions(self, key_type: Any, prediction_type: Any) -> sa.Table:
        schema, name = _split_name(self.table)
        return sa.Table(
            name,
            sa.MetaData(),
            sa.Column(self.key, _indexable(key_type), nullable=False),
            sa.Column("model_version", sa.Integer, nullable=False),
            sa.Column("prediction", prediction_type, nullable=True),
            sa.Column("score", sa.Float, nullable=True),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("run_key", sa.String(250), nullable=False),
            sa.UniqueConstraint(self.key, "model_version", name=f"uq_{name}_key_version"),
            sa.Index(f"ix_{name}_run_key", "run_key"),
            schema=schema,
        )

    def define_rejects(self) -> sa.Table:
        schema, name = _split_name(self.rejects_table)
        return sa.Table(
            name,
            sa.MetaData(),
            sa.Column("key", sa.Text, nullable=True),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("record", sa.Text, nullable=False),
            sa.Column("model_version", sa.Integer, nullable=False),
            sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("run_key", sa.String(250), nullable=False),
            sa.Index(f"ix_{name}_run_key", "run_key"),
            schema=schema,
        )

    @contextmanager
    def window(self, window: Window, *, prediction_kind: str) -> Iterator[WindowWriter]:
        """Replace ``window``'s rows by what is written inside the block, committed as one transaction."""
        with self.engine.begin() as conn:
            yield _TableWindow(self, conn, window, prediction_kind)


_SQL_TYPES = {"int": sa.BigInteger, "float": sa.Float, "str": sa.Text}
# DATETIME holds no zone on these: the UTC wall time goes in (and reads back as UTC).
_NAIVE_DATETIME_DIALECTS = {"mysql", "mariadb"}


def _indexable(key_type: Any) -> Any:
    """The key's type; text keys as VARCHAR(255) on MySQL, which cannot put TEXT in a unique index."""
    if key_type is sa.Text:
        return sa.Text().with_variant(sa.String(255), "mysql", "mariadb")
    return key_type


class _TableWindow(WindowWriter):
    def __init__(self, sink: TableSink, conn: sa.Connection, window: Window, prediction_kind: str) -> None:
        self.sink, self.conn, self.window, self.prediction_kind = sink, conn, window, prediction_kind
        self.predictions: sa.Table | None = None
        self.rejects = sink.define_rejects()
        self.created = False
        self.key_kind = None
        schema, name = _split_name(sink.table)
        inspector = sa.inspect(conn)
        if inspector.has_table(name, schema=schema):
            columns = {c["name"]: c for c in inspector.get_columns(name, schema=schema)}
            expected = {sink.key, "model_version", "prediction", "score", "scored_at", "run_key"}
            if not expected <= set(columns):
                raise MlpipeError(
                    f"table {sink.table} exists without the prediction columns {sorted(expected - set(columns))}; "
                    "name another table in the spec's score.table, or drop it"
                )
            self.key_kind = "int" if _is_integer_type(columns[sink.key]["type"]) else "str"
            self.predictions = sink.define_predictions(_SQL_TYPES[self.key_kind], _SQL_TYPES[prediction_kind])
            conn.execute(sa.delete(self.predictions).where(self.predictions.c.run_key == window.run_key))
        if inspector.has_table(self.rejects.name, schema=self.rejects.schema):
            conn.execute(sa.delete(self.rejects).where(self.rejects.c.run_key == window.run_key))

    def scored_keys(self) -> KeySet:
        keys = KeySet()
        if self.predictions is None:
            return keys
        t = self.predictions
        query = sa.select(t.c[self.sink.key]).where(
            t.c.model_version == self.window.model_version, t.c.run_key != self.window.run_key
        )
        dtype = "int64" if self.key_kind == "int" else object
        # yield_per on the statement: Connection.execution_options would stream the inserts that follow too.
        for part in self.conn.execute(query.execution_options(yield_per=KEY_READ_ROWS)).partitions():
            keys.add(np.asarray([row[0] for row in part], dtype=dtype))
        return keys

    def write(self, predictions: pd.DataFrame, rejects: pd.DataFrame) -> None:
        if self.predictions is None:
            self.key_kind = _kind_of(predictions[self.sink.key]) if len(predictions) else "str"
            self.predictions = self.sink.define_predictions(_SQL_TYPES[self.key_kind], _SQL_TYPES[self.prediction_kind])
        if not self.created:
            # In the window's transaction: a window that fails leaves no table behind either.
            self.predictions.create(self.conn, checkfirst=True)
            self.rejects.create(self.conn, checkfirst=True)
            self.created = True
        _insert(self.conn, self.predictions, predictions)
        _insert(self.conn, self.rejects, rejects[list(REJECT_COLUMNS)])


def _is_integer_type(sql_type: Any) -> bool:
    try:
        return issubclass(sql_type.python_type, int) and not issubclass(sql_type.python_type, bool)
    except NotImplementedError:
        return False


def _kind_of(values: pd.Series) -> str:
    return "int" if pd.api.types.is_integer_dtype(values.dtype) else "str"


def _insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    """Insert ``frame``'s rows with one driver-level executemany.

    SQLAlchemy's per-row parameter handling costs more than the database's insert at this volume
    (~25 us a row against ~7), so the statement is compiled once for the connection's dialect, each
    column converted once (numpy to Python values, NaN to None, the column type's bind processor:
    once for a column that holds a single value, such as ``scored_at``), and the rows handed to the
    driver as they are.
    """
    if not len(frame):
        return
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(frame.columns))
    columns = []
    for name in frame.columns:
        values = frame[name]
        if isinstance(table.c[name].type, sa.DateTime) and conn.dialect.name in _NAIVE_DATETIME_DIALECTS:
            values = pd.to_datetime(values, utc=True).dt.tz_localize(None)
        process = table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        if values.nunique(dropna=False) == 1:
            first = values.iloc[:1].astype(object).where(values.iloc[:1].notna(), None).tolist()[0]
            columns.append([process(first) if process else first] * len(values))
            continue
        python = values.astype(object).where(values.notna(), None).tolist()
        columns.append([process(v) for v in python] if process else python)
    if compiled.positional:
        order = [list(frame.columns).index(name) for name in compiled.positiontup]
        rows: list[Any] = list(zip(*(columns[i] for i in order), strict=True))
    else:
        names = list(frame.columns)
        rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    conn.exec_driver_sql(compiled.string, rows)


# --- Parquet in the artifact store -----------------------------------------------------------------


class ParquetSink:
    """Predictions and rejects as Parquet under ``<pipeline>/predictions/`` in the artifact store."""

    def __init__(self, store: ArtifactStore, *, pipeline: str, key: str) -> None:
        self.store, self.pipeline, self.key = store, pipeline, key

    def describe(self) -> str:
        return f"Parquet under {self.store.uri(layout.predictions_prefix(self.pipeline))}/"

    def manifests(self) -> list[dict[str, Any]]:
        """The committed windows, each manifest with its ``run_key``; oldest as-of first."""
        out = []
        for key in self.store.list(layout.predictions_prefix(self.pipeline)):
            parsed = layout.try_parse_key(key)
            if parsed is not None and parsed.path == MANIFEST_FILE:
                out.append(json.loads(self.store.get_bytes(key)))
        return sorted(out, key=lambda m: (m["as_of"], m["run_key"]))

    def read(self, manifest: dict[str, Any], which: str = "predictions", columns: list[str] | None = None) -> Any:
        """A committed window's predictions (or ``which="rejects"``) as a DataFrame, verified by sha256."""
        entry = manifest[which]
        with self.store.local_copy(entry["key"], expected_sha256=entry["sha256"]) as path:
            return pq.read_table(path, columns=columns).to_pandas()

    @contextmanager
    def window(self, window: Window, *, prediction_kind: str) -> Iterator[WindowWriter]:
        """Write ``window``'s files to a new attempt; publish them and then the manifest when the block ends."""
        with tempfile.TemporaryDirectory(prefix="mlpipe-predictions-") as tmp:
            writer = _ParquetWindow(self, window, prediction_kind, Path(tmp))
            try:
                yield writer
            finally:
                writer.close()
            writer.commit()


_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}


class _ParquetWindow(WindowWriter):
    def __init__(self, sink: ParquetSink, window: Window, prediction_kind: str, tmp: Path) -> None:
        self.sink, self.window, self.prediction_kind, self.tmp = sink, window, prediction_kind, tmp
        self.others = [m for m in sink.manifests() if m["run_key"] != window.run_key]
        self.key_kind = next((m["key_kind"] for m in self.others), None)
        self.rows = {"predictions": 0, "rejects": 0}
        self.writers: dict[str, pq.ParquetWriter] = {}

    def scored_keys(self) -> KeySet:
        keys = KeySet()
        for manifest in self.others:
            if manifest["model_version"] == self.window.model_version:
                keys.add(self.sink.read(manifest, columns=[self.sink.key])[self.sink.key].to_numpy())
        return keys

    def _schemas(self) -> dict[str, pa.Schema]:
        stamp = pa.timestamp("us", tz="UTC")
        return {
            "predictions": pa.schema(
                [
                    (self.sink.key, _ARROW_TYPES[self.key_kind or "str"]),
                    ("model_version", pa.int64()),
                    ("prediction", _ARROW_TYPES[self.prediction_kind]),
                    ("score", pa.float64()),
                    ("scored_at", stamp),
                    ("run_key", pa.string()),
                ]
            ),
            "rejects": pa.schema(
                [
                    ("key", pa.string()),
                    ("reason", pa.string()),
                    ("record", pa.string()),
                    ("model_version", pa.int64()),
                    ("scored_at", stamp),
                    ("run_key", pa.string()),
                ]
            ),
        }

    def write(self, predictions: pd.DataFrame, rejects: pd.DataFrame) -> None:
        if self.key_kind is None and len(predictions):
            self.key_kind = _kind_of(predictions[self.sink.key])
        for which, frame in (("predictions", predictions), ("rejects", rejects[list(REJECT_COLUMNS)])):
            if not len(frame):
                continue
            schema = self._schemas()[which]
            if which not in self.writers:
                self.writers[which] = pq.ParquetWriter(self.tmp / f"{which}.parquet", schema, compression="zstd")
            self.writers[which].write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            self.rows[which] += len(frame)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def commit(self) -> None:
        sink, window = self.sink, self.window
        prefix = layout.predictions_prefix(sink.pipeline, window.run_key)
        attempt = uuid.uuid4().hex[:12]
        schemas = self._schemas()
        manifest: dict[str, Any] = {
            "run_key": window.run_key,
            "run_id": window.run_id,
            "model_version": window.model_version,
            "as_of": window.as_of.isoformat(),
            "key": sink.key,
            "key_kind": self.key_kind or "str",
            "attempt": attempt,
        }
        for which, file in (("predictions", PREDICTIONS_FILE), ("rejects", REJECTS_FILE)):
            path = self.tmp / f"{which}.parquet"
            if which not in self.writers:
                pq.write_table(schemas[which].empty_table(), path, compression="zstd")
            artifact = sink.store.put_file(layout.predictions_file(sink.pipeline, window.run_key, attempt, file), path)
            manifest[which] = {"key": artifact.key, "sha256": artifact.sha256, "rows": self.rows[which]}
        # The manifest is the commit: until it is replaced, readers keep reading the earlier attempt.
        sink.store.put_bytes(
            layout.predictions_manifest(sink.pipeline, window.run_key), json.dumps(manifest, indent=2).encode()
        )
        for key in sink.store.list(prefix):
            part = layout.parse_key(key).path.split("/")[0]
            if part not in (MANIFEST_FILE, attempt):
                sink.store.delete_prefix(f"{prefix}/{part}")
