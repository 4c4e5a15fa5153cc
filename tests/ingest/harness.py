"""A real ingest (MqttLink + IngestPipeline) on a real broker and database, and simulated panels
publishing through that broker, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

from fleet.config import Settings
from fleet.runtime import FleetRuntime
from fleet.sim.alarm_panel import SimulatedPanel
from fleet.store import accounts

KEY = bytes.fromhex("11" * 32)


def discard_session(host: str, port: int, client_id: str) -> None:
    """Tell the broker to forget a persistent test session (it would queue messages forever)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port)
    client.loop_start()
    time.sleep(0.05)
    client.disconnect()
    client.loop_stop()


@dataclass
class Stack:
    runtime: FleetRuntime
    host: str
    port: int
    base: str
    account_id: int
    api_key: str
    publisher: mqtt.Client
    panels: list[SimulatedPanel] = field(default_factory=list)

    def panel(self, seed: int = 0) -> SimulatedPanel:
        panel = SimulatedPanel(base=self.base, key=KEY, rng=random.Random(seed))
        self.panels.append(panel)
        return panel

    def send(self, outgoing: tuple[str, bytes], qos: int = 1) -> None:
        topic, payload = outgoing
        self.publisher.publish(topic, payload, qos).wait_for_publish(5)

    def raw(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.publisher.publish(topic, payload, qos).wait_for_publish(5)

    async def until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"condition not met in {timeout} s: {self.runtime.pipeline.stats}"
                )
            await asyncio.sleep(0.02)

    async def processed(self, count: int, timeout: float = 10.0) -> None:
        stats = self.runtime.pipeline.stats
        await self.until(
            lambda: sum(stats.accepted.values()) + sum(stats.rejected.values()) >= count, timeout
        )


async def hold_ingest(stack: Stack) -> asyncio.Event:
    """Hold the ingest's loop before its next read of the link, so that what is sent now piles
    up and is read as a backlog once the returned event is set."""
    from fleet.ingest.pipeline import SWEEP_INTERVAL_SECONDS

    link, held = stack.runtime.pipeline.link, asyncio.Event()
    wait_for_messages = link.wait_for_messages

    async def held_back(max_wait: float | None) -> None:
        await held.wait()
        await wait_for_messages(max_wait)

    link.wait_for_messages = held_back  # type: ignore[method-assign]
    await asyncio.sleep(SWEEP_INTERVAL_SECONDS + 0.3)  # the wait in progress has ended
    return held


async def start_stack(
    db_url: str,
    host: str,
    port: int,
    base: str,
    *,
    existing_account: int | None = None,
    **overrides: object,
) -> Stack:
    """A running Fleet ingest; `existing_account` joins a database another stack set up."""
    client_id = f"fleet-test-{uuid.uuid4().hex[:8]}"
    options: dict[str, object] = {
        "alarm_topic_filter": f"{base}/pb/d/+/+",
        "ingest_batch_wait_ms": 5,
        **overrides,
    }
    settings = Settings(
        database_url=db_url,
        mqtt_url=f"mqtt://{host}:{port}",
        mqtt_client_id=client_id,
        alarm_topic_base=base,
        alarm_hmac_key=KEY.hex(),
        **options,  # type: ignore[arg-type]
    )
    runtime = FleetRuntime(settings)
    async with runtime.engine.begin() as conn:
        if existing_account is None:
            account_id = await accounts.create_account(conn, f"acct-{base}")
            await accounts.add_namespace(conn, account_id, "alarm_panel", base)
        else:
            account_id = existing_account
        api_key = await accounts.issue_key(conn, account_id)
    await runtime.start(migrate=False)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_id}-pub")
    publisher.connect(host, port)
    publisher.loop_start()
    return Stack(runtime, host, port, base, account_id, api_key, publisher)


async def stop_stack(stack: Stack) -> None:
    stack.publisher.disconnect()
    stack.publisher.loop_stop()
    await stack.runtime.stop()
    discard_session(stack.host, stack.port, stack.runtime.settings.mqtt_client_id)
