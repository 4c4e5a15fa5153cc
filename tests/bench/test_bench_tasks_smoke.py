"""The bulk-task benchmark still runs end to end: a tiny task, no timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.tasks import main

pytestmark = pytest.mark.broker


def test_bench_tasks_completes_a_small_task(mqtt_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = mqtt_server
    out = tmp_path / "tasks.json"
    figures = main(
        [
            "--db", "sqlite",
            "--devices", "30",
            "--rate", "1000",
            "--failure-rate", "0.1",
            "--broker", f"mqtt://{host}:{port}",
            "--json", str(out),
        ]
    )  # fmt: skip
    [run] = figures
    assert run["status"] in ("COMPLETED", "FAILED")
    assert run["succeeded"] + run["failed"] == 30
    assert run["commands_received"] == 30 and run["repeats"] == 0
    assert json.loads(out.read_text()) == figures
