"""The dashboard's sign-in, session cookie and CSRF rules, and every page rendering, over HTTP
(no browser) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.api import ApiContext, build_api
from fleet.config import Settings
from fleet.integrations.alarm_panel.transport import AlarmPanelTransport
from fleet.services.commands import CommandService
from fleet.store import accounts
from fleet.store.tables_web import web_sessions
from fleet.web.site import mount_web
from tests.api.conftest import T0, RecordingPublisher, Seeder, Tenant

EVIL = "https://evil.example"


@dataclass
class Site:
    app: FastAPI
    engine: AsyncEngine
    seed: Seeder

    def client(self, base_url: str = "http://fleet.test") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url=base_url)

    async def signed_in(
        self, tenant: Tenant, base_url: str = "http://fleet.test"
    ) -> httpx.AsyncClient:
        client = self.client(base_url)
        response = await client.post("/login", data={"key": tenant.key})
        assert response.status_code == 303, response.text
        return client


def make_site(engine: AsyncEngine, **settings: object) -> Site:
    commands = CommandService(
        engine,
        {"alarm_panel": AlarmPanelTransport(publisher=RecordingPublisher(), hmac_key=bytes(32))},
    )
    app = build_api(
        ApiContext(settings=Settings(**settings), engine=engine, commands=commands)  # type: ignore[arg-type]
    )
    mount_web(app)
    return Site(app, engine, Seeder(engine))


@pytest.fixture
async def site(engine: AsyncEngine) -> AsyncIterator[Site]:
    yield make_site(engine)


def _cookie_header(response: httpx.Response) -> str:
    return next(v for k, v in response.headers.multi_items() if k == "set-cookie")


async def test_the_session_cookie_is_httponly_strict_and_only_its_hash_is_kept(site: Site) -> None:
    acme = await site.seed.tenant("acme")
    async with site.client() as client:
        response = await client.post("/login", data={"key": acme.key, "next": "/devices"})
    assert response.status_code == 303
    assert response.headers["location"] == "/devices"
    header = _cookie_header(response)
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "samesite=strict" in header.lower()
    assert "secure" not in attributes  # plain http
    session_id = header.split(";")[0].split("=", 1)[1]
    assert len(session_id) >= 43 and acme.key not in header
    async with site.engine.connect() as conn:
        stored = (await conn.execute(sa.select(web_sessions))).mappings().all()
    assert [row["id_hash"] for row in stored] == [hashlib.sha256(session_id.encode()).hexdigest()]
    assert stored[0]["account_id"] == acme.id
    assert stored[0]["expires_at"] - stored[0]["created_at"] == timedelta(hours=12)


@pytest.mark.parametrize(
    ("mode", "base_url", "secure"),
    [
        ("auto", "https://fleet.test", True),
        ("auto", "http://fleet.test", False),
        ("always", "http://fleet.test", True),
        ("never", "https://fleet.test", False),
    ],
)
async def test_the_secure_flag(engine: AsyncEngine, mode: str, base_url: str, secure: bool) -> None:
    site = make_site(engine, web_cookie_secure=mode)
    acme = await site.seed.tenant("acme")
    async with site.client(base_url) as client:
        response = await client.post("/login", data={"key": acme.key})
    attributes = {part.strip().lower() for part in _cookie_header(response).split(";")}
    assert ("secure" in attributes) is secure


async def test_the_cookie_signs_in_the_api_and_state_changes_need_the_csrf_header(
    site: Site,
) -> None:
    acme = await site.seed.tenant("acme")
    device_id = await site.seed.device(acme)
    url = f"/api/v1/devices/{device_id}"
    browser = await site.signed_in(acme)
    assert (await browser.get("/api/v1/devices")).json()["items"][0]["id"] == device_id
    refused = await browser.patch(url, json={"notes": "x"})
    assert refused.status_code == 403 and "X-Fleet-CSRF" in refused.json()["detail"]
    ok = await browser.patch(url, json={"notes": "x"}, headers={"X-Fleet-CSRF": "1"})
    assert ok.status_code == 200 and ok.json()["notes"] == "x"
    elsewhere = await browser.patch(
        url, json={"notes": "y"}, headers={"X-Fleet-CSRF": "1", "Origin": EVIL}
    )
    assert elsewhere.status_code == 403
    same_site = await browser.patch(
        url, json={"notes": "z"}, headers={"X-Fleet-CSRF": "1", "Origin": "http://fleet.test"}
    )
    assert same_site.status_code == 200
    await browser.aclose()
    # An API key needs no CSRF header: it is never sent by a browser on its own.
    async with site.client() as client:
        keyed = await client.patch(url, json={"notes": "k"}, headers=acme.headers)
    assert keyed.status_code == 200


async def test_sign_in_refuses_bad_keys_ingest_tokens_other_sites_and_open_redirects(
    site: Site,
) -> None:
    acme = await site.seed.tenant("acme")
    async with site.engine.begin() as conn:
        ingest = await accounts.issue_key(conn, acme.id, "ingest")
    async with site.client() as client:
        wrong = await client.post("/login", data={"key": "fleet_nope"})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        token = await client.post("/login", data={"key": ingest})
        assert token.status_code == 401 and "ingest token" in token.text
        cross = await client.post("/login", data={"key": acme.key}, headers={"Origin": EVIL})
        assert cross.status_code == 403 and "set-cookie" not in cross.headers
        for target in ("//evil.example/x", "https://evil.example", "/\\evil.example"):
            response = await client.post("/login", data={"key": acme.key, "next": target})
            assert response.headers["location"] == "/"
    async with site.engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(web_sessions)) == 3


async def test_sign_out_and_expiry_end_the_session(site: Site) -> None:
    acme = await site.seed.tenant("acme")
    browser = await site.signed_in(acme)
    old_cookie = browser.cookies["fleet_session"]
    cross = await browser.post("/logout", headers={"Origin": EVIL})
    assert cross.status_code == 403
    response = await browser.post("/logout")
    assert response.status_code == 303 and "Max-Age=0" in _cookie_header(response)
    async with site.client() as client:
        client.cookies.set("fleet_session", old_cookie)
        assert (await client.get("/api/v1/devices")).status_code == 401
        page = await client.get("/devices")
        assert page.status_code == 303 and page.headers["location"] == "/?next=/devices"

    browser = await site.signed_in(acme)
    async with site.engine.begin() as conn:
        await conn.execute(
            sa.update(web_sessions).values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    expired = await browser.get("/api/v1/devices")
    assert expired.status_code == 401 and "sign in again" in expired.json()["detail"]
    assert "Sign in with an API key" in (await browser.get("/")).text
    await browser.aclose()


async def test_pages_need_a_session(site: Site) -> None:
    async with site.client() as client:
        for path in ("/devices", "/alarms", "/devices/1", "/connections", "/tasks"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/?next=")
        fragment = await client.get("/devices?fragment=table")
        assert fragment.status_code == 401
        assert (await client.get("/")).status_code == 200  # the sign-in form


async def test_every_page_renders_empty_and_with_data_and_only_the_accounts_own(
    site: Site,
) -> None:
    acme = await site.seed.tenant("acme")
    other = await site.seed.tenant("other")
    browser = await site.signed_in(acme)
    for path in ("/", "/devices", "/alarms", "/alarms?show=all", "/connections", "/tasks"):
        response = await browser.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["cache-control"] == "no-store"
    assert "Connect your first device" in (await browser.get("/")).text
    assert "ns-acme" in (await browser.get("/devices")).text  # the account's topic base

    status = {"is_online": True, "device_state": "NORMAL", "temperature": 21.5, "humidity": 40.0}
    device_id = await site.seed.device(acme, status=status, hostname="LOBBY_PANEL")
    foreign = await site.seed.device(other, hostname="FOREIGN_PANEL")
    await site.seed.alarm(device_id, T0, priority="CRITICAL")
    await site.seed.heartbeat(device_id, T0, temperature=21.0, humidity=41.0)
    pages = {
        "/": ["critical", "Normal"],
        "/devices": ["LOBBY_PANEL"],
        "/devices?q=lobby&state=panel:NORMAL&sort=temperature&dir=desc": ["LOBBY_PANEL"],
        "/alarms": ["Panic 1", "LOBBY_PANEL"],
        f"/devices/{device_id}": ["LOBBY_PANEL", "Temperature", "Panic 1", "Reboot"],
        f"/devices/{device_id}?fragment=status": ["21.5 °C"],
    }
    for path, expected in pages.items():
        response = await browser.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        for text in expected:
            assert text in response.text, (path, text)
        assert "FOREIGN_PANEL" not in response.text
    assert (await browser.get("/devices?q=nothing-like-it")).text.count("No device matches") == 1
    assert (await browser.get(f"/devices/{foreign}")).status_code == 404
    assert (await browser.get("/devices?fragment=table")).text.lstrip().startswith("<")
    assert (await browser.get("/tasks/no-such-task")).status_code == 404
    await browser.aclose()
