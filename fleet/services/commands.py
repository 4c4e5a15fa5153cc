"""The command ledger's service side: record a command, hand it to its transport, follow it.

Lifecycle: PENDING → SENT → COMPLETED | FAILED; a SENT command with no answer in time is retried
(back to PENDING with `next_retry_at`) until `max_retries`, then TIMEOUT. A response for an unknown
or finished request is recorded in the log and never applied twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.core.backoff import backoff_delay
from fleet.services.transports import CommandRejected, OutboundCommand, TargetDevice, Transport
from fleet.store import commands as repo

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class DeviceNotFound(LookupError):
    """No such device in the caller's account (another account's device is 'not found' too)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class CommandService:
    def __init__(
        self,
        engine: AsyncEngine,
        transports: Mapping[str, Transport],
        *,
        timeout_seconds: float = 60.0,
        max_retries: int = 2,
        clock: Clock = utcnow,
    ) -> None:
        self.engine = engine
        self.transports = dict(transports)
        self.timeout = timedelta(seconds=timeout_seconds)
        self.max_retries = max_retries
        self.clock = clock

    def _transport(self, device: TargetDevice) -> Transport:
        transport = self.transports.get(device.kind)
        if transport is None:
            raise CommandRejected(f"devices of kind {device.kind!r} cannot receive commands yet")
        return transport

    async def send(
        self,
        *,
        account_id: int,
        device_id: int,
        command_type: str,
        payload: dict[str, Any],
        initiated_by: str | None,
        auth_level: int = 1,
        max_retries: int | None = None,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """Record the command and send it. Returns the command_log row."""
        now = self.clock()
        async with self.engine.begin() as conn:
            device = await repo.target_device(conn, account_id, device_id)
            if device is None:
                raise DeviceNotFound(f"device {device_id} not found")
            transport = self._transport(device)
            transport.validate(command_type, payload)
            sequence = await repo.next_sequence(conn, device.id)
            command_id = await repo.insert_command(
                conn,
                {
                    "device_id": device.id,
                    "request_id": str(uuid.uuid4()),
                    "sequence": sequence,
                    "timestamp": now,
                    "command_type": command_type,
                    "command_data": {"type": command_type, "payload": payload},
                    "auth_level": auth_level,
                    "status": "PENDING",
                    "max_retries": self.max_retries if max_retries is None else max_retries,
                    "initiated_by": (initiated_by or "")[:50] or None,
                    "notes": notes,
                },
            )
        await self._attempt(device, command_id)
        async with self.engine.connect() as conn:
            row = await repo.get_command(conn, account_id, command_id)
        assert row is not None
        return row

    async def _attempt(self, device: TargetDevice, command_id: int) -> None:
        """One send attempt of a PENDING command; the database row is the source of truth."""
        now = self.clock()
        async with self.engine.begin() as conn:
            row = await repo.by_id(conn, command_id)
            if row is None or row["status"] != "PENDING":
                return
            # Every attempt carries a fresh frame sequence (the device drops repeats) but the
            # same request_id, so a late answer to an earlier attempt still completes it.
            sequence = await repo.next_sequence(conn, device.id)
            command = OutboundCommand(
                request_id=str(row["request_id"]),
                sequence=sequence,
                timestamp=int(now.timestamp()),
                auth_level=int(row["auth_level"]),
                command_type=row["command_type"],
                payload=row["command_data"].get("payload", {}),
            )
            try:
                self._transport(device).send(device, command)
            except CommandRejected as exc:
                await repo.update_command(
                    conn, command_id, status="FAILED", failed_at=now, error_message=str(exc)
                )
                return
            except Exception as exc:  # the broker link refused it: retry later
                log.warning("command %s not handed to the broker: %s", command_id, exc)
                retry = int(row["retry_count"]) + 1
                await repo.update_command(
                    conn,
                    command_id,
                    retry_count=retry,
                    next_retry_at=now + timedelta(seconds=backoff_delay(retry)),
                    error_message=f"broker unavailable: {exc}",
                )
                return
            await repo.update_command(
                conn, command_id, status="SENT", sequence=sequence, sent_at=now, next_retry_at=None
            )

    async def get(self, *, account_id: int, command_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            return await repo.get_command(conn, account_id, command_id)

    async def apply_response(
        self,
        device_id: int,
        request_id: str,
        *,
        success: bool,
        code: int,
        message: str,
        payload: dict[str, Any],
    ) -> str:
        """Correlate a device's answer; returns what happened (for counters and tests)."""
        now = self.clock()
        async with self.engine.begin() as conn:
            return await apply_response_in(
                conn, device_id, request_id, now, success, code, message, payload
            )

    async def run_due(self, *, limit: int = 500) -> int:
        """Retry what is due and time out what waited too long. Returns rows touched."""
        now = self.clock()
        touched = 0
        async with self.engine.begin() as conn:
            for row in await repo.sent_before(conn, now - self.timeout, limit):
                touched += 1
                if int(row["retry_count"]) < int(row["max_retries"]):
                    retry = int(row["retry_count"]) + 1
                    await repo.update_command(
                        conn,
                        row["id"],
                        status="PENDING",
                        retry_count=retry,
                        next_retry_at=now + timedelta(seconds=backoff_delay(retry)),
                    )
                else:
                    await repo.update_command(
                        conn,
                        row["id"],
                        status="TIMEOUT",
                        failed_at=now,
                        error_message=f"no response within {self.timeout.total_seconds():g} s",
                    )
            due = await repo.due_for_retry(conn, now, limit)
            targets = {row["id"]: await repo.device_of(conn, row["device_id"]) for row in due}
        for command_id, device in targets.items():
            if device is not None:
                touched += 1
                await self._attempt(device, command_id)
        return touched


async def apply_response_in(
    conn: Any,
    device_id: int,
    request_id: str,
    now: datetime,
    success: bool,
    code: int,
    message: str,
    payload: dict[str, Any],
) -> str:
    """The response rule, inside the caller's transaction (the ingest batch uses it too)."""
    row = await repo.by_request_id(conn, device_id, request_id)
    if row is None:
        log.info("response for unknown request %s from device %s ignored", request_id, device_id)
        return "unknown"
    if row["status"] in repo.FINISHED:
        log.info("response for finished command %s (%s) ignored", row["id"], row["status"])
        return "finished"
    values: dict[str, Any] = {
        "acknowledged_at": now,
        "response_code": code,
        "response_data": payload,
        "error_message": None if success else (message or f"device error {code}"),
        "next_retry_at": None,
    }
    if success:
        values.update(status="COMPLETED", completed_at=now)
    else:
        values.update(status="FAILED", failed_at=now)
    if message:
        values["response_data"] = {**payload, "message": message}
    await repo.update_command(conn, row["id"], **values)
    return "applied"
