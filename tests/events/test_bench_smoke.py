"""bench/event_latency.py still runs: a tiny run (the real one: `python -m bench.event_latency`)."""

from __future__ import annotations

import math

import pytest

from bench.event_latency import Options, run

pytestmark = pytest.mark.broker


async def test_event_latency_bench_smoke(mqtt_server: tuple[str, int]) -> None:
    host, port = mqtt_server
    result = await run(
        Options(
            clients=4,
            alarms=3,
            client_procs=1,
            broker=f"mqtt://{host}:{port}",
            deadline=60,
            quiet=True,
        )
    )
    assert (result.deliveries, result.missing) == (12, 0)
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms and not math.isnan(result.p99_ms)
