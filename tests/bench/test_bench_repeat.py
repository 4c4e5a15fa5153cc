"""bench.repeat: each mode's median and range over several runs of bench.ingest."""

from __future__ import annotations

from typing import Any

from bench.repeat import _cell, summarise


def _run(drained: float, alarm: float | None) -> dict[str, Any]:
    fleet: dict[str, Any] = {"mode": "Fleet postgres QoS 0", "msg_per_s": drained}
    if alarm is not None:
        fleet["alarm_latency"] = {"p99_ms": alarm}
    return {"modes": [{"mode": "ceiling QoS 0", "msg_per_s": 60_000.0}, fleet]}


def test_median_and_range_per_mode_over_the_runs_that_have_the_figure() -> None:
    summary = summarise([_run(22_000, 40.0), _run(26_000, None), _run(24_000, 60.0)])
    drained = summary["Fleet postgres QoS 0"]["msg/s drained"]
    assert drained == {"median": 24_000, "min": 22_000, "max": 26_000, "runs": 3}
    assert summary["Fleet postgres QoS 0"]["alarm p99 ms"]["median"] == 50.0
    assert summary["Fleet postgres QoS 0"]["alarm p99 ms"]["runs"] == 2
    assert "x naive" not in summary["ceiling QoS 0"]
    assert _cell(drained) == "24,000.0 (22,000.0 to 26,000.0)"
    assert _cell(None) == "—"
