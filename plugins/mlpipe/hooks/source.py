"""A pipeline's source Connection -> what its reader reads through (a SQLAlchemy engine or a boto3 client)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlpipe.hooks.aws import s3_client
from mlpipe.hooks.sql import source_engine

if TYPE_CHECKING:
    from mlpipe.spec import SourceSpec


def _close(handle: Any) -> None:
    dispose = getattr(handle, "dispose", None)  # engines; boto3 clients hold no pool worth closing
    if dispose is not None:
        dispose()


# One resolver per source kind: the Connection id -> the handle its reader takes.
_RESOLVERS: dict[str, Callable[[str], Any]] = {"sql": source_engine, "s3": s3_client}


@contextmanager
def open_source(source: SourceSpec, conn_id: str | None = None) -> Iterator[Any]:
    """What the spec's source is read through, from its Connection (``conn_id`` overrides the spec's).

    ``kind: sql``: a SQLAlchemy engine (the embedded SQLite source without a Connection), disposed
    on exit. ``kind: s3``: a boto3 S3 client for the AWS Connection (without one, boto3's own
    credential chain and endpoint).
    """
    handle = _RESOLVERS[source.kind](conn_id or source.connection_id)
    try:
        yield handle
    finally:
        _close(handle)
