"""Which devices a task reaches: by id list or by filter, within one account; meters registered
on first use. Repositories never commit: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store import bulk
from fleet.store.bulk_in import one_of
from fleet.store.tables import device_status, devices

CHUNK = 5000


@dataclass(frozen=True, slots=True)
class TargetFilter:
    kind: str | None = None
    firmware_version: str | None = None
    online: bool | None = None
    tag: str | None = None
    zone: int | None = None

    def empty(self) -> bool:
        return all(
            value is None
            for value in (self.kind, self.firmware_version, self.online, self.tag, self.zone)
        )

    def as_dict(self) -> dict[str, Any]:
        values = {
            "kind": self.kind,
            "firmwareVersion": self.firmware_version,
            "online": self.online,
            "tag": self.tag,
            "zone": self.zone,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Found:
    id: int
    kind: str
    uid: str


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


async def by_uids(
    conn: AsyncConnection, account_id: int, uids: Sequence[str]
) -> dict[str, list[Found]]:
    """uid → the account's devices with that uid (one per kind)."""
    found: dict[str, list[Found]] = {}
    for chunk in _chunks(uids):
        rows = await conn.execute(
            sa.select(devices.c.id, devices.c.kind, devices.c.uid).where(
                devices.c.account_id == account_id, one_of(conn, devices.c.uid, chunk)
            )
        )
        for row in rows:
            found.setdefault(row.uid, []).append(Found(row.id, row.kind, row.uid))
    return found


async def by_ids(conn: AsyncConnection, account_id: int, ids: Sequence[int]) -> dict[int, Found]:
    found: dict[int, Found] = {}
    for chunk in _chunks(ids):
        rows = await conn.execute(
            sa.select(devices.c.id, devices.c.kind, devices.c.uid).where(
                devices.c.account_id == account_id, one_of(conn, devices.c.id, chunk)
            )
        )
        found.update({row.id: Found(row.id, row.kind, row.uid) for row in rows})
    return found


async def meter_uids_elsewhere(
    conn: AsyncConnection, account_id: int, uids: Sequence[str], kind: str
) -> set[str]:
    """Which of `uids` are meters of another account (a meter id is global on the head-end)."""
    taken: set[str] = set()
    for chunk in _chunks(uids):
        rows = await conn.execute(
            sa.select(devices.c.uid).where(
                devices.c.kind == kind,
                devices.c.account_id != account_id,
                one_of(conn, devices.c.uid, chunk),
            )
        )
        taken.update(rows.scalars())
    return taken


async def register(
    conn: AsyncConnection,
    account_id: int,
    kind: str,
    uids: Sequence[str],
    *,
    tags: list[str] | None = None,
    notes: str | None = None,
) -> list[Found]:
    """Insert devices of `kind` (meters: they never announce themselves on the broker), in the
    order of `uids`."""
    if tags is None and notes is None:
        # Many at once (a task's first use): one statement, then one query for the ids.
        await bulk.insert_rows(
            conn, devices, ("account_id", "kind", "uid"), [(account_id, kind, u) for u in uids]
        )
        found = await by_uids(conn, account_id, uids)
        return [next(f for f in found[uid] if f.kind == kind) for uid in uids]
    ids: dict[str, int] = {}
    for chunk in _chunks(uids):
        result = await conn.execute(
            sa.insert(devices).returning(devices.c.id, devices.c.uid),
            [
                {"account_id": account_id, "kind": kind, "uid": uid, "tags": tags, "notes": notes}
                for uid in chunk
            ],
        )
        ids.update({str(row.uid): int(row.id) for row in result})
    return [Found(ids[uid], kind, uid) for uid in uids]


async def by_filter(
    conn: AsyncConnection, account_id: int, where: TargetFilter, kinds: Collection[str]
) -> list[Found]:
    """The account's devices matching every given criterion, of one of `kinds`, in id order.
    Tags are matched here rather than in SQL: JSON containment differs between the databases."""
    query = (
        sa.select(devices.c.id, devices.c.kind, devices.c.uid, devices.c.tags)
        .select_from(devices.outerjoin(device_status, device_status.c.device_id == devices.c.id))
        .where(devices.c.account_id == account_id, devices.c.kind.in_(list(kinds)))
    )
    if where.kind is not None:
        query = query.where(devices.c.kind == where.kind)
    if where.firmware_version is not None:
        query = query.where(device_status.c.firmware_version == where.firmware_version)
    if where.online is not None:
        query = query.where(sa.func.coalesce(device_status.c.is_online, sa.false()) == where.online)
    if where.zone is not None:
        query = query.where(devices.c.zone == where.zone)
    rows = await conn.execute(query.order_by(devices.c.id))
    return [
        Found(row.id, row.kind, row.uid)
        for row in rows
        if where.tag is None or (isinstance(row.tags, list) and where.tag in row.tags)
    ]


async def set_tags(conn: AsyncConnection, account_id: int, device_id: int, tags: list[str]) -> bool:
    result = await conn.execute(
        sa.update(devices)
        .where(devices.c.id == device_id, devices.c.account_id == account_id)
        .values(tags=tags)
    )
    return result.rowcount > 0


async def device_row(
    conn: AsyncConnection, account_id: int, device_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(
                devices.c.id,
                devices.c.kind,
                devices.c.uid,
                devices.c.tags,
                devices.c.notes,
                devices.c.active,
                devices.c.created_at,
                devices.c.updated_at,
            ).where(devices.c.id == device_id, devices.c.account_id == account_id)
        )
    ).first()
    return None if row is None else dict(row._mapping)
