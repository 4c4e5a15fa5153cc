"""The JSON of the liveness, connections and report routes (issue 4): pydantic, never tables."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fleet.api.schemas import Text, Timestamp

LivenessState = Literal["New", "Reporting", "Offline", "Stopped"]


class StateChangeOut(BaseModel):
    """Seed 000's StateChange: `id` is the device's DeviceID (its uid), `timestamp` in ms."""

    id: str
    state: LivenessState
    connection: str | None
    timestamp: int | None


class ReportOut(StateChangeOut):
    changed: bool = Field(description="This report changed the state or the connection.")
    registered: bool = Field(description="This report registered the device.")


class LivenessOut(BaseModel):
    device_id: int
    id: str = Field(description="The device's uid (a reporter's 64-hex DeviceID).")
    kind: str
    name: str | None = Field(description="The device's hostname (a reporter's device_id).")
    friendly_name: str | None
    state: LivenessState
    connection: str | None
    since: Timestamp | None = Field(description="When the state (or connection) last changed.")
    timestamp: int | None = Field(description="`since` in milliseconds, as in StateChange.")
    last_report_at: Timestamp | None
    period_seconds: float | None = Field(description="The expected interval between reports.")
    due_at: Timestamp | None = Field(description="When it goes Offline without another report.")
    stopped_by_admin: bool


class LivenessHistoryOut(StateChangeOut):
    previous: LivenessState
    at: Timestamp


class LivenessCommand(BaseModel):
    """`Stopped`: hold the device Stopped (decommissioned, paused): it raises nothing and its
    reports change nothing. `Monitored`: lift that; its next report moves it again."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["Stopped", "Monitored"]


class DeviceDetails(BaseModel):
    """Seed 000's DeviceDetails: what an admin says about a device (not what it reports)."""

    model_config = ConfigDict(extra="forbid")

    friendly_name: Text | None = Field(default=None, max_length=128)


class StateCounts(BaseModel):
    New: int
    Reporting: int
    Offline: int
    Stopped: int


class ConnectionOut(BaseModel):
    connection: str
    devices: int
    states: StateCounts
