"""The model registry: model versions and an append-only champion log in their own database.

SQLite file under MLPIPE_HOME by default, PostgreSQL through the ``mlpipe_registry`` Connection in
the full stack. Its schema is made and changed by Alembic migrations only (mlpipe.migrations);
the tables below must match them, which a test checks. Promotion is a compare-and-swap: the
champion log's sequence number the evaluator saw must still be the latest one, and a unique
(pipeline, seq) constraint makes two concurrent promoters unable to both append.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mlpipe import layout, migrations
from mlpipe.errors import ChampionChangedError, RegistryError

metadata = sa.MetaData()

model_versions = sa.Table(
    "mlpipe_model_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(64), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("candidate", sa.String(64), nullable=False),
    sa.Column("estimator", sa.String(200), nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("data_sha256", sa.String(64), nullable=False),
    sa.Column("data_rows", sa.BigInteger, nullable=False),
    sa.Column("spec_sha256", sa.String(64), nullable=False),
    sa.Column("code_version", sa.String(100), nullable=False),
    # Store-relative (mlpipe.layout): the champion stays found when the store moves (migration 0004).
    sa.Column("artifact_key", sa.Text, nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("pipeline", "version", name="uq_mlpipe_version"),
    sa.UniqueConstraint("pipeline", "run_id", name="uq_mlpipe_version_run"),
)

champion_log = sa.Table(
    "mlpipe_champion_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(64), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("previous_version", sa.Integer, nullable=True),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("pipeline", "seq", name="uq_mlpipe_champion_seq"),
)

# How far each pipeline's watch has seen its source; moved only with the new_data event it causes.
# The watermark column need not be unique, so the watermark is its value plus the rows at that value
# already announced (rows_at_value): rows arriving late with exactly that value are still new. NULL
# (a watermark written before the count was kept) counts every row at the value as announced.
watermarks = sa.Table(
    "mlpipe_watermarks",
    metadata,
    sa.Column("pipeline", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("rows_at_value", sa.BigInteger, nullable=True),
    sa.Column("rows_seen", sa.BigInteger, nullable=False),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Every drift check: its window, figures and verdict, and whether it emitted the drift event.
drift_history = sa.Table(
    "mlpipe_drift_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(64), nullable=False),
    sa.Column("window_start", sa.String(40), nullable=False),
    sa.Column("window_end", sa.String(40), nullable=False),
    sa.Column("champion_version", sa.Integer, nullable=False),
    sa.Column("verdict", sa.String(30), nullable=False),
    sa.Column("breach", sa.Boolean, nullable=False),
    sa.Column("emitted", sa.Boolean, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_mlpipe_drift_window", "pipeline", "window_end", "champion_version"),
)

# The run index: one row per run of a pipeline's DAGs that keeps a record in the artifact store
# (``<pipeline>/runs/<run_key>/run.json``), with what the Models view and the CLI list about it.
# The runs upsert their row where they write run.json, the verdict and the promotion; the store
# stays the source of truth (mlpipe.stages.runs.reindex rebuilds a pipeline's rows from it).
runs_index = sa.Table(
    "mlpipe_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(64), nullable=False),
    sa.Column("run_key", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=True),
    sa.Column("dag_id", sa.String(250), nullable=True),
    sa.Column("trigger", sa.String(40), nullable=True),
    sa.Column("as_of", sa.String(40), nullable=False),
    sa.Column("data_sha256", sa.String(64), nullable=True),
    sa.Column("spec_sha256", sa.String(64), nullable=True),
    sa.Column("code_version", sa.String(100), nullable=True),
    sa.Column("files", sa.JSON, nullable=False),
    sa.Column("verdict", sa.JSON, nullable=True),
    sa.Column("promotion", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("pipeline", "run_key", name="uq_mlpipe_run"),
    sa.Index("ix_mlpipe_runs_as_of", "pipeline", "as_of"),
    sa.Index("ix_mlpipe_runs_inputs", "pipeline", "data_sha256"),
)
RUN_COLUMNS = tuple(c.name for c in runs_index.columns if c.name not in ("id", "pipeline", "updated_at"))

ACTIONS = ("promote", "first", "force", "rollback")


def encode_watermark(value: Any) -> str:
    """Watermarks keep their type (number, text, timestamp) through the registry's text column."""
    if isinstance(value, datetime):
        return json.dumps({"datetime": value.isoformat()})
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return json.dumps(value)
    raise RegistryError(f"cannot keep a watermark of type {type(value).__name__}: {value!r}")


def decode_watermark(text: str | None) -> Any:
    if text is None:
        return None
    value = json.loads(text)
    if isinstance(value, dict):
        return datetime.fromisoformat(value["datetime"])
    return value


class Watermark(NamedTuple):
    """How far a pipeline's watch has announced its source."""

    value: Any  # None before the first new_data event
    rows_at_value: int | None  # rows with exactly ``value`` already announced; None: all of them
    rows_seen: int  # every row announced so far


@dataclass(frozen=True)
class ModelVersion:
    pipeline: str
    version: int
    run_id: str
    candidate: str
    estimator: str
    params: dict[str, Any]
    metrics: dict[str, float]
    data_sha256: str
    data_rows: int
    spec_sha256: str
    code_version: str
    artifact_key: str  # relative to the artifact store's root (an absolute URI in a registry from before 0004)
    artifact_sha256: str
    lineage: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@dataclass(frozen=True)
class ChampionEvent:
    pipeline: str
    seq: int
    version: int
    previous_version: int | None
    action: str
    reason: str
    actor: str
    run_id: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["created_at"] = self.created_at.isoformat()
        return out


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _version(row: Any) -> ModelVersion:
    m = row._mapping
    values = {k: m[k] for k in ModelVersion.__dataclass_fields__ if k != "created_at"}
    values["artifact_key"] = stored_key(values["artifact_key"], values["pipeline"], values["version"])
    return ModelVersion(**values, created_at=_utc(m["created_at"]))


def stored_key(entry: str, pipeline: str, version: int) -> str:
    """A version's artifact entry as a store-relative key when the layout can tell it.

    Entries are keys since migration 0004, which leaves an absolute URI it could not place (and warns);
    one that ends in this version's key (``.../<pipeline>/models/v<version>/...``) is read as that key,
    wherever the store was. Anything else is returned as it is, for the store to resolve
    (:meth:`mlpipe.storage.ArtifactStore.key_of`) or refuse.
    """
    if "://" not in entry:
        return entry
    return layout.model_key_in_uri(entry, pipeline, version) or entry


def _event(row: Any) -> ChampionEvent:
    m = row._mapping
    return ChampionEvent(
        **{k: m[k] for k in ChampionEvent.__dataclass_fields__ if k != "created_at"},
        created_at=_utc(m["created_at"]),
    )


def _run_row(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = {k: m[k] for k in RUN_COLUMNS}
    out["pipeline"] = m["pipeline"]
    out["updated_at"] = _utc(m["updated_at"]).isoformat()
    return out


class Registry:
    """Model versions and champions of every pipeline, in one SQL database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str, *, create: bool = True, store_root: migrations.StoreRoot = None) -> Registry:
        """The registry at ``url``, brought to the newest schema unless ``create`` is False.

        ``store_root``: the artifact store's root URI (or a function giving it), for a migration that
        makes recorded URIs store-relative; default the embedded store under MLPIPE_HOME.
        """
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            # Concurrent task processes share the file: wait for locks instead of failing at once.
            kwargs["connect_args"] = {"timeout": 30}
        registry = cls(sa.create_engine(url, **kwargs))
        if create:
            migrations.ensure_current(registry.engine, store_root=store_root)
        return registry

    def create_schema(self) -> str:
        """Bring the database to the newest schema (Alembic migrations); returns the revision reached."""
        return migrations.upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """``engine.begin()``; a database that refuses writes is a RegistryError naming it (no retry can help)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            if not _refuses_writes(exc):
                raise
            url = self.engine.url
            where = url.database.removeprefix("file:") if url.get_backend_name() == "sqlite" and url.database else None
            where = where or url.render_as_string(hide_password=True)
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
            raise RegistryError(
                f"registry database {where} refuses writes ({reason}); nothing was written: make it writable "
                "or point the mlpipe_registry connection at a writable database"
            ) from None

    # -- reads ----------------------------------------------------------------------------------

    def champion_seq(self, pipeline: str) -> int:
        """The compare-and-swap token: how many champion changes the pipeline has had."""
        with self.engine.connect() as conn:
            return self._seq(conn, pipeline)

    @staticmethod
    def _seq(conn: sa.Connection, pipeline: str) -> int:
        stmt = sa.select(sa.func.max(champion_log.c.seq)).where(champion_log.c.pipeline == pipeline)
        return conn.execute(stmt).scalar() or 0

    def champion(self, pipeline: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            last = conn.execute(
                sa.select(champion_log.c.version)
                .where(champion_log.c.pipeline == pipeline)
                .order_by(champion_log.c.seq.desc())
                .limit(1)
            ).scalar()
            if last is None:
                return None
            row = conn.execute(
                sa.select(model_versions).where(model_versions.c.pipeline == pipeline, model_versions.c.version == last)
            ).one()
            return _version(row)

    def get_version(self, pipeline: str, version: int) -> ModelVersion:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(model_versions).where(
                    model_versions.c.pipeline == pipeline, model_versions.c.version == version
                )
            ).first()
        if row is None:
            raise RegistryError(f"pipeline {pipeline!r} has no model version {version}")
        return _version(row)

    def version_for_run(self, pipeline: str, run_id: str) -> ModelVersion | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(model_versions).where(
                    model_versions.c.pipeline == pipeline, model_versions.c.run_id == run_id
                )
            ).first()
        return _version(row) if row is not None else None

    def list_versions(self, pipeline: str) -> list[ModelVersion]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(model_versions)
                .where(model_versions.c.pipeline == pipeline)
                .order_by(model_versions.c.version)
            ).all()
        return [_version(r) for r in rows]

    def champion_history(self, pipeline: str) -> list[ChampionEvent]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(champion_log).where(champion_log.c.pipeline == pipeline).order_by(champion_log.c.seq)
            ).all()
        return [_event(r) for r in rows]

    def watermark(self, pipeline: str) -> Watermark:
        """The pipeline's watermark (value None and no rows before the first event)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(watermarks.c.value, watermarks.c.rows_at_value, watermarks.c.rows_seen).where(
                    watermarks.c.pipeline == pipeline
                )
            ).first()
        if row is None:
            return Watermark(None, 0, 0)
        at_value = None if row.rows_at_value is None else int(row.rows_at_value)
        return Watermark(decode_watermark(row.value), at_value, int(row.rows_seen))

    def advance_watermark(
        self,
        pipeline: str,
        *,
        expected: Any,
        expected_at_value: int | None,
        new: Any,
        new_at_value: int | None,
        rows: int,
        run_id: str,
        at: datetime | None = None,
    ) -> bool:
        """Move the watermark from (``expected``, ``expected_at_value``) to (``new``, ``new_at_value``).

        A compare-and-swap on both parts: False, and nothing written, if another run moved it first.
        """
        at = at or datetime.now(UTC)
        values = {"value": encode_watermark(new), "rows_at_value": new_at_value, "run_id": run_id, "updated_at": at}
        try:
            with self._transaction() as conn:
                if expected is None:
                    conn.execute(watermarks.insert().values(pipeline=pipeline, rows_seen=rows, **values))
                    return True
                at_value = watermarks.c.rows_at_value
                result = conn.execute(
                    watermarks.update()
                    .where(
                        watermarks.c.pipeline == pipeline,
                        watermarks.c.value == encode_watermark(expected),
                        at_value.is_(None) if expected_at_value is None else at_value == expected_at_value,
                    )
                    .values(rows_seen=watermarks.c.rows_seen + rows, **values)
                )
                return result.rowcount == 1
        except IntegrityError:
            return False

    def record_drift(
        self,
        pipeline: str,
        *,
        window_start: str,
        window_end: str,
        champion_version: int,
        verdict: str,
        breach: bool,
        figures: dict[str, Any],
        run_id: str,
        at: datetime | None = None,
    ) -> bool:
        """Append a drift check; returns whether this check is the one to emit the drift event.

        A breach emits once per (window, champion): a later check of the same window, or a retry,
        records its figures but does not emit again. One transaction, so two checks cannot both emit.
        """
        at = at or datetime.now(UTC)
        with self._transaction() as conn:
            if self.engine.dialect.name == "postgresql":
                conn.execute(sa.text("LOCK TABLE mlpipe_drift_history IN SHARE ROW EXCLUSIVE MODE"))
            already = conn.execute(
                sa.select(sa.func.count()).where(
                    drift_history.c.pipeline == pipeline,
                    drift_history.c.window_end == window_end,
                    drift_history.c.champion_version == champion_version,
                    drift_history.c.emitted.is_(True),
                )
            ).scalar()
            emit = breach and not already
            conn.execute(
                drift_history.insert().values(
                    pipeline=pipeline,
                    window_start=window_start,
                    window_end=window_end,
                    champion_version=champion_version,
                    verdict=verdict,
                    breach=breach,
                    emitted=emit,
                    figures=figures,
                    run_id=run_id,
                    created_at=at,
                )
            )
        return emit

    def drift_checks(self, pipeline: str) -> list[dict[str, Any]]:
        """Every drift check of ``pipeline``, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(drift_history).where(drift_history.c.pipeline == pipeline).order_by(drift_history.c.id)
            ).all()
        return [{**r._mapping, "created_at": _utc(r._mapping["created_at"]).isoformat()} for r in rows]

    # -- the run index ----------------------------------------------------------------------------

    def indexed_runs(
        self,
        pipeline: str,
        *,
        dag_id: str | None = None,
        newest: int | None = None,
        run_keys: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The index rows of ``pipeline``, oldest first by as-of time: only ``dag_id``'s (and records
        naming no DAG) when given, only ``run_keys`` when given, only the ``newest`` few when given.
        One query, whatever the history's length."""
        stmt = sa.select(runs_index).where(runs_index.c.pipeline == pipeline)
        if dag_id is not None:
            stmt = stmt.where(sa.or_(runs_index.c.dag_id == dag_id, runs_index.c.dag_id.is_(None)))
        if run_keys is not None:
            stmt = stmt.where(runs_index.c.run_key.in_(sorted(set(run_keys))))
        stmt = stmt.order_by(runs_index.c.as_of.desc(), runs_index.c.run_id.desc())
        if newest is not None:
            stmt = stmt.limit(newest)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [_run_row(r) for r in reversed(rows)]

    def indexed_run(self, pipeline: str, run_key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_index).where(runs_index.c.pipeline == pipeline, runs_index.c.run_key == run_key)
            ).first()
        return _run_row(row) if row is not None else None

    def indexed_run_count(self, pipeline: str) -> int:
        with self.engine.connect() as conn:
            stmt = sa.select(sa.func.count()).where(runs_index.c.pipeline == pipeline)
            return int(conn.execute(stmt).scalar() or 0)

    def runs_with_inputs(
        self, pipeline: str, *, data_sha256: str, spec_sha256: str, code_version: str
    ) -> list[dict[str, Any]]:
        """Index rows of earlier runs on the same data, spec and code, newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(runs_index)
                .where(
                    runs_index.c.pipeline == pipeline,
                    runs_index.c.data_sha256 == data_sha256,
                    runs_index.c.spec_sha256 == spec_sha256,
                    runs_index.c.code_version == code_version,
                )
                .order_by(runs_index.c.as_of.desc(), runs_index.c.run_id.desc())
            ).all()
        return [_run_row(r) for r in rows]

    def index_run(self, pipeline: str, row: dict[str, Any], *, at: datetime | None = None) -> None:
        """Insert or replace ``pipeline``'s index row of ``row["run_key"]`` (idempotent: retries rewrite it)."""
        values = {k: row.get(k) for k in RUN_COLUMNS}
        values.update(files=list(row.get("files") or []), updated_at=at or datetime.now(UTC))
        where = (runs_index.c.pipeline == pipeline, runs_index.c.run_key == values["run_key"])
        for _ in range(2):
            try:
                with self.engine.begin() as conn:
                    if conn.execute(runs_index.update().where(*where).values(**values)).rowcount:
                        return
                    conn.execute(runs_index.insert().values(pipeline=pipeline, **values))
                    return
            except IntegrityError:
                continue  # another writer inserted the row first: update it on the second pass
        raise RegistryError(f"could not index run {values['run_key']!r} of {pipeline!r}")

    def replace_run_index(self, pipeline: str, rows: list[dict[str, Any]], *, at: datetime | None = None) -> int:
        """Make ``rows`` the whole index of ``pipeline`` in one transaction (a rebuild); returns their count."""
        at = at or datetime.now(UTC)
        values = [
            {**{k: r.get(k) for k in RUN_COLUMNS}, "files": list(r.get("files") or []), "pipeline": pipeline}
            | {"updated_at": at}
            for r in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(runs_index.delete().where(runs_index.c.pipeline == pipeline))
            if values:
                conn.execute(runs_index.insert(), values)
        return len(values)

    def next_version(self, pipeline: str) -> int:
        with self.engine.connect() as conn:
            current = conn.execute(
                sa.select(sa.func.max(model_versions.c.version)).where(model_versions.c.pipeline == pipeline)
            ).scalar()
        return (current or 0) + 1

    # -- writes ---------------------------------------------------------------------------------

    def register_and_promote(
        self,
        new: ModelVersion,
        *,
        expected_seq: int,
        action: str,
        reason: str,
        actor: str,
        at: datetime | None = None,
    ) -> ChampionEvent:
        """Insert ``new`` and make it champion in one transaction, if the champion is still the one
        seen at ``expected_seq``; otherwise nothing is written and :class:`ChampionChangedError` is raised
        (:class:`RegistryError` when ``new.run_id`` already registered a version)."""
        if action not in ACTIONS:
            raise RegistryError(f"unknown champion action {action!r}; one of {ACTIONS}")
        at = at or datetime.now(UTC)
        try:
            with self._transaction() as conn:
                seq = self._seq(conn, new.pipeline)
                if seq != expected_seq:
                    raise ChampionChangedError(
                        f"champion of {new.pipeline!r} changed since evaluation "
                        f"(log seq {seq}, evaluated at {expected_seq}); re-run evaluation before promoting"
                    )
                previous = conn.execute(
                    sa.select(champion_log.c.version).where(
                        champion_log.c.pipeline == new.pipeline, champion_log.c.seq == seq
                    )
                ).scalar()
                values = new.as_dict()
                values["created_at"] = at
                conn.execute(model_versions.insert().values(**values))
                event = ChampionEvent(
                    pipeline=new.pipeline,
                    seq=seq + 1,
                    version=new.version,
                    previous_version=previous,
                    action=action,
                    reason=reason,
                    actor=actor,
                    run_id=new.run_id,
                    created_at=at,
                )
                conn.execute(champion_log.insert().values(**{**event.as_dict(), "created_at": at}))
        except IntegrityError as exc:
            done = self.version_for_run(new.pipeline, new.run_id)
            if done is not None:
                # Not a lost race for the champion: this run already has its version (a run registers one).
                raise RegistryError(
                    f"run {new.run_id!r} already registered {new.pipeline!r} v{done.version}; "
                    "a run registers at most one version, nothing was written"
                ) from None
            raise ChampionChangedError(
                f"another promotion of {new.pipeline!r} won the race (version {new.version} or champion "
                f"seq {expected_seq + 1} already taken); nothing was written: {exc.orig}"
            ) from None
        return event

    def rollback(
        self,
        pipeline: str,
        version: int,
        *,
        reason: str,
        actor: str,
        expected_seq: int | None = None,
        run_id: str | None = None,
        at: datetime | None = None,
    ) -> ChampionEvent:
        """Make the registered ``version`` champion again by appending a "rollback" event.

        Nothing is edited: the log gains one row saying who, when, why and from which version. A
        compare-and-swap like promotion: with ``expected_seq`` the log must still be at it, and two
        concurrent changes cannot both take the next seq (:class:`ChampionChangedError`, nothing
        written). :class:`RegistryError` for an empty reason, an unknown version, no champion yet, or
        a version that already is the champion.
        """
        if not reason or not reason.strip():
            raise RegistryError(f"a rollback of {pipeline!r} needs a reason (who asked, and why)")
        at = at or datetime.now(UTC)
        try:
            with self._transaction() as conn:
                seq = self._seq(conn, pipeline)
                if expected_seq is not None and seq != expected_seq:
                    raise ChampionChangedError(
                        f"champion of {pipeline!r} changed meanwhile (log seq {seq}, expected {expected_seq}); "
                        "nothing was written: look at the champion log and roll back again if still needed"
                    )
                known = conn.execute(
                    sa.select(model_versions.c.version).where(
                        model_versions.c.pipeline == pipeline, model_versions.c.version == version
                    )
                ).scalar()
                if known is None:
                    versions = conn.execute(
                        sa.select(model_versions.c.version)
                        .where(model_versions.c.pipeline == pipeline)
                        .order_by(model_versions.c.version)
                    ).scalars()
                    raise RegistryError(
                        f"pipeline {pipeline!r} has no model version {version} to roll back to; "
                        f"registered: {list(versions) or 'none'}"
                    )
                current = conn.execute(
                    sa.select(champion_log.c.version).where(
                        champion_log.c.pipeline == pipeline, champion_log.c.seq == seq
                    )
                ).scalar()
                if current == version:
                    raise RegistryError(f"{pipeline!r} v{version} already is the champion; nothing to roll back")
                event = ChampionEvent(
                    pipeline=pipeline,
                    seq=seq + 1,
                    version=version,
                    previous_version=current,
                    action="rollback",
                    reason=reason.strip(),
                    actor=actor,
                    run_id=run_id,
                    created_at=at,
                )
                conn.execute(champion_log.insert().values(**{**event.as_dict(), "created_at": at}))
        except IntegrityError as exc:
            raise ChampionChangedError(
                f"another change of {pipeline!r}'s champion took seq {seq + 1} first; nothing was written: {exc.orig}"
            ) from None
        return event


def _refuses_writes(exc: sa.exc.DBAPIError) -> bool:
    """A read-only database or a user without write permission (SQLite, PostgreSQL, MySQL wording)."""
    text = str(exc.orig).lower()
    code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
    markers = ("readonly database", "read-only", "read only", "permission denied", "command denied")
    return code in {"25006", "42501"} or any(marker in text for marker in markers)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
