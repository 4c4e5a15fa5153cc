"""`fleet simulate`: every simulated device kind at once, with one live progress line.

Alarm panels over MQTT (their own timing, or a load test at a target rate), monitoring probes over
HTTP against a Fleet URL, and a smart-meter head-end answering the commands Fleet sends to meters.
Each part runs as an asyncio task (the load-test publisher in a thread: it is a tight loop); the
progress line shows what each has sent and how many errors it met.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fleet.ingest.mqtt_link import BrokerAddress
from fleet.sim.alarm_panel import PanelFleet
from fleet.sim.flood import FloodProgress, flood, panel_messages
from fleet.sim.meter_hes import SimulatedHes
from fleet.sim.reporters import ReporterFleet

PROGRESS_SECONDS = 0.5


@dataclass
class PanelPlan:
    count: int
    base: str
    key: bytes
    hb_interval: float = 60.0
    rate: float | None = None  # load-test mode: messages/s (0 = as fast as possible)
    total: int | None = None  # load-test mode: stop after this many messages
    qos: int = 0


@dataclass
class ReporterPlan:
    count: int
    fleet_url: str
    token: str
    period: int = 60
    rate: float | None = None  # reports/s in turns, instead of each probe's period


@dataclass
class HesPlan:
    prefix: str = "hes"
    failure_rate: float = 0.0


@dataclass
class SimulationPlan:
    broker: BrokerAddress
    panels: PanelPlan | None = None
    reporters: ReporterPlan | None = None
    hes: HesPlan | None = None
    duration: float | None = None
    seed: int | None = None


@dataclass
class Progress:
    """What the simulation has done so far, for the progress line."""

    started: float = field(default_factory=time.monotonic)
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (sent, errors)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        shown = []
        for name, (sent, errors) in self.parts.items():
            shown.append(f"{name}: sent {sent:,} ({sent / elapsed:,.0f}/s), errors {errors:,}")
        return f"{elapsed:6.0f} s  " + "  |  ".join(shown) if shown else "starting …"


async def run_simulation(plan: SimulationPlan, show: Callable[[Progress], None]) -> Progress:
    if plan.panels is None and plan.reporters is None and plan.hes is None:
        raise ValueError("nothing to simulate: ask for panels, reporters or the head-end")
    progress = Progress()
    stop = asyncio.Event()
    parts: list[tuple[str, Callable[[], tuple[int, int]]]] = []
    tasks: list[asyncio.Task[object]] = []
    hes: SimulatedHes | None = None
    if plan.hes is not None:
        hes = SimulatedHes(
            plan.broker.host,
            plan.broker.port,
            plan.hes.prefix,
            failure_rate=plan.hes.failure_rate,
            seed=plan.seed,
        )
        await asyncio.to_thread(hes.start)
        stats = hes.stats
        parts.append(("meter head-end answers", lambda: (stats.answered, stats.failed)))
    try:
        if plan.panels is not None:
            tasks.append(asyncio.create_task(_panels(plan, plan.panels, stop, parts)))
        if plan.reporters is not None:
            reporters = ReporterFleet(
                plan.reporters.fleet_url,
                plan.reporters.token,
                plan.reporters.count,
                period=plan.reporters.period,
                rate=plan.reporters.rate,
                seed=plan.seed,
            )
            rstats = reporters.stats
            parts.append(("reporters", lambda: (rstats.sent, rstats.errors)))
            tasks.append(asyncio.create_task(reporters.run(plan.duration)))
        deadline = None if plan.duration is None else time.monotonic() + plan.duration
        while deadline is None or time.monotonic() < deadline:
            progress.parts = {name: read() for name, read in parts}
            show(progress)
            if tasks and all(task.done() for task in tasks):
                break
            await asyncio.sleep(PROGRESS_SECONDS)
    finally:
        stop.set()
        for task in tasks:
            if not task.done() and plan.duration is None:
                task.cancel()
        if tasks:
            await asyncio.wait(tasks)  # their errors are raised below
        if hes is not None:
            await asyncio.to_thread(hes.stop)
    progress.parts = {name: read() for name, read in parts}
    show(progress)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return progress


async def _panels(
    plan: SimulationPlan,
    panels: PanelPlan,
    stop: asyncio.Event,
    parts: list[tuple[str, Callable[[], tuple[int, int]]]],
) -> None:
    broker = plan.broker
    if panels.rate is None and panels.total is None:
        fleet = PanelFleet(
            host=broker.host,
            port=broker.port,
            base=panels.base,
            key=panels.key,
            count=panels.count,
            seed=plan.seed,
            hb_interval=panels.hb_interval,
            username=broker.username,
            password=broker.password,
        )
        stats = fleet.stats
        parts.append(("panels", lambda: (sum(stats.published.values()), stats.commands_dropped)))
        await fleet.run(plan.duration, stop_event=stop)
        return
    # Load test: a tight publishing loop, in a thread of its own; it checks `halt` as it goes.
    flooding = FloodProgress(started=time.monotonic())
    parts.append(("panels", lambda: (flooding.sent, flooding.errors)))
    halt = threading.Event()

    def publish() -> None:
        flood(
            broker.host,
            broker.port,
            panel_messages(panels.base, panels.key, panels.count, plan.seed or 0),
            total=panels.total,
            rate=panels.rate or 0.0,
            qos=panels.qos,
            duration=plan.duration,
            progress=flooding,
            halt=halt,
            username=broker.username,
            password=broker.password,
        )

    publisher = asyncio.create_task(asyncio.to_thread(publish))
    try:
        await asyncio.shield(publisher)
    finally:
        halt.set()
        await publisher
