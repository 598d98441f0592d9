"""Where the Connection resolution of the operators used to live: it moved to :mod:`mlpipe.hooks`.

Names kept for code written against this module; new code imports from ``mlpipe.hooks.*``.
"""

from __future__ import annotations

from mlpipe.hooks.aws import s3_client
from mlpipe.hooks.connections import get_connection
from mlpipe.hooks.source import open_source
from mlpipe.hooks.sql import (
    checked_sqlite_url,
    database_url,
    open_registry,
    source_engine,
    sqlalchemy_url,
    target_engine,
)
from mlpipe.hooks.store import open_store

__all__ = [
    "checked_sqlite_url",
    "database_url",
    "get_connection",
    "open_registry",
    "open_source",
    "open_store",
    "s3_client",
    "source_engine",
    "sqlalchemy_url",
    "target_engine",
]
