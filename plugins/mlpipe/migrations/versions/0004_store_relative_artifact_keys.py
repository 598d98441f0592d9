"""Model versions record their artifact as a store-relative key (``artifact_uri`` -> ``artifact_key``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

An absolute URI made the champion "not in this store" once the store was copied, moved or restored
to another root (directory, bucket or prefix). Each existing entry becomes the key it names: the
part after the current store's root when it lies under it (the root the caller hands over, else
the embedded default ``MLPIPE_HOME/artifacts``), or else the version's own key at its end
(``.../<pipeline>/models/v<N>/...``, where the store used to be). An entry that is neither is left
as it is, with a warning naming it; the store still resolves it if it lies under its root.
The downgrade writes keys back as URIs under the same root.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

from mlpipe import config, layout

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("mlpipe.migrations")

_versions = sa.table(
    "mlpipe_model_versions",
    sa.column("id", sa.Integer),
    sa.column("pipeline", sa.String),
    sa.column("version", sa.Integer),
    sa.column("artifact_key", sa.Text),
)


def _store_root() -> str:
    """The artifact store's root URI (``file:///.../artifacts/``, ``s3://bucket/prefix/``)."""
    given: str | Callable[[], str] | None = context.config.attributes.get("store_root")
    root = given() if callable(given) else given
    root = root or f"file://{config.default_store_root()}/"
    return root if root.endswith("/") else f"{root}/"


def relative_key(entry: str, root: str, pipeline: str, version: int) -> str | None:
    """The key an absolute entry names, or None when it names none this revision can place."""
    if entry.startswith(root) and layout.try_parse_key(entry[len(root) :]) is not None:
        return entry[len(root) :]
    return layout.model_key_in_uri(entry, pipeline, version)


def upgrade() -> None:
    with op.batch_alter_table("mlpipe_model_versions") as batch:
        batch.alter_column(
            "artifact_uri", new_column_name="artifact_key", existing_type=sa.Text, existing_nullable=False
        )
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(_versions.c.id, _versions.c.pipeline, _versions.c.version, _versions.c.artifact_key)
        .where(_versions.c.artifact_key.contains("://"))
        .order_by(_versions.c.id)
    ).all()
    if not rows:
        return
    root = _store_root()
    for row in rows:
        key = relative_key(row.artifact_key, root, row.pipeline, row.version)
        if key is None:
            log.warning(
                "registry migration 0004: %s v%s's artifact %s is not under the artifact store %s and names no "
                "model key (<pipeline>/models/v<N>/...): left as it is; re-register or roll back to another version",
                row.pipeline,
                row.version,
                row.artifact_key,
                root,
            )
            continue
        conn.execute(_versions.update().where(_versions.c.id == row.id).values(artifact_key=key))


def downgrade() -> None:
    conn = op.get_bind()
    root = _store_root()
    rows = conn.execute(sa.select(_versions.c.id, _versions.c.artifact_key)).all()
    for row in rows:
        if "://" not in row.artifact_key:
            conn.execute(
                _versions.update().where(_versions.c.id == row.id).values(artifact_key=root + row.artifact_key)
            )
    with op.batch_alter_table("mlpipe_model_versions") as batch:
        batch.alter_column(
            "artifact_key", new_column_name="artifact_uri", existing_type=sa.Text, existing_nullable=False
        )
