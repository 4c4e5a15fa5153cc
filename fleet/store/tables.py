"""The schema (SQLAlchemy Core). Seed 001's tables keep their names, fields and enums; Fleet adds
accounts, API keys and namespaces, and an `account_id` on devices so every row belongs to one
account (status, history, alarms and commands reach their account through their device)."""

from __future__ import annotations

import sqlalchemy as sa

from fleet.store.types import BigIntPK, UTCDateTime

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

CHANGE_TYPES = (
    "ALARM",
    "STATE_CHANGE",
    "CONNECTION",
    "SENSOR_DATA",
    "PERIODIC",
    "MANUAL",
    "MULTIPLE",
)
ALARM_TYPES = (
    "UNKNOWN",
    "PANIC1",
    "PANIC2",
    "TAMPER",
    "FIRE",
    "INTRUSION",
    "MEDICAL",
    "DURESS",
    "OUTPUT_EVENT",
    "OFFLINE",  # a device stopped reporting (liveness, issue 4; migration 0004)
)
EVENT_STATES = ("INACTIVE", "ACTIVE", "TEST", "STARTING", "STOPPING")
PRIORITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
# CONFIG_READ is the sixth command of the CommandEnvelope oneof; the seed's enum predates it.
COMMAND_TYPES = ("UNKNOWN", "SYSTEM", "CONFIG", "OUTPUT", "DIAGNOSTIC", "OTA", "CONFIG_READ")
COMMAND_STATUSES = (
    "PENDING",
    "SENT",
    "ACKNOWLEDGED",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
)


def _enum(values: tuple[str, ...], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=True, create_constraint=True)


def _now() -> sa.sql.functions.now:
    return sa.func.now()


def _fk_device() -> sa.ForeignKey:
    return sa.ForeignKey("devices.id", ondelete="CASCADE")


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
)

# Only the SHA-256 of a key is kept: keys are 256-bit random secrets, so a fast hash is safe and
# lets the lookup use an index. `kind` is 'api' (full access) or 'ingest' (device reports only).
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False, server_default="api"),
    sa.Column("label", sa.String(64)),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
)

# Which account an ingested message belongs to: e.g. ('alarm_panel', 'esagtech') → account 1.
account_namespaces = sa.Table(
    "account_namespaces",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("namespace", sa.String(128), nullable=False),
    sa.UniqueConstraint("kind", "namespace"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(32), nullable=False),
    # The device's identity within its kind: the MAC for alarm panels, DevEUI for LoRaWAN, …
    sa.Column("uid", sa.String(64), nullable=False),
    # Where the device speaks: the topic base for alarm panels (commands are published under it).
    sa.Column("namespace", sa.String(128)),
    # MACADDR in the seed; a normalised 'AA:BB:CC:DD:EE:FF' string works alike on both databases.
    sa.Column("mac_address", sa.String(17)),
    sa.Column("hostname", sa.String(32)),
    sa.Column("country", sa.String(3)),
    sa.Column("zone", sa.Integer),
    sa.Column("latitude", sa.Numeric(10, 7)),
    sa.Column("longitude", sa.Numeric(10, 7)),
    sa.Column("location_desc", sa.Text),
    sa.Column("installation_date", UTCDateTime),
    sa.Column("notes", sa.Text),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    # Free labels for targeting bulk command tasks, a JSON list of strings (issue 3).
    sa.Column("tags", sa.JSON),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now(), onupdate=_now()),
    sa.UniqueConstraint("account_id", "kind", "uid"),
    sa.Index("ix_devices_account_mac", "account_id", "mac_address"),
    sa.Index("ix_devices_account_hostname", "account_id", "hostname"),
)

device_status = sa.Table(
    "device_status",
    metadata,
    sa.Column("device_id", sa.Integer, _fk_device(), primary_key=True),
    sa.Column("is_online", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_seen", UTCDateTime),
    sa.Column("firmware_version", sa.String(16)),
    sa.Column("partition", sa.Integer),
    sa.Column("ota_validated", sa.Boolean),
    sa.Column("uptime", sa.BigInteger),
    sa.Column("boot_count", sa.Integer, server_default="0"),
    sa.Column("device_state", sa.String(20)),
    sa.Column("state_duration", sa.BigInteger),
    sa.Column("free_heap", sa.BigInteger),
    sa.Column("min_heap", sa.BigInteger),
    sa.Column("network_type", sa.String(10)),
    sa.Column("ip_address", sa.String(45)),  # INET in the seed
    sa.Column("rssi", sa.Integer),
    sa.Column("connected", sa.Boolean),
    sa.Column("has_ip", sa.Boolean),
    sa.Column("mqtt_connected", sa.Boolean),
    sa.Column("ntp_synced", sa.Boolean),
    sa.Column("last_ntp_sync", UTCDateTime),
    sa.Column("panic1", sa.Boolean, server_default=sa.false()),
    sa.Column("panic2", sa.Boolean, server_default=sa.false()),
    sa.Column("box_sw", sa.Boolean, server_default=sa.false()),
    sa.Column("siren", sa.Boolean, server_default=sa.false()),
    sa.Column("turret", sa.Boolean, server_default=sa.false()),
    sa.Column("panic1_count", sa.BigInteger, server_default="0"),
    sa.Column("panic2_count", sa.BigInteger, server_default="0"),
    sa.Column("tamper_count", sa.BigInteger, server_default="0"),
    sa.Column("wifi_disconnects", sa.BigInteger, server_default="0"),
    sa.Column("mqtt_disconnects", sa.BigInteger, server_default="0"),
    sa.Column("error_count", sa.BigInteger, server_default="0"),
    sa.Column("temperature", sa.Float),
    sa.Column("humidity", sa.Float),
    sa.Column("fan_pwm_duty", sa.SmallInteger),
    sa.Column("error_flags", sa.BigInteger, server_default="0"),
    sa.Column("device_synced", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("last_sync_attempt", UTCDateTime),
    # Fleet's own bookkeeping, beyond the seed:
    sa.Column("sync_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_frame_seq", sa.BigInteger),  # anti-replay: highest accepted frame sequence
    sa.Column("command_sequence", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now(), onupdate=_now()),
)

heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("device_id", sa.Integer, _fk_device(), nullable=False),
    sa.Column("temperature", sa.Float),
    sa.Column("humidity", sa.Float),
    sa.Column("fan_pwm_duty", sa.SmallInteger),
    sa.Column("panic1", sa.Boolean),
    sa.Column("panic2", sa.Boolean),
    sa.Column("siren", sa.Boolean),
    sa.Column("turret", sa.Boolean),
    sa.Column("box_sw", sa.Boolean),
    sa.Column("change_type", _enum(CHANGE_TYPES, "change_type_enum"), nullable=False),
    # With change_type MULTIPLE: every kind that changed, comma-separated, primary first.
    sa.Column("change_kinds", sa.String(64)),
    sa.Index("ix_heartbeats_device_time", "device_id", "time"),
    sa.Index("ix_heartbeats_device_type_time", "device_id", "change_type", "time"),
)

alarm_events = sa.Table(
    "alarm_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("device_id", sa.Integer, _fk_device(), nullable=False),
    sa.Column("sequence", sa.BigInteger),
    sa.Column("timestamp", UTCDateTime, nullable=False),
    sa.Column("alarm_type", _enum(ALARM_TYPES, "alarm_type_enum"), nullable=False),
    sa.Column("event_state", _enum(EVENT_STATES, "event_state_enum"), nullable=False),
    sa.Column("priority", _enum(PRIORITIES, "priority_enum"), nullable=False),
    sa.Column("physical_state", sa.Boolean),
    sa.Column("output_type", sa.Integer),
    sa.Column("pattern_type", sa.Integer),
    sa.Column("duration_seconds", sa.BigInteger),
    sa.Column("elapsed_seconds", sa.BigInteger),
    sa.Column("resolved_at", UTCDateTime),
    sa.Column("acknowledged_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now(), onupdate=_now()),
    sa.Index("ix_alarm_events_device_timestamp", "device_id", "timestamp"),
    sa.Index("ix_alarm_events_type_state", "alarm_type", "event_state"),
    sa.Index("ix_alarm_events_priority", "priority"),
    sa.Index(
        "ix_alarm_events_active",
        "device_id",
        "alarm_type",
        sqlite_where=sa.text("resolved_at IS NULL"),
        postgresql_where=sa.text("resolved_at IS NULL"),
    ),
    sa.Index(
        "ix_alarm_events_output",
        "device_id",
        "output_type",
        "timestamp",
        sqlite_where=sa.text("alarm_type = 'OUTPUT_EVENT'"),
        postgresql_where=sa.text("alarm_type = 'OUTPUT_EVENT'"),
    ),
)

command_log = sa.Table(
    "command_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("device_id", sa.Integer, _fk_device(), nullable=False),
    sa.Column("request_id", sa.Uuid(as_uuid=False), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("timestamp", UTCDateTime, nullable=False),
    # VARCHAR since migration 0003: each transport validates its own types (alarm panels:
    # COMMAND_TYPES; meters: SET_TOU, …), so a new transport needs no enum migration.
    sa.Column("command_type", sa.String(32), nullable=False),
    sa.Column("command_data", sa.JSON, nullable=False),
    sa.Column("auth_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column(
        "status",
        _enum(COMMAND_STATUSES, "command_status_enum"),
        nullable=False,
        server_default="PENDING",
    ),
    sa.Column("sent_at", UTCDateTime),
    sa.Column("acknowledged_at", UTCDateTime),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("failed_at", UTCDateTime),
    sa.Column("response_data", sa.JSON),
    sa.Column("response_code", sa.Integer),
    sa.Column("error_message", sa.Text),
    sa.Column("retry_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_retries", sa.Integer, nullable=False, server_default="3"),
    sa.Column("next_retry_at", UTCDateTime),
    sa.Column("initiated_by", sa.String(50)),
    # Issue 3: the command's own timeout, the moment its answer is due, and its bulk task.
    sa.Column("timeout_seconds", sa.Float),
    sa.Column("deadline_at", UTCDateTime),
    sa.Column("task_id", sa.String(36), index=True),
    sa.Column("notes", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Column("updated_at", UTCDateTime, nullable=False, server_default=_now(), onupdate=_now()),
    sa.Index("ix_command_log_device_id", "device_id"),
    sa.Index("ix_command_log_request_id", "request_id"),
    sa.Index("ix_command_log_status", "status"),
    sa.Index("ix_command_log_command_type", "command_type"),
    sa.Index("ix_command_log_timestamp", "timestamp"),
    sa.Index(
        "ix_command_log_pending",
        "status",
        "sent_at",
        sqlite_where=sa.text("status IN ('PENDING', 'SENT')"),
        postgresql_where=sa.text("status IN ('PENDING', 'SENT')"),
    ),
)

# The event stream: one ordered log for every account, written in the same transaction as the
# change it reports (so an event exists exactly when its change committed). `id` is the cursor.
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("type", sa.String(64), nullable=False),
    # No foreign key: an event outlives the device it speaks of (e.g. device.deleted).
    sa.Column("device_id", sa.Integer),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=_now()),
    sa.Index("ix_events_account_id_id", "account_id", "id"),
    sa.Index("ix_events_created_at", "created_at"),
)

# Liveness, state history and device details (issue 4).
from fleet.store import tables_liveness as _tables_liveness  # noqa: E402, F401

# Bulk command tasks and the meter registry's index (issue 3).
from fleet.store import tables_tasks as _tables_tasks  # noqa: E402, F401

# The dashboard's tables join this metadata (issue 5).
from fleet.store import tables_web as _tables_web  # noqa: E402, F401
