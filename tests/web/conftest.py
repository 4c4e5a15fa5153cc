"""The dashboard in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser), against the real app served by uvicorn on a free port, ingesting from the real Mosquitto
into a temporary SQLite database.

The server runs in a thread with its own event loop; tests are plain functions using Playwright's
sync API. Screenshots go to artifacts/screenshots/ (look at them).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
import uvicorn

from fleet.app import create_app
from fleet.config import Settings
from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts
from fleet.store.engine import create_engine
from fleet.web.templating import DIST
from tests.conftest import REQUIRE_SERVICES, service_missing
from tests.ingest.harness import KEY, discard_session

CHROMIUM = os.environ.get("FLEET_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@dataclass
class Tenant:
    name: str
    account_id: int
    key: str
    base: str  # its alarm panels' topic base


@dataclass
class FleetServer:
    """Fleet serving on `url`, two accounts, and a publisher to play the panels."""

    url: str
    settings: Settings
    acme: Tenant
    other: Tenant
    publisher: mqtt.Client
    app: Any
    panels: list[SimulatedPanel] = field(default_factory=list)

    def panel(self, seed: int = 0, tenant: Tenant | None = None) -> SimulatedPanel:
        base = (tenant or self.acme).base
        panel = SimulatedPanel(base=base, key=KEY, rng=random.Random(seed))
        self.panels.append(panel)
        return panel

    def send(self, outgoing: tuple[str, bytes]) -> None:
        topic, payload = outgoing
        self.publisher.publish(topic, payload, 1).wait_for_publish(5)


def run_async(func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run `func(*args)` on an event loop of its own, in a thread of its own: Playwright's sync
    API keeps a loop of its own running in the test's thread, where asyncio.run() is refused."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, func(*args)).result()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        service_missing("Debian's chromium (apt-get install -y chromium)")
    if not (DIST / "app.js").is_file():
        reason = "the dashboard's bundle is not built: run `make web` (npm ci && npm run build)"
        if REQUIRE_SERVICES:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return CHROMIUM if Path(CHROMIUM).exists() else str(shutil.which("chromium"))


# Module scope, not session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and pytest-asyncio cannot run async tests of later modules under it.
@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


async def _tenants(db_url: str, base: str) -> tuple[Tenant, Tenant]:
    engine = create_engine(db_url)
    made = []
    try:
        async with engine.begin() as conn:
            for name, namespace in (("acme", base), ("other", f"{base}x")):
                account_id = await accounts.create_account(conn, f"{name}-{base}")
                key = await accounts.issue_key(conn, account_id)
                await accounts.add_namespace(conn, account_id, "alarm_panel", namespace)
                made.append(Tenant(f"{name}-{base}", account_id, key, namespace))
    finally:
        await engine.dispose()
    return made[0], made[1]


@pytest.fixture
def fleet_server(
    sqlite_url: str, mqtt_server: tuple[str, int], topic_base: str
) -> Iterator[FleetServer]:
    host, port = mqtt_server
    client_id = f"fleet-web-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=sqlite_url,
        mqtt_url=f"mqtt://{host}:{port}",
        mqtt_client_id=client_id,
        alarm_topic_base=topic_base,
        alarm_topic_filter=f"{topic_base}/pb/d/+/+",  # acme's panels (other's are seeded)
        alarm_hmac_key=KEY.hex(),
        ingest_batch_wait_ms=5,
    )
    acme, other = run_async(_tenants, sqlite_url, topic_base)
    app = create_app(settings, migrate=False)
    http_port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=http_port,
            log_level="warning",
            ws="none",  # the browser uses Server-Sent Events
            timeout_graceful_shutdown=1,
        )
    )
    thread = threading.Thread(target=server.run, name="fleet-web-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the Fleet server did not start")
        time.sleep(0.05)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_id}-pub")
    publisher.connect(host, port)
    publisher.loop_start()
    try:
        yield FleetServer(f"http://127.0.0.1:{http_port}", settings, acme, other, publisher, app)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        server.should_exit = True
        thread.join(15)
        discard_session(host, port, client_id)


@dataclass
class Browsing:
    """A browser context (one person's cookies) and its page, with what went wrong in it."""

    context: Any
    page: Any
    base_url: str
    errors: list[str]

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base_url + path)

    def sign_in(self, key: str) -> None:
        self.goto("/")
        self.page.fill("#key", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("#live")

    def wait_live(self, timeout: float = 10_000) -> None:
        """Until the page's event stream is connected: from then on nothing is missed."""
        self.page.wait_for_selector('#live[data-state="live"]', timeout=timeout)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def open_browser(browser: Any, fleet_server: FleetServer) -> Iterator[Any]:
    """`open_browser(width=…, height=…)`: a fresh context, as another person would have."""
    opened: list[Browsing] = []

    def make(width: int = 1280, height: int = 900) -> Browsing:
        context = browser.new_context(viewport={"width": width, "height": height})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        page.set_default_timeout(10_000)
        browsing = Browsing(context, page, fleet_server.url, errors)
        opened.append(browsing)
        return browsing

    yield make
    for browsing in opened:
        browsing.context.close()
    for browsing in opened:
        assert not browsing.errors, browsing.errors
