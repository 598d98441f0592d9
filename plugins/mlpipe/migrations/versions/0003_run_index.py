"""The run index: one row per recorded run, so the Models view and the CLI query instead of listing the store.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

The index starts empty; a pipeline whose index is empty while its store holds runs is rebuilt from
the store on first read, and ``python -m mlpipe registry reindex PIPELINE`` rebuilds it on demand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlpipe_runs",
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
    )
    op.create_index("ix_mlpipe_runs_as_of", "mlpipe_runs", ["pipeline", "as_of"])
    op.create_index("ix_mlpipe_runs_inputs", "mlpipe_runs", ["pipeline", "data_sha256"])


def downgrade() -> None:
    op.drop_index("ix_mlpipe_runs_inputs", table_name="mlpipe_runs")
    op.drop_index("ix_mlpipe_runs_as_of", table_name="mlpipe_runs")
    op.drop_table("mlpipe_runs")
