"""Airflow Connections -> SQLAlchemy engines, the model registry and the artifact store.

A connection id that is not defined means the embedded default under MLPIPE_HOME, so the same
DAGs run with zero servers and, once Connections exist, against PostgreSQL and S3.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlpipe import config

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlpipe.registry import Registry
    from mlpipe.spec import SourceSpec
    from mlpipe.storage import ArtifactStore

log = logging.getLogger(__name__)


def get_connection(conn_id: str) -> Any | None:
    """The Airflow Connection ``conn_id``, or None when it is not defined anywhere."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def sqlalchemy_url(conn: Any) -> str:
    """A SQLAlchemy URL for an Airflow Connection (extra ``sqlalchemy_url`` wins when set)."""
    from sqlalchemy.engine import URL

    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        # Airflow keeps the file in host (sqlite://%2Fpath%2Fto.db), but the URI sqlite:////path/to.db
        # puts it in schema. With neither, "sqlite:///" would be an in-memory DB, fresh in every process.
        path = conn.host or conn.schema
        if not path:
            raise ValueError(
                f"connection {conn.conn_id!r} (sqlite) names no database file: put its path in host, "
                "e.g. AIRFLOW_CONN_<ID>='sqlite://%2Fpath%2Fto%2Fsource.db'"
            )
        return f"sqlite:///{path}"
    if conn_type in {"postgres", "postgresql"}:
        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        ).render_as_string(hide_password=False)
    raise ValueError(
        f"connection {conn.conn_id!r} has type {conn.conn_type!r}; mlpipe reads 'sqlite' and 'postgres' "
        "connections, or any database whose SQLAlchemy URL is in the extra field 'sqlalchemy_url'"
    )


def database_url(conn_id: str, default: str) -> str:
    conn = get_connection(conn_id)
    if conn is None:
        log.info("Connection %s is not defined: using the embedded default %s", conn_id, default)
        return default
    return sqlalchemy_url(conn)


def source_engine(conn_id: str, *, read_only: bool = True) -> sa.Engine:
    """An engine on the source ``conn_id``; a SQLite file is checked first and, by default, opened read-only."""
    import sqlalchemy as sa

    url = database_url(conn_id, config.default_source_url())
    return sa.create_engine(checked_sqlite_url(url, read_only=read_only) if url.startswith("sqlite") else url)


def target_engine(conn_id: str) -> sa.Engine:
    """An engine on a database mlpipe writes to (scores); a SQLite file is created when missing."""
    import sqlalchemy as sa

    return sa.create_engine(database_url(conn_id, config.default_source_url()))


def checked_sqlite_url(url: str, *, read_only: bool) -> str:
    """``url`` of a SQLite source after checking its file exists and is a readable database.

    SQLite would otherwise create a missing file (an empty database whose first query says "no such
    table") and report a permission problem as "unable to open database file" without the path.
    Every problem is an :class:`ExtractError` naming the file, so the task fails without retries.
    ``read_only`` opens it in SQLite's ``mode=ro``: reading the source can never write to it.
    """
    import sqlite3

    import sqlalchemy as sa

    from mlpipe.errors import ExtractError

    parsed = sa.engine.make_url(url)
    database = parsed.database or ""
    if database in {"", ":memory:"} or database.startswith("file:"):
        return url  # in-memory, or a URI the connection's owner wrote on purpose
    path = Path(database).expanduser().resolve()
    if not path.exists():
        raise ExtractError(
            f"source database {path} does not exist; create it (e.g. `python -m mlpipe demo seed`) or point the "
            "source connection at the right file"
        )
    if not path.is_file():
        raise ExtractError(f"source database {path} is not a file")
    uri = f"file:{quote(str(path))}?mode=ro"
    try:
        probe = sqlite3.connect(uri, uri=True)
        try:
            probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            probe.close()
    except sqlite3.Error as exc:
        reason = "permission denied" if not os.access(path, os.R_OK) else str(exc)
        raise ExtractError(f"source database {path} cannot be read: {reason}") from None
    if not read_only:
        return parsed.set(database=str(path)).render_as_string(hide_password=False)
    return f"sqlite:///{uri}&uri=true"


def open_registry(conn_id: str = config.REGISTRY_CONN_ID) -> Registry:
    from mlpipe.registry import Registry

    return Registry.from_url(database_url(conn_id, config.default_registry_url()))


def s3_client(conn_id: str) -> Any:
    """A boto3 S3 client for the Airflow AWS Connection ``conn_id``, through the amazon provider's hook.

    The connection carries what boto3 needs the way Airflow users already write it: login/password
    (or the environment's credentials chain), extra ``region_name``, ``endpoint_url`` for an
    S3-compatible store (MinIO, moto) and ``config_kwargs`` for botocore (e.g.
    ``{"s3": {"addressing_style": "path"}}``).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


@contextmanager
def open_source(source: SourceSpec, conn_id: str | None = None) -> Iterator[Any]:
    """What the spec's source is read through, from its Connection (``conn_id`` overrides the spec's).

    ``kind: sql``: a SQLAlchemy engine (the embedded SQLite source without a Connection), disposed
    on exit. ``kind: s3``: a boto3 S3 client for the AWS Connection (without one, boto3's own
    credential chain and endpoint).
    """
    conn_id = conn_id or source.connection_id
    if source.kind == "s3":
        yield s3_client(conn_id)
        return
    engine = source_engine(conn_id)
    try:
        yield engine
    finally:
        engine.dispose()


def open_store(conn_id: str = config.STORE_CONN_ID) -> ArtifactStore:
    """The artifact store the Connection ``conn_id`` names; the local directory under MLPIPE_HOME without one.

    - type ``fs``: a local (or mounted) directory, extra ``path`` (or host);
    - type ``aws``: a bucket, extra ``bucket`` and optional ``prefix``; credentials and endpoint
      from the same connection, or from the AWS connection named in extra ``aws_conn_id``.
    """
    from mlpipe.storage import LocalStore, S3Store

    conn = get_connection(conn_id)
    if conn is None:
        return LocalStore(config.default_store_root())
    conn_type = (conn.conn_type or "").lower()
    extra = conn.extra_dejson or {}
    if conn_type in {"fs", "file", "local"}:
        return LocalStore(extra.get("path") or conn.host)
    if conn_type in {"aws", "s3"}:
        bucket = extra.get("bucket")
        if not bucket:
            raise ValueError(
                f"connection {conn_id!r} (aws) names no bucket: set extra 'bucket' (and optionally 'prefix'), "
                f"e.g. AIRFLOW_CONN_{conn_id.upper()}='aws://?bucket=mlpipe&prefix=artifacts&endpoint_url=...'"
            )
        return S3Store(str(bucket), str(extra.get("prefix") or ""), s3_client(extra.get("aws_conn_id") or conn_id))
    raise ValueError(
        f"connection {conn_id!r} has type {conn.conn_type!r}; the artifact store reads 'fs' connections "
        "(extra 'path'), 'aws' connections (extra 'bucket', 'prefix') or none (MLPIPE_HOME/artifacts)"
    )
