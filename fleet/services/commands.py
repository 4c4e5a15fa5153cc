"""The command ledger's service side: record a command, hand it to its transport, follow it.

Lifecycle (decisions in fleet/core/ledger.py): PENDING → SENT → ACKNOWLEDGED → COMPLETED, or
FAILED, TIMEOUT, CANCELLED. A SENT command with no answer by its deadline (its own
`timeout_seconds`) is retried with backoff and jitter until `max_retries`, then TIMEOUT.

Sent once per attempt: an attempt is *claimed* first (the row becomes SENT with a fresh
sequence and deadline in a committed transaction; a conditional UPDATE and, on PostgreSQL,
`FOR UPDATE SKIP LOCKED` make sure one worker claims it), and only then handed to the transport.
A broker that refuses it puts it back to PENDING for a retry; a process that dies between the
commit and the publish loses that attempt, which its deadline then retries: never a double send.

A response for an unknown, finished or cancelled request is logged, counted
(`fleet_command_responses_ignored_total{reason}`), noted on the command when there is one, and
never applied twice.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from fleet.core import ledger
from fleet.core.events import Event
from fleet.core.ledger import Answer
from fleet.services.transports import CommandRejected, OutboundCommand, TargetDevice, Transport
from fleet.store import commands as repo
from fleet.store import events as event_log

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

IGNORED_RESPONSES = Counter(
    "fleet_command_responses_ignored",
    "Command responses recorded and ignored, by reason (unknown, finished, cancelled, …)",
    ["reason"],
)
# Used for a response's new deadline when a command row carries no timeout of its own.
DEFAULT_TIMEOUT_SECONDS = 60.0


class DeviceNotFound(LookupError):
    """No such device in the caller's account (another account's device is 'not found' too)."""


class CommandNotFound(LookupError):
    pass


class CommandFinished(ValueError):
    """The command is finished: it cannot be cancelled any more."""

    def __init__(self, command_id: int, status: str) -> None:
        super().__init__(f"command {command_id} is already {status}")
        self.status = status


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Claimed:
    """One attempt that this worker owns: committed as SENT, to be handed to the transport."""

    command_id: int
    device: TargetDevice
    command: OutboundCommand
    retry_count: int


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A command for `insert_sent` (bulk tasks): recorded and claimed in the caller's
    transaction."""

    device: TargetDevice
    command_type: str
    payload: dict[str, Any]
    initiated_by: str | None
    task_id: str | None = None
    auth_level: int = 1
    max_retries: int | None = None
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Response:
    """A device's (or head-end's) answer. `device_id`/`device_uid`, when given, must match the
    command's device: an answer from elsewhere is not applied."""

    request_id: str
    answer: Answer
    code: int = 0
    message: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    device_id: int | None = None
    device_uid: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseResult:
    result: str  # applied | unknown | mismatch | finished | cancelled | duplicate
    command: dict[str, Any] | None = None  # the command row as it was found
    status: str | None = None  # the new status when applied


class CommandService:
    def __init__(
        self,
        engine: AsyncEngine,
        transports: Mapping[str, Transport],
        *,
        timeout_seconds: float = 60.0,
        max_retries: int = 2,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.transports = dict(transports)
        self.timeout = timedelta(seconds=timeout_seconds)
        self.max_retries = max_retries
        self.clock = clock
        self.rng = rng
        self.retry_base_seconds = ledger.RETRY_BASE_SECONDS

    # --- transports ------------------------------------------------------------------------
    def transport_for(self, kind: str) -> Transport:
        transport = self.transports.get(kind)
        if transport is None:
            raise CommandRejected(f"devices of kind {kind!r} cannot receive commands yet")
        return transport

    def _transport(self, device: TargetDevice) -> Transport:
        return self.transport_for(device.kind)

    def command_types(self) -> dict[str, list[str]]:
        """Command type → the device kinds that take it."""
        kinds: dict[str, list[str]] = {}
        for kind, transport in self.transports.items():
            for command_type in getattr(transport, "command_types", ()):
                kinds.setdefault(command_type, []).append(kind)
        return kinds

    def _retry_delay(self, retry: int) -> timedelta:
        return timedelta(seconds=ledger.retry_delay(retry, self.rng, self.retry_base_seconds))

    def _timeout_of(self, timeout_seconds: float | None) -> timedelta:
        return self.timeout if timeout_seconds is None else timedelta(seconds=timeout_seconds)

    # --- one command -------------------------------------------------------------------------
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
        timeout_seconds: float | None = None,
        notes: str | None = None,
    ) -> dict[str, Any]:
        """Record the command and send it. Returns the command_log row."""
        now = self.clock()
        async with self.engine.begin() as conn:
            device = await repo.target_device(conn, account_id, device_id)
            if device is None:
                raise DeviceNotFound(f"device {device_id} not found")
            self._transport(device).validate(command_type, payload)
            [claimed] = await self.insert_sent(
                conn,
                [
                    NewCommand(
                        device,
                        command_type,
                        payload,
                        initiated_by,
                        auth_level=auth_level,
                        max_retries=max_retries,
                        timeout_seconds=timeout_seconds,
                    )
                ],
                now,
                notes=notes,
            )
        await self.publish([claimed])
        async with self.engine.connect() as conn:
            row = await repo.get_command(conn, account_id, claimed.command_id)
        assert row is not None
        return row

    async def insert_sent(
        self,
        conn: AsyncConnection,
        commands: Sequence[NewCommand],
        now: datetime,
        *,
        notes: str | None = None,
    ) -> list[Claimed]:
        """Record commands already claimed as SENT (one statement for the lot, at most one
        command per device); the caller commits, then calls `publish` with the result."""
        sequences = await repo.next_sequences(conn, {c.device.id for c in commands})
        rows: list[dict[str, Any]] = []
        for c in commands:
            timeout = self._timeout_of(c.timeout_seconds)
            rows.append(
                {
                    "device_id": c.device.id,
                    "request_id": str(uuid.uuid4()),
                    "sequence": sequences[c.device.id],
                    "timestamp": now,
                    "command_type": c.command_type,
                    "command_data": {"type": c.command_type, "payload": c.payload},
                    "auth_level": c.auth_level,
                    "status": "SENT",
                    "sent_at": now,
                    "deadline_at": now + timeout,
                    "timeout_seconds": timeout.total_seconds(),
                    "max_retries": self.max_retries if c.max_retries is None else c.max_retries,
                    "initiated_by": (c.initiated_by or "")[: ledger.INITIATED_BY_MAX] or None,
                    "task_id": c.task_id,
                    "notes": notes,
                    "created_at": now,
                }
            )
        ids = await repo.insert_commands(conn, rows)
        return [
            Claimed(
                command_id,
                c.device,
                OutboundCommand(
                    request_id=row["request_id"],
                    sequence=row["sequence"],
                    timestamp=int(now.timestamp()),
                    auth_level=c.auth_level,
                    command_type=c.command_type,
                    payload=c.payload,
                    task_id=c.task_id,
                ),
                0,
            )
            for command_id, c, row in zip(ids, commands, rows, strict=True)
        ]

    async def publish(self, claims: Sequence[Claimed]) -> int:
        """Hand claimed attempts to their transports; returns how many went out. A refused one
        goes back to PENDING (broker unavailable: retried with backoff) or FAILED (the
        transport cannot carry it to this device)."""
        refused: list[tuple[Claimed, Exception]] = []
        for claim in claims:
            try:
                self._transport(claim.device).send(claim.device, claim.command)
            except Exception as exc:
                refused.append((claim, exc))
        if refused:
            await self._put_back(refused)
        return len(claims) - len(refused)

    async def _put_back(self, refused: list[tuple[Claimed, Exception]]) -> None:
        now = self.clock()
        async with self.engine.begin() as conn:
            for claim, exc in refused:
                values: dict[str, Any]
                if isinstance(exc, CommandRejected):
                    values = {
                        "status": "FAILED",
                        "failed_at": now,
                        "deadline_at": None,
                        "error_message": str(exc),
                    }
                else:
                    log.warning("command %s not handed to the broker: %s", claim.command_id, exc)
                    # A refused hand-over never reached the device: it is retried, but the
                    # count shows it (the backoff grows with it).
                    retry = claim.retry_count + 1
                    values = {
                        "status": "PENDING",
                        "retry_count": retry,
                        "next_retry_at": now + self._retry_delay(retry),
                        "deadline_at": None,
                        "error_message": f"broker unavailable: {exc}",
                    }
                await repo.transition(
                    conn, claim.command_id, ("SENT",), values, now, claim.command.task_id
                )

    async def get(self, *, account_id: int, command_id: int) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            return await repo.get_command(conn, account_id, command_id)

    async def cancel(self, *, account_id: int, command_id: int, by: str) -> dict[str, Any]:
        """Cancel a command that is not finished. A response arriving later is recorded and
        ignored; an attempt already with the device may still be carried out by it."""
        now = self.clock()
        async with self.engine.begin() as conn:
            row = await repo.get_command(conn, account_id, command_id)
            if row is None:
                raise CommandNotFound(f"command {command_id} not found")
            if not ledger.can_cancel(row["status"]):
                raise CommandFinished(command_id, row["status"])
            values = {
                "status": "CANCELLED",
                "next_retry_at": None,
                "deadline_at": None,
                "error_message": f"cancelled by {by}"[:500],
            }
            if not await repo.transition(
                conn, command_id, (row["status"],), values, now, row["task_id"]
            ):
                latest = await repo.get_command(conn, account_id, command_id)
                raise CommandFinished(command_id, latest["status"] if latest else "gone")
            await event_log.append(conn, [_command_event(account_id, row, "CANCELLED")])
            updated = await repo.get_command(conn, account_id, command_id)
        assert updated is not None
        return updated

    # --- answers -----------------------------------------------------------------------------
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

    # --- the background job ------------------------------------------------------------------
    async def run_due(self, *, limit: int = 500) -> int:
        """Time out or schedule a retry for what waited past its deadline, then send the
        retries that are due. Returns the rows touched."""
        now = self.clock()
        touched = 0
        async with self.engine.begin() as conn:
            events: list[Event] = []
            for row in await repo.due_deadlines(conn, now, self.timeout, limit):
                decision = ledger.on_deadline(
                    row["status"], int(row["retry_count"]), int(row["max_retries"])
                )
                if decision is None:
                    continue
                values = self._deadline_values(row, decision, now)
                if await repo.transition(
                    conn, row["id"], (row["status"],), values, now, row["task_id"]
                ):
                    touched += 1
                    events.append(_command_event(row["account_id"], row, values["status"]))
            await event_log.append(conn, events)
        claims: list[Claimed] = []
        async with self.engine.begin() as conn:
            for row in await repo.due_for_retry(conn, now, limit):
                claim = await self._claim_retry(conn, row, now)
                if claim is not None:
                    claims.append(claim)
        touched += len(claims)
        await self.publish(claims)
        return touched

    def _deadline_values(
        self, row: dict[str, Any], decision: ledger.DeadlineDecision, now: datetime
    ) -> dict[str, Any]:
        waited = self._timeout_of(row["timeout_seconds"]).total_seconds()
        if decision.retry:
            retry = int(row["retry_count"]) + 1
            return {
                "status": "PENDING",
                "retry_count": retry,
                "next_retry_at": now + self._retry_delay(retry),
                "deadline_at": None,
                "error_message": f"no response within {waited:g} s; "
                f"retry {retry} of {row['max_retries']}",
            }
        what = "result" if row["status"] == "ACKNOWLEDGED" else "response"
        return {
            "status": "TIMEOUT",
            "failed_at": now,
            "deadline_at": None,
            "error_message": f"no {what} within {waited:g} s",
        }

    async def _claim_retry(
        self, conn: AsyncConnection, row: dict[str, Any], now: datetime
    ) -> Claimed | None:
        device = TargetDevice(
            row["device_id"],
            row["device_kind"],
            row["device_uid"],
            row["device_hostname"],
            row["device_namespace"],
        )
        # Every attempt carries a fresh sequence (the device drops repeats) but the same
        # request_id, so a late answer to an earlier attempt still completes it.
        sequence = await repo.next_sequence(conn, device.id)
        values = {
            "status": "SENT",
            "sequence": sequence,
            "sent_at": now,
            "deadline_at": now + self._timeout_of(row["timeout_seconds"]),
            "next_retry_at": None,
        }
        if not await repo.transition(conn, row["id"], ("PENDING",), values, now, row["task_id"]):
            return None
        command = OutboundCommand(
            request_id=str(row["request_id"]),
            sequence=sequence,
            timestamp=int(now.timestamp()),
            auth_level=int(row["auth_level"]),
            command_type=row["command_type"],
            payload=row["command_data"].get("payload", {}),
            task_id=row["task_id"],
        )
        return Claimed(row["id"], device, command, int(row["retry_count"]))


def _command_event(account_id: int, row: dict[str, Any], status: str) -> Event:
    data: dict[str, Any] = {
        "command_id": row["id"],
        "request_id": str(row["request_id"]),
        "status": status,
    }
    if row.get("task_id"):
        data["task_id"] = row["task_id"]
    return Event(account_id, "command.updated", row["device_id"], data)


def _response_values(
    row: dict[str, Any], response: Response, status: str, now: datetime
) -> dict[str, Any]:
    if status == "ACKNOWLEDGED":
        timeout = row["timeout_seconds"] or DEFAULT_TIMEOUT_SECONDS
        return {
            "status": status,
            "acknowledged_at": now,
            "next_retry_at": None,
            # Now waiting for the result: a fresh deadline, and never a re-send.
            "deadline_at": now + timedelta(seconds=timeout),
        }
    data = dict(response.payload)
    if response.message:
        data["message"] = response.message
    values: dict[str, Any] = {
        "status": status,
        "acknowledged_at": row["acknowledged_at"] or now,
        "response_code": response.code,
        "response_data": data,
        "next_retry_at": None,
        "deadline_at": None,
    }
    if status == "COMPLETED":
        values.update(completed_at=now, error_message=None)
    else:
        values.update(
            failed_at=now,
            error_message=response.message or f"device error {response.code}",
        )
    return values


@dataclass
class _Update:
    """The change one batch of answers makes to one command (an ACK and the result of the same
    command in one batch fold into one update)."""

    row: dict[str, Any]
    status: str
    values: dict[str, Any]
    positions: list[int]


async def apply_responses_in(
    conn: AsyncConnection, responses: Sequence[Response], now: datetime
) -> list[ResponseResult]:
    """The response rule for a batch of answers, inside the caller's transaction (the ingest's).
    One query finds (and on PostgreSQL locks) every command; the decisions are taken in order;
    the updates go out as a few statements for the whole batch."""
    canonical = [repo.canonical_request_id(r.request_id) for r in responses]
    rows = await repo.by_request_ids(conn, {c for c in canonical if c is not None}, lock=True)
    status_now: dict[str, str] = {}
    updates: dict[int, _Update] = {}
    results: list[ResponseResult] = []
    notes: list[tuple[int, str]] = []
    for position, (response, request_id) in enumerate(zip(responses, canonical, strict=True)):
        row = rows.get(request_id) if request_id is not None else None
        if row is None or request_id is None:
            log.info("response for unknown request %r ignored", response.request_id[:64])
            results.append(ResponseResult("unknown"))
            continue
        if (response.device_id is not None and response.device_id != row["device_id"]) or (
            response.device_uid is not None and response.device_uid != row["device_uid"]
        ):
            log.warning(
                "response for command %s came from another device (%s); ignored",
                row["id"],
                response.device_uid or response.device_id,
            )
            results.append(ResponseResult("mismatch", row))
            continue
        status = status_now.get(request_id, row["status"])
        decision = ledger.on_response(status, response.answer)
        if decision.status is None:
            results.append(ResponseResult(decision.reason, row))
            if decision.reason != "duplicate":
                notes.append((row["id"], _ignored_note(response, status, now)))
            continue
        values = _response_values(row, response, decision.status, now)
        update = updates.get(row["id"])
        if update is None:
            updates[row["id"]] = _Update(row, decision.status, values, [position])
        else:
            update.status = decision.status
            update.values = {**update.values, **values}
            update.positions.append(position)
        status_now[request_id] = decision.status
        results.append(ResponseResult("applied", row, decision.status))
    raced = await repo.transition_many(
        conn, [(u.row["id"], u.row["status"], u.values) for u in updates.values()]
    )
    for command_id in raced:  # changed by another worker meanwhile (SQLite): not applied
        update = updates.pop(command_id)
        for position in update.positions:
            results[position] = ResponseResult("finished", update.row)
        notes.append(
            (
                command_id,
                f"{now.isoformat(timespec='seconds')} ignored a response: "
                "the command changed meanwhile",
            )
        )
    await repo.sync_task_devices(
        conn,
        [
            (command_id, u.status, u.values.get("error_message"))
            for command_id, u in updates.items()
            if u.row["task_id"] is not None
        ],
        now,
    )
    for command_id, line in notes:
        await repo.note(conn, command_id, line)
    for result in results:
        if result.result != "applied":
            IGNORED_RESPONSES.labels(result.result).inc()
    return results


def _ignored_note(response: Response, status: str, now: datetime) -> str:
    return (
        f"{now.isoformat(timespec='seconds')} ignored a {response.answer.value} response: "
        f"the command was {status}"
    )


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
    """One answer of a device, inside the caller's transaction (the alarm-panel ingest)."""
    answer = Answer.SUCCESS if success else Answer.FAILURE
    [result] = await apply_responses_in(
        conn,
        [Response(request_id, answer, code, message, payload, device_id=device_id)],
        now,
    )
    return "unknown" if result.result == "mismatch" else result.result
