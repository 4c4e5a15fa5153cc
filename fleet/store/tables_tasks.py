"""Bulk command tasks (seed 002, relational layout) and the meter registry's index (issue 3).

`tasks` holds a task's metadata and its dispatch bookkeeping; `task_devices` one row per target
device, linked to the ledger entry (`command_log`) that carries its command. The tables join the
one `metadata` (imported at the end of tables.py) so migrations and tests see them.
"""

from __future__ import annotations

import sqlalchemy as sa

from fleet.store.tables import command_log, devices, metadata
from fleet.store.types import BigIntPK, UTCDateTime

TASK_ID_LENGTH = 36  # a UUID

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.String(TASK_ID_LENGTH), primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The caller's id of the upstream request: one task per correlation id and account.
    sa.Column("correlation_id", sa.String(128)),
    sa.Column("command_type", sa.String(32), nullable=False),
    sa.Column("command_params", sa.JSON, nullable=False),
    # The targets as asked: {"devices": <count>} or {"filter": {...}}.
    sa.Column("target", sa.JSON, nullable=False),
    sa.Column("scheduled_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="QUEUED"),
    sa.Column("status_reason", sa.Text),
    sa.Column("requested_by", sa.String(64)),
    sa.Column("rate_per_second", sa.Float, nullable=False),
    sa.Column("abort_failed_percent", sa.Float),
    sa.Column("abort_min_finished", sa.Integer),
    sa.Column("max_retries", sa.Integer),
    sa.Column("timeout_seconds", sa.Float),
    sa.Column("parent_task_id", sa.String(TASK_ID_LENGTH)),
    sa.Column("device_count", sa.Integer, nullable=False),
    # Dispatch pacing shared by every Fleet process: sends are paid for up to this moment.
    sa.Column("paced_until", UTCDateTime),
    # The counts per device status last announced (task.progress events fire when they change).
    sa.Column("counts", sa.JSON),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column(
        "updated_at",
        UTCDateTime,
        nullable=False,
        server_default=sa.func.now(),
        onupdate=sa.func.now(),
    ),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_tasks_status_scheduled_at", "status", "scheduled_at"),
    sa.Index("ix_tasks_account_id_created_at", "account_id", "created_at"),
    sa.Index("uq_tasks_account_id_correlation_id", "account_id", "correlation_id", unique=True),
)

task_devices = sa.Table(
    "task_devices",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id",
        sa.String(TASK_ID_LENGTH),
        sa.ForeignKey("tasks.task_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "device_id",
        sa.Integer,
        sa.ForeignKey("devices.id", ondelete="CASCADE"),
        nullable=False,
    ),
    # The device's id as the task names it (seed 002's VARCHAR device_id, e.g. 'meter-001').
    sa.Column("device_uid", sa.String(64), nullable=False),
    sa.Column("command_status", sa.String(16), nullable=False, server_default="PENDING"),
    sa.Column("error_message", sa.Text),
    sa.Column("last_updated", UTCDateTime, nullable=False, server_default=sa.func.now()),
    # The ledger entry of this device's command; NULL until dispatched (retention may remove a
    # finished entry: the device keeps its final status).
    sa.Column(
        "command_id",
        sa.Integer,
        sa.ForeignKey("command_log.id", ondelete="SET NULL"),
    ),
    sa.UniqueConstraint("task_id", "device_id"),
    sa.Index("ix_task_devices_task_id_command_status", "task_id", "command_status"),
    sa.Index("ix_task_devices_device_id", "device_id"),
    sa.Index("ix_task_devices_command_id", "command_id"),
)

# Meters are addressed on the head-end by their id alone (`hes/{deviceId}/…`), so a meter id
# belongs to one account only.
meter_uid_index = sa.Index(
    "uq_devices_meter_uid",
    devices.c.uid,
    unique=True,
    sqlite_where=sa.text("kind = 'meter'"),
    postgresql_where=sa.text("kind = 'meter'"),
)

# The ledger job's scan: commands in flight whose answer is due.
command_deadline_index = sa.Index(
    "ix_command_log_status_deadline_at", command_log.c.status, command_log.c.deadline_at
)
