"""One transaction's liveness changes: decided in order by the state machine, written together
(rows, history, the Offline alarm) with the events that tell of them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.events import Event
from fleet.core.liveness import Decision, Input, decide, millis
from fleet.store import events as event_log
from fleet.store import liveness as store
from fleet.store.liveness import Tracked


def _runs(actions: list[tuple[str, int]]) -> list[tuple[str, list[int]]]:
    """The alarm actions in order, consecutive ones of a kind together (one statement each), a
    device at most once per group so that its own raise and clear keep their order."""
    runs: list[tuple[str, list[int]]] = []
    members: set[int] = set()
    for action, device_id in actions:
        if runs and runs[-1][0] == action and device_id not in members:
            runs[-1][1].append(device_id)
        else:
            runs.append((action, [device_id]))
            members = set()
        members.add(device_id)
    return runs


@dataclass
class Changes:
    """One transaction's liveness changes, applied in order, written together."""

    now: datetime
    current: dict[int, Tracked] = field(default_factory=dict)
    original: dict[int, Tracked] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[tuple[str, int]] = field(default_factory=list)  # ("raise"/"clear", device)
    changes: list[tuple[Tracked, Decision]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def apply(self, tracked: Tracked, event: Input) -> Decision:
        device = self.current.setdefault(tracked.device_id, tracked)
        self.original.setdefault(tracked.device_id, tracked)
        decision = decide(device.liveness, event, self.now)
        after = replace(device, liveness=decision.after)
        self.current[device.device_id] = after
        if decision.change is not None:
            change = decision.change
            self.history.append(
                {
                    "device_id": device.device_id,
                    "previous": change.previous.value,
                    "state": change.state.value,
                    "connection": change.connection,
                    "at": change.timestamp,
                }
            )
            self.changes.append((after, decision))
        if decision.alarm is not None:
            self.alarms.append((decision.alarm, device.device_id))
        return decision


async def flush(conn: AsyncConnection, work: Changes) -> list[Event]:
    """Write what `work` decided: rows, history, alarms, and the events of it all."""
    new = [t for i, t in work.current.items() if not work.original[i].stored]
    await store.insert_rows(conn, new)
    updates = {
        device_id: values
        for device_id, after in work.current.items()
        if work.original[device_id].stored
        and (values := store.changed_values(work.original[device_id].liveness, after.liveness))
    }
    await store.write(conn, updates)
    await store.add_history(conn, work.history)
    for tracked, decision in work.changes:
        change = decision.change
        assert change is not None
        work.events.append(
            Event(
                tracked.account_id,
                "device.state",
                tracked.device_id,
                {
                    "id": tracked.uid,
                    "kind": tracked.kind,
                    "state": change.state.value,
                    "previous": change.previous.value,
                    "connection": change.connection,
                    "timestamp": millis(change.timestamp),
                },
            )
        )
    for action, group in _runs(work.alarms):
        if action == "raise":
            opened = await store.raise_offline(conn, group, work.now)
            name, ids = "alarm.raised", [(device_id, opened[device_id]) for device_id in group]
        else:
            name, ids = "alarm.cleared", await store.clear_offline(conn, group, work.now)
        for device_id, alarm_id in ids:
            work.events.append(
                Event(
                    work.current[device_id].account_id,
                    name,
                    device_id,
                    {
                        "id": alarm_id,
                        "alarm_type": store.OFFLINE_ALARM,
                        "priority": store.OFFLINE_PRIORITY,
                        "state": "ACTIVE" if action == "raise" else "INACTIVE",
                    },
                )
            )
    await event_log.append(conn, work.events)
    return work.events
