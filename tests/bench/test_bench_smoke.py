"""The ingest benchmark still runs end to end: tiny numbers, no timing assertions."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from bench.ingest import main
from tests.conftest import PG_ADMIN_URL

pytestmark = [pytest.mark.broker, pytest.mark.postgres]


def test_bench_accounts_for_every_message(
    mqtt_server: tuple[str, int], pg_template: str, tmp_path: Path
) -> None:
    host, port = mqtt_server
    out = tmp_path / "bench.json"
    screen = io.StringIO()
    report = main(
        [
            "--messages", "200",
            "--panels", "20",
            "--db", "both",
            "--qos", "1",
            "--broker", f"mqtt://{host}:{port}",
            "--pg-admin", PG_ADMIN_URL,
            "--pg-template", pg_template,
            "--timeout", "60",
            "--json", str(out),
        ],
        console=Console(file=screen, width=200),
    )  # fmt: skip

    runs = report["runs"]
    assert [(run["database"], run["qos"]) for run in runs] == [("sqlite", 1), ("postgres", 1)]
    for run in runs:
        assert run["complete"], run["note"]
        assert run["published"] == run["received"] == run["accepted"] == 200
        assert run["rejected"] == {}
        assert run["batches"] >= 1
        assert 0 < run["rows_stored"] <= 200
        assert run["p50_ms"] is not None and run["p99_ms"] is not None
    assert json.loads(out.read_text())["runs"] == runs
    assert "msg/s" in screen.getvalue()
