"""What the API reads and writes: pydantic models, kept apart from the tables on purpose so a
schema change never silently changes the public JSON (and internal columns never leak)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, field_validator
from pydantic.json_schema import WithJsonSchema

# The seed's enum names; tests check that they match fleet.store.tables.
ChangeType = Literal[
    "ALARM", "STATE_CHANGE", "CONNECTION", "SENSOR_DATA", "PERIODIC", "MANUAL", "MULTIPLE"
]
AlarmType = Literal[
    "UNKNOWN", "PANIC1", "PANIC2", "TAMPER", "FIRE", "INTRUSION", "MEDICAL", "DURESS",
    "OUTPUT_EVENT", "OFFLINE",
]  # fmt: skip
EventState = Literal["INACTIVE", "ACTIVE", "TEST", "STARTING", "STOPPING"]
Priority = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]
CommandStatus = Literal[
    "PENDING", "SENT", "ACKNOWLEDGED", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"
]
# What a client may send; UNKNOWN exists in the log's enum only for what a device reports.
CommandType = Literal["SYSTEM", "CONFIG", "OUTPUT", "DIAGNOSTIC", "OTA", "CONFIG_READ"]


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _as_utc(value: datetime) -> datetime:
    """Input times: an offset is honoured, none means UTC (the database only takes aware times)."""
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:00-05:00 is past year 9999 in UTC
        raise ValueError("date out of range") from exc


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL (SQLite can): refuse it up front on both, as bad input.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _no_nul_inside(value: dict[str, Any]) -> dict[str, Any]:
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _no_nul(item)
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(_no_nul_inside)]

# An explicit '+00:00' offset rather than pydantic's 'Z': what the API documents and any
# ISO 8601 parser (Python's fromisoformat before 3.11 included) reads.
Timestamp = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
InputTime = Annotated[datetime, AfterValidator(_as_utc)]


class ErrorOut(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class DeviceStatusOut(BaseModel):
    device_id: int
    is_online: bool
    last_seen: Timestamp | None
    firmware_version: str | None
    partition: int | None
    ota_validated: bool | None
    uptime: int | None
    boot_count: int | None
    device_state: str | None
    state_duration: int | None
    free_heap: int | None
    min_heap: int | None
    network_type: str | None
    ip_address: str | None
    rssi: int | None
    connected: bool | None
    has_ip: bool | None
    mqtt_connected: bool | None
    ntp_synced: bool | None
    last_ntp_sync: Timestamp | None
    panic1: bool | None
    panic2: bool | None
    box_sw: bool | None
    siren: bool | None
    turret: bool | None
    panic1_count: int | None
    panic2_count: int | None
    tamper_count: int | None
    wifi_disconnects: int | None
    mqtt_disconnects: int | None
    error_count: int | None
    temperature: float | None
    humidity: float | None
    fan_pwm_duty: int | None
    error_flags: int | None
    device_synced: bool
    last_sync_attempt: Timestamp | None
    updated_at: Timestamp


class DeviceOut(BaseModel):
    id: int
    kind: str
    uid: str
    hostname: str | None
    mac_address: str | None
    country: str | None
    zone: int | None
    latitude: float | None
    longitude: float | None
    location_desc: str | None
    installation_date: Timestamp | None
    notes: str | None
    active: bool
    created_at: Timestamp
    updated_at: Timestamp
    status: DeviceStatusOut | None


class DevicePatch(BaseModel):
    """Only what people maintain by hand; everything else comes from the device itself."""

    model_config = ConfigDict(extra="forbid")

    location_desc: Text | None = Field(default=None, max_length=2000)
    installation_date: InputTime | None = None
    notes: Text | None = Field(default=None, max_length=10000)
    active: bool | None = None

    @field_validator("active")
    @classmethod
    def _active_not_null(cls, value: bool | None) -> bool:
        # Validators skip defaults, so this only rejects an explicit null.
        if value is None:
            raise ValueError("active must be true or false")
        return value


class HeartbeatOut(BaseModel):
    time: Timestamp
    temperature: float | None
    humidity: float | None
    fan_pwm_duty: int | None
    panic1: bool | None
    panic2: bool | None
    siren: bool | None
    turret: bool | None
    box_sw: bool | None
    change_type: ChangeType
    change_kinds: list[str]


class AlarmOut(BaseModel):
    id: int
    device_id: int
    hostname: str | None
    sequence: int | None
    timestamp: Timestamp
    alarm_type: AlarmType
    event_state: EventState
    priority: Priority
    # Open: not resolved and in ACTIVE, STARTING or TEST (what `?active=true` selects).
    active: bool
    physical_state: bool | None
    output_type: int | None
    pattern_type: int | None
    duration_seconds: int | None
    elapsed_seconds: int | None
    acknowledged_at: Timestamp | None
    resolved_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: CommandType
    payload: JsonObject = Field(default_factory=dict)
    initiated_by: Text | None = Field(
        default=None,
        min_length=1,
        max_length=50,
        description="Who asked (a user name); stored as '<account>:<initiated_by>'.",
    )
    # Issue 3: this command's own timeout and retries (defaults: the settings).
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=7 * 86400, description="No answer after this: retry or TIMEOUT."
    )
    max_retries: int | None = Field(default=None, ge=0, le=20)


class CommandOut(BaseModel):
    id: int
    request_id: str
    device_id: int
    sequence: int
    command_type: str
    command_data: dict[str, Any]
    auth_level: int
    status: CommandStatus
    sent_at: Timestamp | None
    acknowledged_at: Timestamp | None
    completed_at: Timestamp | None
    failed_at: Timestamp | None
    response_data: Any
    response_code: int | None
    error_message: str | None
    retry_count: int
    max_retries: int
    next_retry_at: Timestamp | None
    initiated_by: str | None
    created_at: Timestamp
    updated_at: Timestamp
