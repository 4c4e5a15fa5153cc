"""Simulated monitoring probes (collectr reporters) against a Fleet's HTTP report endpoint.

Each probe reports `GET /report/ongoing?device_id=…&connection=…&period=…` every `period` seconds
(its first report at a random offset, so a fleet spreads over the period), and every fourth
report is a `POST` with a form field `report` (a MonitorReport), as the deployed reporters send.
With `rate` set the probes instead take turns at that many reports a second (a load test).
Requests go out over one HTTP client with at most `concurrency` in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

CONNECTIONS = ("office-wifi", "lab-ethernet", "warehouse-wifi", "guest-wifi")
FORM_EVERY = 4  # one report in this many carries a MonitorReport form
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass
class ReporterStats:
    sent: int = 0
    errors: int = 0
    last_error: str = ""
    started: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.sent / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    connection: str
    ssid: bool  # a Wi-Fi probe reports its SSID, an Ethernet one its MAC


def make_probes(count: int, seed: int | None = None) -> list[Probe]:
    rng = random.Random(seed)
    probes = []
    for index in range(count):
        connection = rng.choice(CONNECTIONS)
        probes.append(Probe(f"sim-probe-{index:05d}", connection, "wifi" in connection))
    return probes


def monitor_report(probe: Probe, rng: random.Random) -> str:
    used = {"SSID": probe.connection} if probe.ssid else {"Ethernet": "02:00:00:00:00:01"}
    return json.dumps(
        {
            "connection_used": used,
            "connections": [
                {"connection": used, "stats": {"power_dbs": rng.randint(-85, -40)}},
            ],
        }
    )


class ReporterFleet:
    def __init__(
        self,
        fleet_url: str,
        token: str,
        count: int,
        *,
        period: int = 60,
        rate: float | None = None,
        concurrency: int = 32,
        seed: int | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("at least one reporter")
        if period < 1:
            raise ValueError("the report period is at least 1 s")
        self.base_url = fleet_url.rstrip("/")
        self.token = token
        self.probes = make_probes(count, seed)
        self.period = period
        self.rate = rate
        self.rng = random.Random(seed)
        self.stats = ReporterStats()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()

    async def run(self, duration: float | None = None) -> ReporterStats:
        """Report until `duration` seconds have passed (or until cancelled)."""
        self.stats.started = time.monotonic()
        deadline = None if duration is None else self.stats.started + duration
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS
        ) as client:
            try:
                if self.rate:
                    await self._paced(client, self.rate, deadline)
                else:
                    await self._periodic(client, deadline)
            finally:
                if self._in_flight:
                    await asyncio.wait(self._in_flight, timeout=REQUEST_TIMEOUT_SECONDS)
        return self.stats

    async def _periodic(self, client: httpx.AsyncClient, deadline: float | None) -> None:
        start = time.monotonic()
        due = [(start + self.rng.uniform(0, self.period), i) for i in range(len(self.probes))]
        heapq.heapify(due)
        while due:
            when, index = heapq.heappop(due)
            if deadline is not None and when >= deadline:
                return
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            await self._send(client, self.probes[index])
            heapq.heappush(due, (when + self.period, index))

    async def _paced(self, client: httpx.AsyncClient, rate: float, deadline: float | None) -> None:
        start = time.monotonic()
        count = 0
        while deadline is None or time.monotonic() < deadline:
            ahead = start + count / rate - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
            await self._send(client, self.probes[count % len(self.probes)])
            count += 1

    async def _send(self, client: httpx.AsyncClient, probe: Probe) -> None:
        await self._slots.acquire()  # at most `concurrency` requests in flight
        task = asyncio.create_task(self._report(client, probe))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _report(self, client: httpx.AsyncClient, probe: Probe) -> None:
        params: dict[str, str | int] = {
            "device_id": probe.name,
            "connection": probe.connection,
            "period": self.period,
        }
        try:
            if self.rng.randrange(FORM_EVERY) == 0:
                form: dict[str, Any] = {"report": monitor_report(probe, self.rng)}
                response = await client.post("/report/ongoing", params=params, data=form)
            else:
                response = await client.get("/report/ongoing", params=params)
            if response.status_code == 200:
                self.stats.sent += 1
            else:
                self._error(f"HTTP {response.status_code}: {response.text[:200]}")
        except httpx.HTTPError as exc:
            self._error(f"{type(exc).__name__}: {exc}")
        finally:
            self._slots.release()

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = message
