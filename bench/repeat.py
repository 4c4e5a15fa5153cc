"""Run `bench.ingest` several times and print each mode's median and range: on a small, shared
machine one run's figures move by ±15 % or more (bench/README.md, "Noise").

    .venv/bin/python -m bench.repeat --runs 5 -- --modes ceiling,naive,fleet --db postgres --qos 0
    .venv/bin/python -m bench.repeat --runs 3 --json repeated.json      # the full bench, 3 times

Everything after `--` goes to `bench.ingest` as it is. Each run is a process of its own, one after
the other (never two at once: they would share the two cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# (column, how to read it from one mode's figures): None where a run has no such figure.
Figure = Callable[[dict[str, Any]], float | None]
FIGURES: list[tuple[str, Figure]] = [
    ("msg/s drained", lambda m: m.get("msg_per_s")),
    ("x ceiling", lambda m: m.get("vs_ceiling")),
    ("x naive", lambda m: m.get("vs_naive")),
    ("live msg/s", lambda m: (m.get("live") or {}).get("msg_per_s")),
    ("CPU µs/msg (consumer)", lambda m: (m.get("cpu_us_per_msg") or {}).get("consumer")),
    ("p99 ms, paced", lambda m: (m.get("latency") or {}).get("p99_ms")),
    ("alarm p99 ms", lambda m: (m.get("alarm_latency") or {}).get("p99_ms")),
]


def run_once(ingest_args: Sequence[str], out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.ingest", *ingest_args, "--json", str(out)]
    finished = subprocess.run(command, stdout=subprocess.DEVNULL, check=False)
    if not out.exists():
        raise SystemExit(f"bench.ingest wrote no figures (exit {finished.returncode})")
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """mode → figure → {median, min, max, runs}, over the runs that have that figure."""
    values: dict[str, dict[str, list[float]]] = {}
    for figures in runs:
        for mode in figures["modes"]:
            for name, read in FIGURES:
                value = read(mode)
                if value is not None:
                    values.setdefault(mode["mode"], {}).setdefault(name, []).append(value)
    return {
        mode: {
            name: {
                "median": statistics.median(seen),
                "min": min(seen),
                "max": max(seen),
                "runs": len(seen),
            }
            for name, seen in figures.items()
        }
        for mode, figures in values.items()
    }


def _cell(stats: dict[str, float] | None) -> str:
    if stats is None:
        return "—"
    if stats["runs"] == 1:
        return f"{stats['median']:,.1f}"
    return f"{stats['median']:,.1f} ({stats['min']:,.1f} to {stats['max']:,.1f})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.repeat", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of bench.ingest (default 3)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("ingest_args", nargs=argparse.REMAINDER, help="-- then bench.ingest's")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    ingest_args = [a for a in args.ingest_args if a != "--"]
    console = Console()
    if not console.is_terminal:  # piped into a file: do not squeeze the table into 80 columns
        console = Console(width=200)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-repeat-") as scratch:
        for index in range(args.runs):
            console.print(f"run {index + 1} of {args.runs} …")
            runs.append(run_once(ingest_args, Path(scratch) / f"run{index}.json"))
    summary = summarise(runs)
    table = Table(title=f"median (min to max) over {args.runs} runs of bench.ingest")
    table.add_column("mode")
    for name, _ in FIGURES:
        table.add_column(name, justify="right")
    for mode, figures in summary.items():
        table.add_row(mode, *(_cell(figures.get(name)) for name, _ in FIGURES))
    console.print(table)
    console.print(f"machine: {runs[0].get('machine')}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "summary": summary}, indent=2))
        console.print(f"summary written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
