"""SQL Connections -> SQLAlchemy URLs and engines through their provider's DbApiHook; the model registry.

A Connection is resolved the way Airflow resolves it for its own SQL operators:
``Connection.get_hook()`` gives the provider's :class:`~airflow.providers.common.sql.hooks.sql.DbApiHook`
(``PostgresHook``, ``MySqlHook``, Snowflake's, MSSQL's, ...), whose ``sqlalchemy_url`` (or, for hooks
that do not build one, ``get_uri()``) names the database. So any database with an Airflow provider
and a SQLAlchemy dialect can be a source or the registry. Two cases stay mlpipe's own: a
``sqlite`` Connection (Airflow's sqlite provider is not installed; :func:`sqlite_url`), and an extra
``sqlalchemy_url``, which wins over everything (a dialect no provider knows).
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlpipe import config
from mlpipe.hooks.connections import get_connection

if TYPE_CHECKING:
    import sqlalchemy as sa

    from mlpipe.registry import Registry

log = logging.getLogger(__name__)

_TYPE_ALIASES = {"postgresql": "postgres"}

# Hook arguments mlpipe passes unless the Connection's extra says otherwise: PostgreSQL stays on
# psycopg2, the driver the tests and the extraction benchmark measure (the provider would pick psycopg 3).
_HOOK_DEFAULTS: dict[str, dict[str, Any]] = {"postgres": {"sqlalchemy_scheme": "postgresql+psycopg2"}}


def sqlite_url(conn: Any) -> str:
    """The SQLAlchemy URL of a ``sqlite`` Connection: its file, from host (or schema).

    Airflow keeps the file in host (``sqlite://%2Fpath%2Fto.db``), but the URI ``sqlite:////path/to.db``
    puts it in schema. With neither, ``sqlite:///`` would be an in-memory database, fresh in every
    process, so that is refused.
    """
    path = conn.host or conn.schema
    if not path:
        raise ValueError(
            f"connection {conn.conn_id!r} (sqlite) names no database file: put its path in host, "
            "e.g. AIRFLOW_CONN_<ID>='sqlite://%2Fpath%2Fto%2Fsource.db'"
        )
    return f"sqlite:///{path}"


def db_hook(conn: Any) -> Any:
    """The provider's DbApiHook for ``conn`` (a ValueError naming the Connection when there is none)."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    conn_type = (conn.conn_type or "").lower()
    if conn_type in _TYPE_ALIASES:  # as Airflow normalises a URI's scheme; a Connection built in code may not be
        conn_type = _TYPE_ALIASES[conn_type]
        conn = copy.copy(conn)
        conn.conn_type = conn_type
    params = {k: v for k, v in _HOOK_DEFAULTS.get(conn_type, {}).items() if k not in (conn.extra_dejson or {})}
    # The registry Connection.get_hook() itself consults: which provider hook serves this type.
    info = ProvidersManagerTaskRuntime().hooks.get(conn_type)
    if info is None:
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}, for which no installed Airflow provider "
            "has a hook; install the provider of that database, or put a SQLAlchemy URL in the connection's "
            "extra field 'sqlalchemy_url'"
        )
    if not issubclass(import_string(info.hook_class_name), DbApiHook):
        raise ValueError(
            f"connection {conn.conn_id!r} has type {conn.conn_type!r}, whose hook {info.hook_class_name} is not "
            "SQL (not a DbApiHook); mlpipe reads SQL databases, or any database whose SQLAlchemy URL is in the "
            "extra field 'sqlalchemy_url'"
        )
    # The Connection itself goes in (DbApiHook takes ``connection=``), so the hook does not look it up again.
    return conn.get_hook(hook_params={**params, "connection": conn})


def sqlalchemy_url(conn: Any) -> str:
    """The SQLAlchemy URL (password included) of an Airflow Connection.

    Extra ``sqlalchemy_url`` wins; a ``sqlite`` Connection is its file; every other type asks its
    provider's hook (``sqlalchemy_url``, else ``get_uri()``).
    """
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    if (conn.conn_type or "").lower() == "sqlite":
        return sqlite_url(conn)
    hook = db_hook(conn)
    try:
        url = hook.sqlalchemy_url
    except NotImplementedError:  # the hook builds a URI string, not a URL object (MySqlHook, ...)
        return str(hook.get_uri())
    return url if isinstance(url, str) else url.render_as_string(hide_password=False)


def database_url(conn_id: str, default: str) -> str:
    """The URL of Connection ``conn_id``; ``default`` when it is defined nowhere."""
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
    """The model registry in the database of ``conn_id`` (the SQLite file under MLPIPE_HOME without it)."""
    from mlpipe.registry import Registry

    return Registry.from_url(database_url(conn_id, config.default_registry_url()), store_root=store_root)


def store_root() -> str:
    """The root URI of the artifact store the store Connection names (for the registry's migrations)."""
    from mlpipe.hooks.store import open_store

    return open_store().root_uri
