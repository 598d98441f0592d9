"""The artifact store's Connection -> a LocalStore or an S3Store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlpipe import config
from mlpipe.hooks.aws import s3_client
from mlpipe.hooks.connections import get_connection

if TYPE_CHECKING:
    from mlpipe.storage import ArtifactStore


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
