"""Seed 001's message flows for alarm panels, applied a batch at a time in one transaction.

A batch's messages are applied in arrival order, so a device's own messages stay in order; the
decisions use `PanelState` (loaded once per device) and the writes are grouped: one status UPDATE
per device per batch and one multi-row INSERT of history.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.backoff import backoff_delay
from fleet.core.cdc import SNAPSHOT_FIELDS, Snapshot, StoredRow, decide
from fleet.core.events import Event
from fleet.ingest.rejections import Rejection
from fleet.integrations.alarm_panel import status_fields
from fleet.integrations.alarm_panel.alarm_rules import apply_alarm
from fleet.integrations.alarm_panel.codec import (
    AlarmReport,
    CommandResponseReport,
    HeartbeatReport,
    LastWillReport,
    StatusReport,
)
from fleet.integrations.alarm_panel.prepare import PanelMessage
from fleet.integrations.alarm_panel.state import PanelState, StateKey
from fleet.services.commands import apply_response_in
from fleet.store import panels as store

log = logging.getLogger(__name__)

NAME = "alarm_panel"
# After this many unanswered device-id syncs the operator must look: the seed's "alert".
SYNC_ALERT_AFTER = 3


@dataclass
class BatchOutcome:
    applied: list[PanelMessage] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    sync_requests: list[tuple[int, int]] = field(default_factory=list)  # (account, device)
    events: list[Event] = field(default_factory=list)

    def absorb(self, other: BatchOutcome) -> None:
        """Add the outcome of a later part of the same batch."""
        self.applied += other.applied
        self.rejected += other.rejected
        self.sync_requests += other.sync_requests
        self.events += other.events


@dataclass
class Decisions:
    """The writes one batch accumulates before it flushes them, and what came of its messages."""

    status: dict[int, dict[str, Any]] = field(default_factory=dict)
    history: list[tuple[Any, ...]] = field(default_factory=list)  # panels.HEARTBEAT_COLUMNS
    outcome: BatchOutcome = field(default_factory=BatchOutcome)

    def set_status(self, device_id: int, values: dict[str, Any]) -> None:
        self.status.setdefault(device_id, {}).update(values)


def _replay(message: PanelMessage) -> Rejection:
    return Rejection("replay", message.source.topic, f"sequence {message.frame_sequence}")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class AlarmPanelHandler:
    def __init__(
        self, *, periodic_seconds: float, offline_after_seconds: float, sync_retry_base: float = 5.0
    ) -> None:
        self.periodic_seconds = periodic_seconds
        self.offline_after = timedelta(seconds=offline_after_seconds)
        self.sync_retry_base = sync_retry_base
        self.states: dict[StateKey, PanelState] = {}

    def forget(self, messages: Iterable[tuple[int, PanelMessage]]) -> None:
        """Drop what a failed transaction may have left half-decided; it is reloaded."""
        for account_id, message in messages:
            self.states.pop((account_id, message.mac), None)

    async def apply(
        self, conn: AsyncConnection, messages: list[tuple[int, PanelMessage]], now: datetime
    ) -> BatchOutcome:
        await self._load_missing(conn, messages)
        batch = Decisions()
        states = self.states
        for account_id, message in messages:
            # Most messages are heartbeats of known panels: decided without a coroutine step.
            state = states.get((account_id, message.mac))
            if state is not None and type(message.report) is HeartbeatReport:
                rejection = self._known_heartbeat(batch, state, message, now)
            else:
                rejection = await self._apply_one(conn, batch, account_id, message, now)
            if rejection is None:
                batch.outcome.applied.append(message)
            else:
                batch.outcome.rejected.append(rejection)
        await self._flush(conn, batch)
        return batch.outcome

    def decide_known(
        self, messages: list[tuple[int, PanelMessage]], now: datetime
    ) -> Decisions | None:
        """Decide a batch without the database, if it holds only heartbeats of panels whose
        state is loaded (the steady state); else None, and nothing is decided. The decisions
        are made on the in-memory state at once (the next batch builds on them); `write`
        stores them. If that fails, `forget` the batch's panels: their state is reloaded."""
        states = self.states
        for account_id, message in messages:
            if (
                type(message.report) is not HeartbeatReport
                or (account_id, message.mac) not in states
            ):
                return None
        batch = Decisions()
        for account_id, message in messages:
            rejection = self._known_heartbeat(
                batch, states[(account_id, message.mac)], message, now
            )
            if rejection is None:
                batch.outcome.applied.append(message)
            else:
                batch.outcome.rejected.append(rejection)
        return batch

    async def write(self, conn: AsyncConnection, batch: Decisions) -> None:
        """Store what `decide_known` decided, in the caller's transaction."""
        await self._flush(conn, batch)

    async def sweep(self, conn: AsyncConnection, now: datetime) -> BatchOutcome:
        """Mark silent panels offline and queue the device-id syncs that are due again."""
        batch = Decisions()
        stale = await store.stale_online(conn, now - self.offline_after, limit=1000)
        for key, loaded in stale.items():
            state = self.states.setdefault(key, loaded)
            if state.is_online and state.last_seen and state.last_seen < now - self.offline_after:
                self._go_offline(batch, state, now, reason="silence")
        for state in self.states.values():
            if state.is_online and not state.device_synced and self._sync_due(state, now):
                self._book_sync(batch, state, now)
        await self._flush(conn, batch)
        return batch.outcome

    # --- per message -----------------------------------------------------------------------
    async def _load_missing(
        self, conn: AsyncConnection, messages: list[tuple[int, PanelMessage]]
    ) -> None:
        missing: dict[int, set[str]] = {}
        for account_id, message in messages:
            if (account_id, message.mac) not in self.states:
                missing.setdefault(account_id, set()).add(message.mac)
        for account_id, macs in missing.items():
            self.states.update(await store.load_by_macs(conn, account_id, macs))

    async def _apply_one(
        self,
        conn: AsyncConnection,
        batch: Decisions,
        account_id: int,
        message: PanelMessage,
        now: datetime,
    ) -> Rejection | None:
        report = message.report
        state = self.states.get((account_id, message.mac))
        if state is None:
            if not isinstance(report, StatusReport):
                return Rejection("unknown_device", message.source.topic, message.hostname)
            state = await self._register(conn, batch, account_id, message, report, now)
        elif not self._fresh(state, message):
            return _replay(message)
        if isinstance(report, LastWillReport):
            self._go_offline(batch, state, now, reason="last will")
            return None
        if isinstance(report, HeartbeatReport):
            self._heartbeat(batch, state, report, now)
            return None
        connection_changed = self._seen(batch, state, now, {})
        if isinstance(report, StatusReport):
            await self._status(conn, batch, state, message, report, now, connection_changed)
        elif isinstance(report, AlarmReport):
            io = await apply_alarm(
                conn, account_id, state.device_id, report, now, batch.outcome.events
            )
            batch.set_status(state.device_id, io)
            self._record(batch, state, Snapshot(**io), now, connection_changed, force="ALARM")
        elif isinstance(report, CommandResponseReport):
            if not _is_uuid(report.request_id):
                return Rejection("bad_request_id", message.source.topic, report.request_id[:64])
            result = await apply_response_in(
                conn,
                state.device_id,
                report.request_id,
                now,
                report.success,
                report.error_code,
                report.message,
                {"payload_hex": report.payload.hex()} if report.payload else {},
            )
            if result == "applied":
                batch.outcome.events.append(
                    Event(
                        account_id,
                        "command.updated",
                        state.device_id,
                        {"request_id": report.request_id},
                    )
                )
        return None

    def _known_heartbeat(
        self, batch: Decisions, state: PanelState, message: PanelMessage, now: datetime
    ) -> Rejection | None:
        if not self._fresh(state, message):
            return _replay(message)
        self._heartbeat(batch, state, message.report, now)  # type: ignore[arg-type]
        return None

    def _heartbeat(
        self, batch: Decisions, state: PanelState, report: HeartbeatReport, now: datetime
    ) -> None:
        reading = status_fields.heartbeat_snapshot(report)
        changes = status_fields.heartbeat_changes(report, reading, state.current, state.build)
        connection_changed = self._seen(batch, state, now, changes)
        state.uptime = report.uptime
        self._record(batch, state, reading, now, connection_changed)
        self._check_sync(batch, state, report.device_db_id, now)

    def _seen(
        self, batch: Decisions, state: PanelState, now: datetime, values: dict[str, Any]
    ) -> bool:
        """A message from the panel: online, seen now, with `values` for its status row.
        True when it was offline until now (a CONNECTION change)."""
        connection_changed = not state.is_online
        state.is_online, state.last_seen = True, now
        values["is_online"] = True
        values["last_seen"] = now
        values["last_frame_seq"] = state.last_frame_seq
        if "firmware_version" in values:  # a heartbeat with another build
            state.build = (values["network_type"], values["firmware_version"])
        batch.set_status(state.device_id, values)
        if connection_changed:
            batch.outcome.events.append(
                Event(state.account_id, "device.online", state.device_id, {})
            )
        return connection_changed

    def _fresh(self, state: PanelState, message: PanelMessage) -> bool:
        """Anti-replay on the frame sequence. A last will is exempt: the broker publishes the
        frame the panel built when it connected. A login after a reboot (uptime went down)
        starts the count again."""
        sequence = message.frame_sequence
        if message.kind == "lw":
            return True
        last = state.last_frame_seq
        report = message.report
        rebooted = (
            message.kind == "login"
            and isinstance(report, StatusReport)
            and state.uptime is not None
            and report.uptime < state.uptime
        )
        if last is not None and sequence <= last and not rebooted:
            return False
        state.last_frame_seq = sequence
        return True

    async def _register(
        self,
        conn: AsyncConnection,
        batch: Decisions,
        account_id: int,
        message: PanelMessage,
        report: StatusReport,
        now: datetime,
    ) -> PanelState:
        mac = message.mac
        location = status_fields.location(report)
        device_id = await store.insert_device(
            conn,
            {
                "account_id": account_id,
                "uid": mac,
                "mac_address": mac,
                "hostname": message.hostname,
                "namespace": message.base,
                **dict(zip(("country", "zone", "latitude", "longitude"), location, strict=True)),
            },
        )
        state = PanelState(
            device_id=device_id,
            account_id=account_id,
            hostname=message.hostname,
            namespace=message.base,
            is_online=False,
            device_state=None,
            last_seen=None,
            last_frame_seq=message.frame_sequence,
            uptime=None,
            current=Snapshot(),
            last_row=None,
            device_synced=False,
            sync_attempts=0,
            last_sync_attempt=None,
            location=location,
        )
        self.states[(account_id, mac)] = state
        log.info("registered alarm panel %s (%s) as device %d", message.hostname, mac, device_id)
        batch.outcome.events.append(
            Event(account_id, "device.registered", device_id, {"hostname": message.hostname})
        )
        return state

    async def _status(
        self,
        conn: AsyncConnection,
        batch: Decisions,
        state: PanelState,
        message: PanelMessage,
        report: StatusReport,
        now: datetime,
        connection_changed: bool,
    ) -> None:
        location = status_fields.location(report)
        device_changes: dict[str, Any] = {}
        if location != state.location:
            device_changes.update(
                zip(("country", "zone", "latitude", "longitude"), location, strict=True)
            )
            state.location = location
        if (state.hostname, state.namespace) != (message.hostname, message.base):
            device_changes.update(hostname=message.hostname, namespace=message.base)
            state.hostname, state.namespace = message.hostname, message.base
        if device_changes:
            await store.update_device(conn, state.device_id, device_changes)
        values = status_fields.from_status(report)
        batch.set_status(state.device_id, values)
        state.build = (values["network_type"], values["firmware_version"])
        state_changed = state.device_state is not None and state.device_state != report.device_state
        if state_changed:
            batch.outcome.events.append(
                Event(
                    state.account_id,
                    "device.state",
                    state.device_id,
                    {"from": state.device_state, "to": report.device_state},
                )
            )
        state.device_state = report.device_state
        state.uptime = report.uptime
        self._record(
            batch,
            state,
            status_fields.snapshot(values),
            now,
            connection_changed,
            state_changed=state_changed,
        )
        self._check_sync(batch, state, report.device_db_id, now)

    def _record(
        self,
        batch: Decisions,
        state: PanelState,
        reading: Snapshot,
        now: datetime,
        connection_changed: bool,
        *,
        state_changed: bool = False,
        force: str | None = None,
    ) -> None:
        """The CDC rule: maybe one heartbeats row, compared with the last stored one."""
        snapshot = reading.merged_over(state.current)
        state.current = snapshot
        decision = decide(
            state.last_row,
            snapshot,
            now,
            periodic_seconds=self.periodic_seconds,
            state_changed=state_changed,
            connection_changed=connection_changed,
            force=force,
        )
        if decision is None:
            return
        state.last_row = StoredRow(now, snapshot)
        batch.history.append(
            (
                now,
                state.device_id,
                *(getattr(snapshot, name) for name in SNAPSHOT_FIELDS),
                decision.change_type,
                ",".join(decision.kinds),
            )
        )

    def _go_offline(
        self, batch: Decisions, state: PanelState, now: datetime, *, reason: str
    ) -> None:
        if not state.is_online:
            return
        state.is_online = False
        batch.set_status(state.device_id, {"is_online": False})
        self._record(batch, state, Snapshot(), now, connection_changed=True)
        batch.outcome.events.append(
            Event(state.account_id, "device.offline", state.device_id, {"reason": reason})
        )
        log.info("alarm panel %s offline (%s)", state.hostname, reason)

    # --- device-id sync ----------------------------------------------------------------------
    def _sync_due(self, state: PanelState, now: datetime) -> bool:
        if state.last_sync_attempt is None:
            return True
        wait = backoff_delay(max(1, state.sync_attempts), base=self.sync_retry_base, jitter=0)
        return now >= state.last_sync_attempt + timedelta(seconds=wait)

    def _check_sync(
        self, batch: Decisions, state: PanelState, reported_id: int, now: datetime
    ) -> None:
        if reported_id == state.device_id:
            if not state.device_synced or state.sync_attempts:
                state.device_synced, state.sync_attempts = True, 0
                batch.set_status(state.device_id, {"device_synced": True, "sync_attempts": 0})
            return
        if state.device_synced:
            state.device_synced = False
            batch.set_status(state.device_id, {"device_synced": False})
        if self._sync_due(state, now):
            self._book_sync(batch, state, now)

    def _book_sync(self, batch: Decisions, state: PanelState, now: datetime) -> None:
        """Record a sync attempt in this batch's transaction (so a batch with many messages
        from one unsynced panel asks once); the pipeline sends it after the commit."""
        state.sync_attempts += 1
        state.last_sync_attempt = now
        batch.set_status(
            state.device_id,
            {"sync_attempts": state.sync_attempts, "last_sync_attempt": now},
        )
        batch.outcome.sync_requests.append((state.account_id, state.device_id))
        if state.sync_attempts > SYNC_ALERT_AFTER:
            log.error(
                "ALARM: device %d still reports a wrong device id after %d sync attempts",
                state.device_id,
                state.sync_attempts - 1,
            )

    async def _flush(self, conn: AsyncConnection, batch: Decisions) -> None:
        await store.write_status(conn, batch.status)
        await store.insert_heartbeats(conn, batch.history)
