"""The devices page's table: search, filters, sort and numbered pages, read in one query.

The API's device list pages by keyset (stable under inserts, for programs); people want a total,
page numbers and any sort order, so the page reads the store itself with OFFSET paging.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.liveness import STATES as LIVENESS_STATES
from fleet.store.tables import device_status, devices
from fleet.store.tables_liveness import device_details, liveness

PAGE_SIZES = (25, 50, 100)
_online = sa.func.coalesce(device_status.c.is_online, sa.false())
_liveness = sa.func.coalesce(liveness.c.state, "New")  # no liveness row yet: New
_friendly = device_details.c.details["friendly_name"].as_string()
_name = sa.func.coalesce(_friendly, devices.c.hostname, devices.c.uid)
SORTS: dict[str, sa.ColumnElement[Any]] = {
    "name": sa.func.lower(_name),
    "kind": devices.c.kind,
    "state": _liveness,
    "connection": liveness.c.connection,
    "firmware": device_status.c.firmware_version,
    "last_seen": device_status.c.last_seen,
    "temperature": device_status.c.temperature,
    "id": devices.c.id,
}
# The state filter takes a liveness state (Reporting…) or, prefixed, the device's own state.
PANEL_PREFIX = "panel:"
NO_STATE = "UNKNOWN"  # how the filter names devices that never reported a state of their own
NO_CONNECTION = "-"  # devices that report no connection (alarm panels, say)
_JOINED = (
    devices.outerjoin(device_status, device_status.c.device_id == devices.c.id)
    .outerjoin(liveness, liveness.c.device_id == devices.c.id)
    .outerjoin(device_details, device_details.c.device_id == devices.c.id)
)


def _text(params: Mapping[str, str], name: str, max_len: int = 64) -> str:
    return params.get(name, "").strip()[:max_len]


@dataclass(frozen=True, slots=True)
class DeviceQuery:
    q: str = ""
    kind: str = ""
    state: str = ""
    connection: str = ""
    firmware: str = ""
    sort: str = "name"
    desc: bool = False
    page: int = 1
    per: int = PAGE_SIZES[0]

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DeviceQuery:
        """Lenient: whatever a hand-edited URL holds, the page still shows something sensible."""
        sort = params.get("sort", "name")
        page = params.get("page", "1")
        per = params.get("per", "")
        state = _text(params, "state", 40)
        if state.lower().startswith(PANEL_PREFIX):
            state = PANEL_PREFIX + state[len(PANEL_PREFIX) :].upper()
        else:
            state = next((name for name in LIVENESS_STATES if name.lower() == state.lower()), "")
        return cls(
            q=_text(params, "q"),
            kind=_text(params, "kind", 32),
            state=state,
            connection=_text(params, "connection", 256),
            firmware=_text(params, "firmware", 16),
            sort=sort if sort in SORTS else "name",
            desc=params.get("dir") == "desc",
            page=min(int(page), 10**6) if page.isdigit() and int(page) > 0 else 1,
            per=int(per) if per.isdigit() and int(per) in PAGE_SIZES else PAGE_SIZES[0],
        )

    @property
    def filtered(self) -> bool:
        return any((self.q, self.kind, self.state, self.connection, self.firmware))

    def params(self, **changes: Any) -> str:
        """This query as a URL query string, with `changes` applied; defaults are left out."""
        query = replace(self, **changes)
        values = {
            "q": query.q,
            "kind": query.kind,
            "state": query.state,
            "connection": query.connection,
            "firmware": query.firmware,
            "sort": "" if query.sort == "name" else query.sort,
            "dir": "desc" if query.desc else "",
            "page": "" if query.page == 1 else str(query.page),
            "per": "" if query.per == PAGE_SIZES[0] else str(query.per),
        }
        return urlencode({k: v for k, v in values.items() if v})

    def sorted_by(self, column: str) -> str:
        """The link of a column header: sort by it, or flip the direction if it already is."""
        desc = not self.desc if self.sort == column else False
        return self.params(sort=column, desc=desc, page=1)


@dataclass(frozen=True, slots=True)
class DevicePage:
    rows: list[dict[str, Any]]
    total: int
    query: DeviceQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per))

    @property
    def first_index(self) -> int:
        return 0 if not self.rows else (self.query.page - 1) * self.query.per + 1

    @property
    def last_index(self) -> int:
        return (self.query.page - 1) * self.query.per + len(self.rows)


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _conditions(account_id: int, query: DeviceQuery) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = [devices.c.account_id == account_id]
    if query.q:
        pattern = _like(query.q)
        where.append(
            sa.or_(
                *(
                    sa.func.lower(column).like(pattern, escape="\\")
                    for column in (
                        devices.c.hostname,
                        devices.c.mac_address,
                        devices.c.uid,
                        devices.c.location_desc,
                        device_status.c.ip_address,
                        _friendly,
                        liveness.c.connection,
                    )
                )
            )
        )
    if query.kind:
        where.append(devices.c.kind == query.kind)
    if query.state.startswith(PANEL_PREFIX):
        panel_state = query.state[len(PANEL_PREFIX) :]
        if panel_state == NO_STATE:
            where.append(device_status.c.device_state.is_(None))
        else:
            where.append(sa.func.upper(device_status.c.device_state) == panel_state)
    elif query.state:
        where.append(_liveness == query.state)
    if query.connection == NO_CONNECTION:
        where.append(liveness.c.connection.is_(None))
    elif query.connection:
        where.append(liveness.c.connection == query.connection)
    if query.firmware:
        where.append(device_status.c.firmware_version == query.firmware)
    return where


async def device_page(conn: AsyncConnection, account_id: int, query: DeviceQuery) -> DevicePage:
    where = _conditions(account_id, query)
    total = int(
        await conn.scalar(sa.select(sa.func.count()).select_from(_JOINED).where(*where)) or 0
    )
    pages = max(1, -(-total // query.per))
    if query.page > pages:
        query = replace(query, page=pages)
    key = SORTS[query.sort]
    order = key.desc() if query.desc else key.asc()
    rows = await conn.execute(
        sa.select(
            devices.c.id,
            devices.c.kind,
            devices.c.uid,
            devices.c.hostname,
            devices.c.mac_address,
            devices.c.location_desc,
            devices.c.active,
            _friendly.label("friendly_name"),
            _online.label("online"),
            _liveness.label("liveness"),
            liveness.c.connection,
            device_status.c.device_state,
            device_status.c.firmware_version,
            device_status.c.last_seen,
            device_status.c.temperature,
            device_status.c.humidity,
            device_status.c.network_type,
            device_status.c.rssi,
        )
        .select_from(_JOINED)
        .where(*where)
        .order_by(order.nulls_last(), devices.c.id)
        .limit(query.per)
        .offset((query.page - 1) * query.per)
    )
    return DevicePage([dict(row._mapping) for row in rows], total, query)


@dataclass(frozen=True, slots=True)
class FilterOptions:
    kinds: list[str]
    states: list[str]  # liveness states
    panel_states: list[str]  # the devices' own states (NORMAL, ALARM, …)
    connections: list[str]
    firmware: list[str]


MAX_OPTIONS = 200  # a select longer than this is no help: search instead


async def filter_options(conn: AsyncConnection, account_id: int) -> FilterOptions:
    mine = devices.c.account_id == account_id

    async def distinct(column: sa.ColumnElement[Any]) -> list[str]:
        rows = await conn.execute(
            sa.select(column)
            .select_from(_JOINED)
            .where(mine, column.is_not(None))
            .distinct()
            .order_by(column)
            .limit(MAX_OPTIONS)
        )
        return sorted(str(row[0]) for row in rows)

    panel_states = [s.upper() for s in await distinct(device_status.c.device_state)]
    return FilterOptions(
        kinds=await distinct(devices.c.kind),
        states=list(LIVENESS_STATES),
        panel_states=sorted(set(panel_states)),
        connections=await distinct(liveness.c.connection),
        firmware=await distinct(device_status.c.firmware_version),
    )
