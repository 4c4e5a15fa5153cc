"""The reporters benchmark still runs end to end: tiny numbers, no timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

from bench.reporters import main


def test_bench_reporters_runs(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    lines: list[str] = []
    (figures,) = main(
        [
            "--devices", "40",
            "--loaders", "1",
            "--concurrency", "8",
            "--fire-window", "0.5",
            "--all-window", "0.5",
            "--arm-delay", "0.3",
            "--json", str(out),
        ],
        log=lines.append,
    )  # fmt: skip
    assert figures.errors == 0
    assert figures.register_rps > 0 and figures.steady_rps > 0
    assert figures.few_fired + figures.all_fired == 40  # every armed timer fired
    assert figures.bytes_per_device > 0
    assert json.loads(out.read_text())[0]["devices"] == 40
