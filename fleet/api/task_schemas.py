"""What the task, statistics and meter-registry routes read and write (issue 3).

Tasks keep seed 002's camelCase JSON (`taskId`, `commandType`, `scheduledAt`, …); statistics and
the registry follow the rest of the API (snake_case). Kept apart from the tables on purpose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator

from fleet.api.deps import MAX_ID
from fleet.api.schemas import CommandOut, JsonObject, Text, Timestamp
from fleet.services.tasks import MAX_TASK_DEVICES

TaskStatus = Literal["QUEUED", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]
DeviceCommandStatus = Literal[
    "PENDING", "SENT", "ACKNOWLEDGED", "SUCCESS", "FAILED", "TIMEOUT", "CANCELLED"
]
RerunStatus = Literal["FAILED", "TIMEOUT", "CANCELLED"]
DeviceRef = (
    Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
    | Annotated[StrictInt, Field(ge=1, le=MAX_ID)]
)
ISO_EXAMPLE = "2025-05-08T02:00:00Z"


def parse_time(value: Any, name: str) -> Any:
    """ISO 8601 text → aware UTC datetime (no offset means UTC), with a message that says what
    was expected; anything else is left to pydantic."""
    if isinstance(value, datetime) or value is None:
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 date-time text such as {ISO_EXAMPLE}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{name} must be an ISO 8601 date-time such as {ISO_EXAMPLE}, got {value[:40]!r}"
        ) from None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} is out of range") from None


class TaskFilterIn(BaseModel):
    """Every given criterion must hold. `tag` matches one of the device's tags."""

    model_config = ConfigDict(extra="forbid")

    kind: Text | None = Field(default=None, max_length=32, examples=["meter"])
    firmwareVersion: Text | None = Field(default=None, max_length=16)
    online: bool | None = None
    tag: Text | None = Field(default=None, min_length=1, max_length=64)
    zone: int | None = Field(default=None, ge=0, le=MAX_ID)


class AbortRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    failedPercent: float = Field(
        ge=0, le=100, description="Stop when more than this share of finished devices failed."
    )
    minFinished: int = Field(
        default=1, ge=1, le=MAX_TASK_DEVICES, description="…once at least this many finished."
    )


class TaskIn(BaseModel):
    """A command for many devices: `devices` (ids as the registry knows them: a meter id such as
    'meter-001', or a database id) or `filter`."""

    model_config = ConfigDict(extra="forbid")

    correlationId: Text | None = Field(default=None, min_length=1, max_length=128)
    commandType: Text = Field(min_length=1, max_length=32, examples=["SET_TOU"])
    commandParams: JsonObject = Field(
        default_factory=dict, examples=[{"tou_profile_id": "TOU-2025-TEST"}]
    )
    scheduledAt: datetime | None = Field(
        default=None, description="ISO 8601; no offset means UTC. Omitted: now."
    )
    devices: list[DeviceRef] | None = Field(default=None, max_length=MAX_TASK_DEVICES)
    filter: TaskFilterIn | None = None
    requestedBy: Text | None = Field(default=None, min_length=1, max_length=64)
    ratePerSecond: float | None = Field(
        default=None, gt=0, le=100_000, description="Devices per second (default: the setting)."
    )
    abort: AbortRuleIn | None = None
    maxRetries: int | None = Field(default=None, ge=0, le=20)
    timeoutSeconds: float | None = Field(default=None, gt=0, le=7 * 86400)
    dryRun: bool = Field(
        default=False, description="Answer which devices the task would reach; send nothing."
    )

    @field_validator("scheduledAt", mode="before")
    @classmethod
    def _scheduled_at(cls, value: Any) -> Any:
        return parse_time(value, "scheduledAt")


class RerunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    statuses: list[RerunStatus] = Field(
        default_factory=lambda: list[RerunStatus](["FAILED", "TIMEOUT"]),
        min_length=1,
        max_length=3,
    )
    correlationId: Text | None = Field(default=None, min_length=1, max_length=128)
    scheduledAt: datetime | None = None
    requestedBy: Text | None = Field(default=None, min_length=1, max_length=64)
    ratePerSecond: float | None = Field(default=None, gt=0, le=100_000)

    @field_validator("scheduledAt", mode="before")
    @classmethod
    def _scheduled_at(cls, value: Any) -> Any:
        return parse_time(value, "scheduledAt")


class TaskCancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requestedBy: Text | None = Field(default=None, min_length=1, max_length=64)


class TaskAccepted(BaseModel):
    taskId: str
    status: Literal["ACCEPTED"] = "ACCEPTED"
    devices: int
    registered: int = Field(description="Meters registered on first use by this task.")


class DryRunDevice(BaseModel):
    deviceId: str
    id: int | None
    kind: str


class DryRunOut(BaseModel):
    dryRun: Literal[True] = True
    commandType: str
    count: int
    devices: list[DryRunDevice]
    wouldRegister: list[str]


class TaskDeviceOut(BaseModel):
    deviceId: str
    commandStatus: DeviceCommandStatus
    error: str | None
    lastUpdated: Timestamp
    commandId: int | None


class TaskSummaryOut(BaseModel):
    taskId: str
    correlationId: str | None
    commandType: str
    commandParams: dict[str, Any]
    scheduledAt: Timestamp
    status: TaskStatus
    statusReason: str | None
    requestedBy: str | None
    target: dict[str, Any]
    ratePerSecond: float
    abort: AbortRuleIn | None
    maxRetries: int | None
    timeoutSeconds: float | None
    parentTaskId: str | None
    createdAt: Timestamp
    updatedAt: Timestamp
    startedAt: Timestamp | None
    finishedAt: Timestamp | None
    total: int
    counts: dict[str, int]


class TaskOut(TaskSummaryOut):
    """Seed 002's document view; `devices` is one page (`next_cursor` for the next)."""

    devices: list[TaskDeviceOut]
    next_cursor: str | None


class CommandCancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initiated_by: Text | None = Field(default=None, min_length=1, max_length=50)


class LedgerEntryOut(CommandOut):
    """A command_log entry with every field of seed 001 and the ledger's own."""

    timestamp: Timestamp
    notes: str | None
    timeout_seconds: float | None
    deadline_at: Timestamp | None
    task_id: str | None


class CommandStatsItem(BaseModel):
    command_type: str
    total_commands: int
    successful: int
    failed: int
    timeout: int
    cancelled: int
    in_flight: int
    success_rate: float = Field(description="successful / total_commands, in percent.")


class CommandStatsOut(BaseModel):
    since: Timestamp
    until: Timestamp | None
    items: list[CommandStatsItem]
    next_cursor: None = None


class DeviceCreateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["meter"] = Field(
        description="Only meters are registered by hand: other devices announce themselves."
    )
    uid: StrictStr = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="The meter's id on the head-end (one MQTT topic level).",
        examples=["meter-001"],
    )
    tags: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=50
    )
    notes: Text | None = Field(default=None, max_length=10000)


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: list[Annotated[Text, Field(min_length=1, max_length=64)]] = Field(max_length=50)


class RegisteredDeviceOut(BaseModel):
    id: int
    kind: str
    uid: str
    tags: list[str]
    notes: str | None
    active: bool
    created_at: Timestamp
    updated_at: Timestamp
