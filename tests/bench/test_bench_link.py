"""bench.link, reduced: both receive paths drain every queued message (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.broker import MOSQUITTO
from bench.link import run
from tests.conftest import service_missing


@pytest.mark.parametrize("qos", [0, 1])
def test_both_paths_take_every_queued_message(qos: int) -> None:
    if not Path(MOSQUITTO).exists():
        service_missing("the mosquitto binary")
    summary = run(messages=3000, qos=qos, runs=1)
    assert set(summary) == {"Fleet's link", "paho's path"}  # a path that lost one has no figures
    for figures in summary.values():
        assert figures["runs"] == 1 and figures["msg_per_s"] > 0 and figures["cpu_us_per_msg"] > 0
