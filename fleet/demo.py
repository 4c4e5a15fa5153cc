"""`fleet demo`: everything on one machine with nothing installed but Fleet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn
from rich.console import Console
from rich.panel import Panel

from fleet.app import create_app
from fleet.config import Settings, split_host_port
from fleet.sim.alarm_panel import PanelFleet
from fleet.stopping import cancel_and_wait
from fleet.store import accounts
from fleet.store.engine import create_engine
from fleet.store.migrate import upgrade

DEMO_ACCOUNT = "demo"
console = Console()


async def _demo_key(settings: Settings) -> str:
    """A fresh key for the demo account (created on first run): keys are shown only once."""
    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            account_id = await accounts.account_id_by_name(conn, DEMO_ACCOUNT)
            if account_id is None:
                account_id = await accounts.create_account(conn, DEMO_ACCOUNT)
            await accounts.add_namespace(conn, account_id, "alarm_panel", settings.alarm_topic_base)
            return await accounts.issue_key(conn, account_id, label="fleet demo")
    finally:
        await engine.dispose()


async def run_demo(
    settings: Settings, *, panels: int, hb_interval: float, pick_port: Callable[[str, int], int]
) -> None:
    mqtt_host, mqtt_port = split_host_port(settings.mqtt_listen)
    http_host, http_port = split_host_port(settings.http_listen)
    notes = []
    if settings.mqtt_url == "embedded":
        free = pick_port(mqtt_host, mqtt_port)
        if free != mqtt_port:
            notes.append(f"port {mqtt_port} is taken (Mosquitto?): the broker uses {free}")
            mqtt_port = free
    free = pick_port(http_host, http_port)
    if free != http_port:
        notes.append(f"port {http_port} is taken: the API uses {free}")
        http_port = free
    settings = settings.model_copy(
        update={
            "mqtt_listen": f"{mqtt_host}:{mqtt_port}",
            "http_listen": f"{http_host}:{http_port}",
        }
    )
    key = await _demo_key(settings)
    app = create_app(settings)
    server = uvicorn.Server(
        # A bounded shutdown: an open dashboard's event stream would otherwise hold Ctrl+C.
        uvicorn.Config(
            app,
            host=http_host,
            port=http_port,
            log_level="warning",
            timeout_graceful_shutdown=3,
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            return
        await asyncio.sleep(0.05)
    runtime = app.state.runtime
    url = f"http://{http_host}:{http_port}"
    console.print(
        Panel.fit(
            "\n".join(
                [
                    *notes,
                    f"Dashboard and API   {url}/   (OpenAPI: {url}/docs)",
                    f"MQTT broker         {runtime.broker.host}:{runtime.broker.port}",
                    f"Database            {settings.database_url}",
                    f"{panels} simulated alarm panels report every {hb_interval:g} s",
                    "Ctrl+C stops.",
                ]
            ),
            title="Fleet demo",
        )
    )
    # Outside the box, so that a terminal never wraps the key: copy-paste must work.
    print(f"API key (sign in to the dashboard with it): {key}")
    print(f'Try: curl -H "Authorization: Bearer {key}" {url}/api/v1/devices', flush=True)
    fleet = PanelFleet(
        host=runtime.broker.host,
        port=runtime.broker.port,
        base=settings.alarm_topic_base,
        key=settings.hmac_key,
        count=panels,
        seed=7,
        hb_interval=hb_interval,
        status_interval=max(30.0, hb_interval * 6),
        alarm_probability=0.01,
    )
    simulating = asyncio.create_task(fleet.run())
    try:
        await serving
    finally:
        await cancel_and_wait(simulating)
