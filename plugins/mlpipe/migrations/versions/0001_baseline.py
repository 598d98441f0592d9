"""Baseline: model versions, the champion log, watermarks and drift history.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mlpipe_model_versions",
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
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("pipeline", "version", name="uq_mlpipe_version"),
        sa.UniqueConstraint("pipeline", "run_id", name="uq_mlpipe_version_run"),
    )
    op.create_table(
        "mlpipe_champion_log",
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
    op.create_table(
        "mlpipe_watermarks",
        sa.Column("pipeline", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("rows_seen", sa.BigInteger, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "mlpipe_drift_history",
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
    )
    op.create_index("ix_mlpipe_drift_window", "mlpipe_drift_history", ["pipeline", "window_end", "champion_version"])


def downgrade() -> None:
    op.drop_index("ix_mlpipe_drift_window", table_name="mlpipe_drift_history")
    for table in ("mlpipe_drift_history", "mlpipe_watermarks", "mlpipe_champion_log", "mlpipe_model_versions"):
        op.drop_table(table)
