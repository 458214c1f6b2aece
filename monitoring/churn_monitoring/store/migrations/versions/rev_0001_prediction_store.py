"""Prediction store: logged predictions and the labels fed back for them.

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "churn_predictions",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("features", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("prediction", sa.Boolean(), nullable=False),
        sa.Column("risk_level", sa.String(32), nullable=True),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("event_id", "row_index"),
    )
    op.create_index(
        "ix_churn_predictions_customer_time", "churn_predictions", ["customer_id", "predicted_at"]
    )
    op.create_index("ix_churn_predictions_time", "churn_predictions", ["predicted_at"])
    op.create_table(
        "churn_labels",
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("churned", sa.Boolean(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", "row_index"),
        sa.ForeignKeyConstraint(
            ["event_id", "row_index"],
            ["churn_predictions.event_id", "churn_predictions.row_index"],
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_churn_labels_observed", "churn_labels", ["observed_at"])


def downgrade() -> None:
    op.drop_index("ix_churn_labels_observed", table_name="churn_labels")
    op.drop_table("churn_labels")
    op.drop_index("ix_churn_predictions_time", table_name="churn_predictions")
    op.drop_index("ix_churn_predictions_customer_time", table_name="churn_predictions")
    op.drop_table("churn_predictions")
