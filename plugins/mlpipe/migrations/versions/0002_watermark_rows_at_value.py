"""Watermarks keep how many rows at their value were announced (rows arriving late at it are new).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Watermarks written before this revision get NULL: every row at their value counts as announced,
which is what the watch assumed when it wrote them, so none is announced twice.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("mlpipe_watermarks", sa.Column("rows_at_value", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mlpipe_watermarks") as batch:
        batch.drop_column("rows_at_value")
