"""Liveness of every device (issue 4): its state and timer, its state history, and the details an
admin keeps about it. Seed 000's four KV tables are views over these and the registry:

- DEVICE_STATUS            = `liveness` (state, connection, since) per device;
- CONNECTION_DEVICE_STATUS = `liveness` grouped by `connection` (indexed with the account);
- DEVICE_DETAILS           = `device_details`;
- DEVICE_ACCOUNT_MAPPING   = `devices.account_id` (every device's account).
"""

from __future__ import annotations

import sqlalchemy as sa

from fleet.store.tables import metadata
from fleet.store.types import BigIntPK, UTCDateTime


def _fk_device() -> sa.ForeignKey:
    return sa.ForeignKey("devices.id", ondelete="CASCADE")


liveness = sa.Table(
    "liveness",
    metadata,
    sa.Column("device_id", sa.Integer, _fk_device(), primary_key=True),
    # The device's account, copied (it never changes) so account-wide views need no join.
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("state", sa.String(16), nullable=False, server_default="New"),
    sa.Column("connection", sa.String(256)),
    sa.Column("since", UTCDateTime),  # the last StateChange
    sa.Column("period_seconds", sa.Float),
    sa.Column("last_report_at", UTCDateTime),
    # The timer: fires when due. Only armed rows are indexed, so the timer job's scan for due
    # rows reads only what is due, however many devices are armed.
    sa.Column("due_at", UTCDateTime),
    sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_report", sa.JSON),  # the last MonitorReport a reporter sent
    sa.Index(
        "ix_liveness_due_at",
        "due_at",
        sqlite_where=sa.text("due_at IS NOT NULL"),
        postgresql_where=sa.text("due_at IS NOT NULL"),
    ),
    sa.Index("ix_liveness_account_connection", "account_id", "connection"),
)

# Every StateChange, as it happened: one row per real change, never per report.
liveness_history = sa.Table(
    "liveness_history",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("device_id", sa.Integer, _fk_device(), nullable=False),
    sa.Column("previous", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("connection", sa.String(256)),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_liveness_history_device_id", "device_id", "id"),
)

device_details = sa.Table(
    "device_details",
    metadata,
    sa.Column("device_id", sa.Integer, _fk_device(), primary_key=True),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
)

# How far a liveness follower has read the event log (e.g. the alarm panels' online/offline).
liveness_cursors = sa.Table(
    "liveness_cursors",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("last_event_id", sa.BigInteger, nullable=False, server_default="0"),
)
