"""Schema migrations of the registry database (Alembic): the only way its tables are created or changed.

``Registry.from_url`` brings a database to the newest revision on first use in a process, so the
embedded default needs no step; deployments run ``python -m mlpipe registry upgrade`` once per
release (the compose stack's init container does). Migrations run under a lock (a PostgreSQL
advisory lock, a file lock beside a SQLite file), so processes starting together migrate once.
A registry created before migrations existed (tables, no version table) is stamped at the
baseline first, then upgraded.

A schema change is a new file in ``versions/`` (``down_revision`` = the previous head) plus the
same change to the tables in ``mlpipe.registry``; a test compares the two.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "mlpipe_alembic_version"
BASELINE = "0001"
# A table every registry has had since the first release: present without a version table means
# a registry made before migrations, to be stamped at the baseline.
BASELINE_MARKER = "mlpipe_model_versions"
# pg_advisory_xact_lock key: the first 8 bytes of a hash of this name, as a signed bigint.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"mlpipe.registry.migrate").digest()[:8], "big", signed=True)

# URLs already at head in this process: the check then costs nothing on later opens.
_current: set[str] = set()


# The artifact store's root URI, or a function that gives it (opening the store only if a migration
# asks): revision 0004 turns absolute artifact URIs under it into store-relative keys.
StoreRoot = str | Callable[[], str] | None


def _config(connection: sa.Connection, store_root: StoreRoot = None) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    cfg.attributes["store_root"] = store_root
    return cfg


@cache
def head_revision() -> str:
    """The newest revision in ``versions/`` (exactly one head: a fork is a bug)."""
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory(str(HERE)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"registry migrations have {len(heads)} heads {heads}; chain them into one")
    return heads[0]


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at; None for an empty database (or one made before migrations).

    Read straight from the version table: every registry open in every task asks this.
    """
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    revisions = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(revisions) > 1:
        raise RuntimeError(f"registry version table {VERSION_TABLE} holds several revisions {revisions}")
    return revisions[0] if revisions else None


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that only one migrating process holds at a time."""
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        lock_path = Path(f"{engine.url.database}.migrate-lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with engine.begin() as conn:
                    yield conn
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        yield conn


def upgrade(engine: sa.Engine, revision: str = "head", *, store_root: StoreRoot = None) -> str:
    """Bring the registry database to ``revision`` (default: the newest); returns the revision reached.

    ``store_root``: the artifact store's root URI (default: the embedded store under MLPIPE_HOME).
    """
    from alembic import command

    with _migration_lock(engine) as conn:
        cfg = _config(conn, store_root)
        if current_revision(conn) is None and sa.inspect(conn).has_table(BASELINE_MARKER):
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, revision)
        reached = current_revision(conn)
    return reached or ""


def downgrade(engine: sa.Engine, revision: str, *, store_root: StoreRoot = None) -> str:
    """Take the registry database back to ``revision`` ("base": no mlpipe tables); returns where it is."""
    from alembic import command

    with _migration_lock(engine) as conn:
        command.downgrade(_config(conn, store_root), revision)
        reached = current_revision(conn)
    _current.discard(engine.url.render_as_string(hide_password=False))
    return reached or ""


def ensure_current(engine: sa.Engine, *, store_root: StoreRoot = None) -> None:
    """Upgrade to head unless this process already saw the database there (one cheap check per URL)."""
    key = engine.url.render_as_string(hide_password=False)
    if key in _current:
        return
    with engine.connect() as conn:
        at_head = current_revision(conn) == head_revision()
    if not at_head:
        upgrade(engine, store_root=store_root)
    _current.add(key)
