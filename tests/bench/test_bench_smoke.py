"""The ingest benchmark still runs end to end, every mode once, with tiny numbers: it proves the
bench works, not how fast anything is (no timing assertions)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.broker import MOSQUITTO
from bench.ingest import exit_status, main
from fleet.cli import app
from tests.conftest import PG_ADMIN_URL, service_missing

DEVICES = 20
MESSAGES = 200
NAIVE_MESSAGES = 100


@pytest.mark.broker
@pytest.mark.postgres
def test_every_mode_runs_and_accounts_for_every_message(pg_template: str, tmp_path: Path) -> None:
    if not Path(MOSQUITTO).exists():
        service_missing("the mosquitto binary (the bench starts a private broker)")
    out = tmp_path / "bench.json"
    screen = io.StringIO()
    report = main(
        [
            "--devices", str(DEVICES),
            "--messages", str(MESSAGES),
            "--naive-messages", str(NAIVE_MESSAGES),
            "--paced-seconds", "0.2",
            "--memory-devices", "300",
            "--workers", "2",
            "--pg-admin", PG_ADMIN_URL,
            "--pg-template", pg_template,
            "--timeout", "60",
            "--json", str(out),
        ],
        console=Console(file=screen, width=200),
    )  # fmt: skip

    modes = {run["mode"]: run for run in report["modes"]}
    assert set(modes) == {
        "ceiling QoS 0",
        "ceiling QoS 1",
        "naive sqlite",
        "naive postgres",
        "Fleet sqlite QoS 0",
        "Fleet sqlite QoS 1",
        "Fleet postgres QoS 0",
        "Fleet postgres QoS 1",
        "Fleet postgres QoS 1, 2 x fleet ingest",
    }
    for run in report["modes"]:
        expected = NAIVE_MESSAGES if run["kind"] == "naive" else MESSAGES
        assert run["complete"], (run["mode"], run["note"])
        assert run["processed"] == run["messages"] == expected, run["mode"]
        assert run["msg_per_s"] is not None and run["rejected"] == {}, run["mode"]
        assert run["live"]["complete"] and run["live"]["msg_per_s"] is not None, run["mode"]
        assert run["cpu"]["consumer"] >= 0 and run["peak_rss_mb"]["consumer"], run["mode"]
        if run["kind"] == "ceiling":
            continue
        assert run["rows_stored"] > 0, run["mode"]
        assert run["latency"]["complete"] and run["latency"]["samples"] > 0, run["mode"]
        if run["kind"] in ("fleet", "workers"):
            assert run["vs_ceiling"] is not None and run["vs_naive"] is not None
        if run["kind"] == "fleet":
            assert run["batches"] >= 1
            assert run["alarm_latency"]["alarms"] >= 1
            assert run["alarm_latency"]["samples"] == run["alarm_latency"]["alarms"]
    assert len(modes["Fleet postgres QoS 1, 2 x fleet ingest"]["peak_rss_mb"]["consumer"]) == 2
    memory = report["memory"]
    assert memory["known"] == 300 and memory["heap_bytes_per_device"] > 0, memory
    assert report["broker"]["private"] and report["broker"]["dropped_warnings"] == 0
    assert exit_status(report) == 0
    assert json.loads(out.read_text())["modes"] == report["modes"]
    assert "msg/s" in screen.getvalue()


@pytest.mark.broker
@pytest.mark.postgres
def test_workers_split_by_account_take_every_message_once(pg_template: str) -> None:
    """--namespaces 2 --split account: the panels under two topic bases (two accounts), each
    worker subscribed to its own; the bare subscriber takes both bases."""
    if not Path(MOSQUITTO).exists():
        service_missing("the mosquitto binary (the bench starts a private broker)")
    report = main(
        [
            "--modes", "ceiling,workers",
            "--qos", "1",
            "--db", "postgres",
            "--namespaces", "2",
            "--split", "account",
            "--workers", "2",
            "--devices", str(DEVICES),
            "--messages", str(MESSAGES),
            "--paced-seconds", "0.2",
            "--pg-admin", PG_ADMIN_URL,
            "--pg-template", pg_template,
            "--timeout", "60",
        ],
        console=Console(file=io.StringIO(), width=200),
    )  # fmt: skip
    modes = {run["mode"]: run for run in report["modes"]}
    assert set(modes) == {"ceiling QoS 1", "Fleet postgres QoS 1, 2 x fleet ingest by account"}
    for run in report["modes"]:
        assert run["complete"] and run["processed"] == MESSAGES, (run["mode"], run["note"])
        assert run["rejected"] == {} and run["live"]["complete"], run["mode"]
    assert exit_status(report) == 0


def test_bench_refuses_namespaces_where_its_figures_follow_one_account() -> None:
    with pytest.raises(SystemExit):
        main(["--namespaces", "2", "--modes", "fleet"], console=Console(file=io.StringIO()))
    with pytest.raises(SystemExit):
        main(
            ["--modes", "workers", "--split", "account", "--workers", "1,3", "--namespaces", "2"],
            console=Console(file=io.StringIO()),
        )
    with pytest.raises(SystemExit):
        main(["--alarm-every", "1"], console=Console(file=io.StringIO()))


def test_fleet_bench_ingest_passes_its_options_through() -> None:
    result = CliRunner().invoke(app, ["bench", "ingest", "--help"])
    assert result.exit_code == 0
    assert "fleet bench ingest" in result.output and "--workers" in result.output


def test_fleet_bench_outside_a_source_checkout_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in an installed Fleet: bench/ cannot be imported.
    monkeypatch.setitem(sys.modules, "bench", None)
    monkeypatch.setitem(sys.modules, "bench.ingest", None)
    result = CliRunner().invoke(app, ["bench", "ingest", "--quick"])
    assert result.exit_code == 2
    assert "source checkout" in result.output
