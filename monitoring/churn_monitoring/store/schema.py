"""Tables of the prediction store (SQLAlchemy Core: rows are written in batches, never as objects).

`churn_predictions` is keyed by (event_id, row_index): the CloudEvent id of the logged call and the
customer's position in it, so that writing a row twice (a replayed spill file, a retried batch whose
commit was lost with the connection) stores it once. `churn_labels` holds at most one label per prediction.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

FeaturesJSON = JSON().with_variant(JSONB(), "postgresql")

predictions = Table(
    "churn_predictions",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("row_index", Integer, primary_key=True),
    Column("customer_id", String(255), nullable=True),
    Column("model_version", String(64), nullable=False),
    Column("features", FeaturesJSON, nullable=False),
    Column("probability", Float, nullable=False),
    Column("prediction", Boolean, nullable=False),
    Column("risk_level", String(32), nullable=True),
    Column("predicted_at", DateTime(timezone=True), nullable=False),
    Column("source", String(255), nullable=True),
    Index("ix_churn_predictions_customer_time", "customer_id", "predicted_at"),
    Index("ix_churn_predictions_time", "predicted_at"),
)

labels = Table(
    "churn_labels",
    metadata,
    Column("event_id", String(255), primary_key=True),
    Column("row_index", Integer, primary_key=True),
    Column("customer_id", String(255), nullable=False),
    Column("churned", Boolean, nullable=False),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["event_id", "row_index"],
        ["churn_predictions.event_id", "churn_predictions.row_index"],
        ondelete="CASCADE",
    ),
    Index("ix_churn_labels_observed", "observed_at"),
)
