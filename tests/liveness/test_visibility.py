"""Seed 000's `Account` visibility, for every route of Fleet: with one account's credentials,
nothing of another account can be read, changed or learnt of; with no credentials (or the wrong
kind), nothing at all.

Generic on purpose: the routes come from the whole app's OpenAPI document (every router anyone
adds is in it), request bodies are built from their schemas, and "another account's data" is
every row that reaches account A through the foreign keys, whichever table it is in. Account A
gets data in every capability this test knows how to create; for ids it cannot name it tries all
of A's ids. Each call goes straight to the ASGI app with a deadline, so streaming routes (SSE)
are read for a moment and then disconnected.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.integrations.reporter.wire import device_uid
from fleet.store.tables import device_status, devices, heartbeats, metadata
from tests.api.conftest import T0
from tests.liveness.conftest import Account, Fleet, FleetFactory

CALL_SECONDS = 1.5  # a streaming response is read this long, then the client goes away
MISSING = 1_000_000
SECRET = "zq7"  # in every text of account A, and in nothing of B's


# --- calling the app --------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


async def call(
    app: FastAPI,
    method: str,
    path: str,
    *,
    query: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    content_type: str | None = None,
) -> Reply:
    """One request through the ASGI app; whatever it sent within CALL_SECONDS is the reply."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if content_type:
        raw_headers.append((b"content-type", content_type.encode()))
    raw_headers.append((b"content-length", str(len(body)).encode()))
    raw_headers.append((b"host", b"fleet"))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path, safe="/:=").encode(),
        "query_string": urlencode(query or {}, doseq=True).encode(),
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("fleet", 80),
        "root_path": "",
        "app": app,
    }
    sent_body = False
    gone = asyncio.Event()
    status = 0
    chunks: list[bytes] = []
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    task = asyncio.create_task(app(scope, receive, send))
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, timeout=CALL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    gone.set()
    for pending in (task, waiter):
        if not pending.done():
            pending.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None and status == 0:
        raise task.exception()  # type: ignore[misc]
    return Reply(status, b"".join(chunks).decode(errors="replace"))


# --- what account A owns, in every table ------------------------------------------------------


def owned_queries(account_id: int) -> dict[str, sa.Select[Any]]:
    """For every table that reaches `accounts` through its foreign keys: A's rows of it."""
    owned: dict[str, sa.ColumnElement[bool]] = {}

    def condition(table: sa.Table, seen: frozenset[str]) -> sa.ColumnElement[bool] | None:
        if table.name in owned:
            return owned[table.name]
        if table.name == "accounts":
            return table.c.id == account_id
        for column in table.columns:
            for fk in column.foreign_keys:
                parent = fk.column.table
                if parent.name in seen or not isinstance(parent, sa.Table):
                    continue
                parent_condition = condition(parent, seen | {table.name})
                if parent_condition is not None:
                    ids = sa.select(fk.column).where(parent_condition)
                    return column.in_(ids)
        if "account_id" in table.c:  # a copy without a foreign key (e.g. the event log)
            return table.c.account_id == account_id
        return None

    for table in metadata.sorted_tables:
        found = condition(table, frozenset())
        if found is not None:
            owned[table.name] = found
    return {name: sa.select(metadata.tables[name]).where(c) for name, c in owned.items()}


async def snapshot(engine: AsyncEngine, account_id: int) -> dict[str, list[str]]:
    async with engine.connect() as conn:
        existing = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        result = {}
        for name, query in owned_queries(account_id).items():
            if name in existing:
                rows = await conn.execute(query)
                result[name] = sorted(repr(tuple(row)) for row in rows)
        return result


# --- building requests ------------------------------------------------------------------------


@dataclass
class Owned:
    """Account A's ids and names, by what a parameter may call them."""

    ints: dict[str, list[int]] = field(default_factory=dict)  # device_id → [..], alarm_id → …
    strings: dict[str, list[str]] = field(default_factory=dict)  # device_id (uid), connection
    all_ids: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)  # what must never reach B


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _param_type(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    schema = _resolve(schema, spec)
    for option in schema.get("anyOf", [schema]):
        kind = _resolve(option, spec).get("type")
        if kind not in (None, "null"):
            return str(kind)
    return "string"


def example(schema: dict[str, Any], spec: dict[str, Any], owned: Owned, name: str = "") -> Any:
    """A value the schema accepts, with A's ids wherever a field names an id."""
    schema = _resolve(schema, spec)
    singular = name[:-1] if name.endswith("ids") else name
    if owned.ints.get(singular):
        ids = owned.ints[singular]
        return ids if name.endswith("ids") else ids[0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("default") is not None:
        return schema["default"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if _resolve(o, spec).get("type") != "null"]
            return example(options[0], spec, owned, name) if options else None
    if "allOf" in schema:
        return example(schema["allOf"][0], spec, owned, name)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {key: example(value, spec, owned, key) for key, value in props.items()}
    if kind == "array":
        item = example(schema.get("items", {}), spec, owned, singular)
        return [item] * max(1, schema.get("minItems", 1))
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return max(1.0, float(schema.get("minimum", 1)))
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return T0.isoformat()
    return "x" * max(1, int(schema.get("minLength", 1)))


@dataclass
class Operation:
    method: str
    path: str
    params: list[dict[str, Any]]
    body: tuple[str, bytes] | None  # content type, bytes
    schemes: set[str]

    @property
    def ingest(self) -> bool:
        return any("ingest" in scheme.lower() for scheme in self.schemes)

    def path_params(self) -> list[dict[str, Any]]:
        return [p for p in self.params if p["in"] == "path"]


def operations(app: FastAPI, owned: Owned) -> list[Operation]:
    spec = app.openapi()
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            body = None
            content = op.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                value = example(content["application/json"]["schema"], spec, owned)
                body = ("application/json", json.dumps(value).encode())
            elif "application/x-www-form-urlencoded" in content:
                body = ("application/x-www-form-urlencoded", b"")
            schemes = {name for requirement in op.get("security", []) for name in requirement}
            params = [
                {**p, "kind": _param_type(p.get("schema", {}), spec)}
                for p in op.get("parameters", [])
            ]
            found.append(Operation(method.upper(), path, params, body, schemes))
    return found


def candidates(param: dict[str, Any], owned: Owned) -> tuple[list[Any], bool]:
    """A's values for a path parameter, and whether each must answer exactly 404 (the parameter
    names a kind of id this test knows; otherwise any of A's ids is tried and only leaks and
    changes are checked, since it may be one of B's own ids of another table)."""
    name, kind = param["name"], param["kind"]
    if kind == "integer":
        if owned.ints.get(name):
            return owned.ints[name], True
        return owned.all_ids, False
    if owned.strings.get(name):
        return owned.strings[name], True
    return owned.texts[:5], False


def leaks(reply: Reply, sent: list[str], owned: Owned) -> list[str]:
    """A's texts in the reply, other than the values the caller itself sent (a 404 may echo)."""
    text = reply.text
    for value in sorted(sent, key=len, reverse=True):
        text = text.replace(value, "")
    return [secret for secret in owned.texts if secret in text]


# --- the data -----------------------------------------------------------------------------------


async def report(fleet: Fleet, who: Account, name: str, connection: str) -> dict[str, Any]:
    reply = await fleet.client.get(
        "/report/ongoing",
        params={"device_id": name, "connection": connection, "period": "60"},
        headers=who.ingest,
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def seed(fleet: Fleet, who: Account, tag: str) -> Owned:
    """Data of every kind this test knows: reporters (one Offline, with its alarm and history),
    details, an alarm panel with status, heartbeats, an alarm and a command."""
    engine = fleet.runtime.engine
    names = [f"{tag}-probe-{n}" for n in (1, 2)]
    connection = f"ssid={tag}-net"
    uids = [device_uid(who.id, name) for name in names]
    for name in names:
        await report(fleet, who, name, f"\t{connection}")
    fleet.clock.advance(30)
    await report(fleet, who, names[0], connection)
    fleet.clock.advance(40)
    await fleet.run_job("liveness-timers")  # names[1] goes Offline: alarm, history, events
    mac = "A1:A1:A1:A1:A1:A1" if tag.startswith("a") else "B2:B2:B2:B2:B2:B2"
    hostname = f"ESG_{tag}_{mac.replace(':', '')}"[:32]
    async with engine.begin() as conn:
        panel = int(
            (
                await conn.execute(
                    sa.insert(devices)
                    .values(
                        account_id=who.id,
                        kind="alarm_panel",
                        uid=mac,
                        mac_address=mac,
                        hostname=hostname,
                        namespace=f"ns-{tag}",
                        notes=f"notes of {tag}",
                    )
                    .returning(devices.c.id)
                )
            ).scalar_one()
        )
        await conn.execute(
            sa.insert(device_status).values(device_id=panel, is_online=True, last_seen=T0)
        )
        await conn.execute(
            sa.insert(heartbeats).values(device_id=panel, time=T0, change_type="PERIODIC")
        )
    command = await fleet.client.post(
        f"/api/v1/devices/{panel}/commands",
        headers=who.api,
        json={"type": "SYSTEM", "payload": {"action": "REBOOT"}},
    )
    assert command.status_code in (200, 201), command.text
    await fleet.run_job("liveness-reconcile")  # the panel gets its liveness too
    liveness = await fleet.get("/api/v1/liveness", who)
    device_ids = [item["device_id"] for item in liveness["items"]]
    for device_id in device_ids:
        put = await fleet.client.put(
            f"/api/v1/devices/{device_id}/details",
            headers=who.api,
            json={"friendly_name": f"{tag} friendly {device_id}"},
        )
        assert put.status_code == 200
    alarms = await fleet.get("/api/v1/alarms", who)
    owned = Owned()
    owned.ints = {
        "device_id": device_ids,
        "alarm_id": [item["id"] for item in alarms["items"]],
        "command_id": [command.json()["id"]],
    }
    owned.strings = {"device_id": [*uids, mac], "connection": [connection]}
    owned.texts = [tag, *uids, mac, connection]
    return owned


async def all_owned_ids(engine: AsyncEngine, account_id: int) -> list[int]:
    ids: set[int] = set()
    async with engine.connect() as conn:
        for name, query in owned_queries(account_id).items():
            table = metadata.tables[name]
            (pk,) = table.primary_key.columns if len(table.primary_key.columns) == 1 else (None,)
            if pk is None or not isinstance(pk.type, sa.Integer):
                continue
            ids.update(int(v) for v in (await conn.execute(query.with_only_columns(pk))).scalars())
    return sorted(ids)


# --- the test -----------------------------------------------------------------------------------


async def test_no_route_reaches_another_accounts_data(fleets: FleetFactory) -> None:
    fleet = await fleets.start()
    await fleet.runtime.event_hub.start()  # the event stream's routes need their hub
    try:
        await check_every_route(fleet)
    finally:
        await fleet.runtime.event_hub.stop()


async def check_every_route(fleet: Fleet) -> None:
    # B first, so that A's ids (created after) are never B's ids of the same table.
    beta = await fleet.account(f"b{SECRET}-account")
    await seed(fleet, beta, "b-acct")
    alpha = await fleet.account(f"a{SECRET}-account")
    owned = await seed(fleet, alpha, f"a{SECRET}")
    owned.texts.append(alpha.name)
    owned.all_ids = (await all_owned_ids(fleet.runtime.engine, alpha.id))[:40]
    before = await snapshot(fleet.runtime.engine, alpha.id)
    assert {"devices", "liveness", "liveness_history", "device_details", "alarm_events"} <= {
        name for name, rows in before.items() if rows
    }
    app = fleet.app
    ops = operations(app, owned)
    paths = {op.path for op in ops}
    for mine in ("/report/ongoing", "/api/v1/connections/{connection}", "/api/device/list"):
        assert mine in paths
    failures: list[str] = []

    def expect(condition: bool, op: Operation, what: str, reply: Reply) -> None:
        if not condition:
            failures.append(f"{op.method} {op.path}: {what} ({reply.status} {reply.text[:200]})")

    for op in ops:
        if not op.schemes:
            # Open routes (health, metrics, docs): nothing of any account in them.
            if op.method == "GET" and not op.path_params():
                reply = await call(app, "GET", op.path)
                expect(not leaks(reply, [], owned), op, "open route shows A's data", reply)
            continue
        body = op.body or ("", b"")
        # No credentials at all, or the other kind of credentials: refused, nothing done.
        wrong = beta.api if op.ingest else alpha.ingest
        for headers in ({}, wrong):
            path = re.sub(r"\{[^}]+\}", "1", op.path)
            reply = await call(app, op.method, path, headers=headers, body=body[1],
                               content_type=body[0] or None)  # fmt: skip
            expect(reply.status == 401, op, f"not refused with {headers or 'nothing'}", reply)
        if not op.ingest:
            await check_api_route(app, op, beta, owned, expect, body)
    # Last: B's reports under A's device names give B devices that carry those names.
    for op in ops:
        if op.ingest:
            await check_report_route(app, op, beta, owned, expect)

    assert not failures, "\n".join(failures)
    after = await snapshot(fleet.runtime.engine, alpha.id)
    changed = [name for name in before if before[name] != after.get(name)]
    assert not changed, f"B's calls changed A's rows in {changed}"
    # And the routes were not simply closed: A's own credentials work on them.
    for op in ops:
        if op.ingest:
            reply = await call(
                app, op.method, op.path, query={"device_id": "x"}, headers=alpha.ingest
            )
            assert reply.status == 200, (op.path, reply.text)
    reply = await call(app, "GET", "/api/v1/connections", headers=alpha.api)
    assert reply.status == 200 and owned.strings["connection"][0] in reply.text


async def check_api_route(
    app: FastAPI, op: Operation, beta: Account, owned: Owned, expect: Any, body: tuple[str, bytes]
) -> None:
    path_params = op.path_params()
    query_params = [p for p in op.params if p["in"] == "query"]
    # The lists and other routes without ids: with no filter, with A's ids as filters, with
    # A's names as search texts. B's own rows only, never A's.
    if not path_params:
        variants: list[dict[str, Any]] = [{}]
        by_id = {
            p["name"]: owned.ints[p["name"]][0]
            for p in query_params
            if p["kind"] == "integer" and owned.ints.get(p["name"])
        }
        by_text = {p["name"]: owned.texts[0] for p in query_params if p["kind"] == "string"}
        variants += [v for v in (by_id, by_text) if v]
        for query in variants:
            reply = await call(app, op.method, op.path, query=query, headers=beta.api,
                               body=body[1], content_type=body[0] or None)  # fmt: skip
            sent = [str(v) for v in query.values()]
            expect(reply.status < 500, op, f"server error with {query}", reply)
            expect(not leaks(reply, sent, owned), op, f"A's data shown with {query}", reply)
            if by_id and query is by_id and reply.status == 200 and op.method == "GET":
                items = reply.json().get("items") if reply.text.startswith("{") else None
                expect(not items, op, "a list filtered by A's id is not empty", reply)
        return
    # Routes of one resource: every one of A's ids answers exactly what a missing id answers.
    first = path_params[0]
    values, strict = candidates(first, owned)
    for value in values:
        ids = {p["name"]: value if p is first else candidates(p, owned)[0][0] for p in path_params}
        path = op.path.format(**{k: str(v) for k, v in ids.items()})
        reply = await call(app, op.method, path, headers=beta.api, body=body[1],
                           content_type=body[0] or None)  # fmt: skip
        sent = [str(v) for v in ids.values()]
        expect(reply.status < 500, op, f"server error for {ids}", reply)
        expect(not leaks(reply, sent, owned), op, f"A's data shown for {ids}", reply)
        if strict:
            expect(reply.status == 404, op, f"A's {first['name']} {value} not 404", reply)
            ghost_value = MISSING if first["kind"] == "integer" else "f" * 64
            ghost_ids = {**ids, first["name"]: ghost_value}
            ghost = await call(
                app,
                op.method,
                op.path.format(**{k: str(v) for k, v in ghost_ids.items()}),
                headers=beta.api,
                body=body[1],
                content_type=body[0] or None,
            )
            same = (
                ghost.status == reply.status
                and ghost.text.replace(str(ghost_value), str(value)) == reply.text
            )
            expect(same, op, "A's id answers unlike a missing one", reply)


async def check_report_route(
    app: FastAPI, op: Operation, beta: Account, owned: Owned, expect: Any
) -> None:
    """B's reporters using A's device names or ids reach B's own devices, never A's."""
    for name in [*owned.strings["device_id"], f"a{SECRET}-probe-1"]:
        reply = await call(
            app,
            op.method,
            op.path,
            query={"device_id": name, "connection": owned.strings["connection"][0]},
            headers=beta.ingest,
        )
        expect(reply.status == 200, op, f"B's report as {name} refused", reply)
        if reply.status == 200:
            expect(reply.json()["id"] == device_uid(beta.id, name), op, "not B's device", reply)


async def test_the_generic_machinery_finds_accounts_data(fleet: Fleet) -> None:
    """What the test above relies on finds what it should, so that it cannot pass vacuously."""
    acme = await fleet.account("acme")
    owned = await seed(fleet, acme, "acme")
    queries = owned_queries(acme.id)
    for table in ("devices", "liveness", "liveness_history", "device_details", "alarm_events",
                  "command_log", "heartbeats", "device_status", "events", "api_keys"):  # fmt: skip
        assert table in queries, table
    assert len(owned.ints["device_id"]) == 3 and owned.ints["alarm_id"]
    reply = await call(fleet.app, "GET", "/api/v1/liveness", headers=acme.api)
    assert reply.status == 200 and leaks(reply, [], owned)  # its own data, found as such
    ops = operations(fleet.app, owned)
    post = next(op for op in ops if op.path == "/api/v1/devices/{device_id}/liveness"
                and op.method == "POST")  # fmt: skip
    assert post.body == ("application/json", b'{"state": "Stopped"}')
