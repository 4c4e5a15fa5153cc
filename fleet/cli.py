"""The `fleet` command: thin over the same services the API uses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from fleet.config import Settings, split_host_port

if TYPE_CHECKING:  # the runtime imports the whole service: only when a command needs it
    from fleet.runtime import FleetRuntime

app = typer.Typer(help="Fleet: the backend for fleets of IoT devices.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts and their keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(accounts_app, name="accounts")
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's message names the bad variable
        console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return settings


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (serve and demo do this by themselves)."""
    from fleet.store.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    console.print("[green]database is up to date[/green]")


async def _with_conn(settings: Settings, work):  # type: ignore[no-untyped-def]
    from fleet.store.engine import create_engine
    from fleet.store.migrate import upgrade

    await asyncio.to_thread(upgrade, settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


@accounts_app.command("create")
def accounts_create(
    name: str,
    alarm_topic_base: Annotated[
        str | None,
        typer.Option(help="Topic base of this account's alarm panels (e.g. esagtech)."),
    ] = None,
) -> None:
    """Create an account and print its API key (shown once: only its hash is kept)."""
    from fleet.store import accounts

    settings = _settings()

    async def work(conn):  # type: ignore[no-untyped-def]
        account_id = await accounts.create_account(conn, name)
        if alarm_topic_base:
            await accounts.add_namespace(conn, account_id, "alarm_panel", alarm_topic_base)
        return await accounts.issue_key(conn, account_id)

    try:
        key = asyncio.run(_with_conn(settings, work))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"created account [bold]{name}[/bold]; its API key (store it now):")
    print(key)


def _issue(name: str, kind: str) -> None:
    from fleet.store import accounts

    settings = _settings()

    async def work(conn):  # type: ignore[no-untyped-def]
        account_id = await accounts.account_id_by_name(conn, name)
        if account_id is None:
            raise ValueError(f"no account named {name!r} (see 'fleet accounts list')")
        return await accounts.issue_key(conn, account_id, kind)

    try:
        key = asyncio.run(_with_conn(settings, work))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    print(key)


@accounts_app.command("key")
def accounts_key(name: str) -> None:
    """Issue another API key for an account."""
    _issue(name, "api")


@accounts_app.command("ingest-token")
def accounts_ingest_token(name: str) -> None:
    """Issue an ingest token: it lets devices report for the account and opens nothing else."""
    _issue(name, "ingest")


@accounts_app.command("list")
def accounts_list() -> None:
    """List accounts."""
    from rich.table import Table

    from fleet.store import accounts

    rows = asyncio.run(_with_conn(_settings(), accounts.list_accounts))
    if not rows:
        console.print("no accounts yet: create one with 'fleet accounts create NAME'")
        return
    table = Table("id", "name", "created")
    for row in rows:
        table.add_row(str(row["id"]), str(row["name"]), str(row["created_at"]))
    Console().print(table)


@app.command()
def serve(
    no_ingest: Annotated[bool, typer.Option("--no-ingest", help="Run the HTTP API only.")] = False,
) -> None:
    """Run the HTTP API, the MQTT ingest and the background jobs."""
    import uvicorn

    from fleet.app import create_app

    settings = _settings()
    host, port = split_host_port(settings.http_listen)
    uvicorn.run(
        create_app(settings, ingest=not no_ingest),
        host=host,
        port=port,
        log_level="info",
        # Open event streams (a dashboard tab) never end by themselves: without a bound, Ctrl+C
        # would wait for every browser to close.
        timeout_graceful_shutdown=3,
    )


@app.command()
def ingest() -> None:
    """Run an ingest-only worker. Several split the load: by device hash
    (FLEET_INGEST_PARTITION=k/N), by account (FLEET_ALARM_TOPIC_FILTER with each worker's
    topic bases), or through an EMQX shared subscription (README, "Past one machine")."""
    from fleet.runtime import FleetRuntime

    settings = _settings()

    async def run() -> None:
        runtime = FleetRuntime(settings, ingest=True)
        await runtime.start()
        console.print(f"{ingest_banner(runtime)}; Ctrl+C stops")
        try:
            await asyncio.Event().wait()
        finally:
            await runtime.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def ingest_banner(runtime: FleetRuntime) -> str:
    """What an ingest worker takes, so that an operator splitting the load can check each one."""
    topics = ", ".join(topic for topic, _ in runtime.link.subscriptions)
    partition = runtime.settings.ingest_partition
    share = f", partition {partition}" if partition else ""
    return f"ingesting from {runtime.broker.host}:{runtime.broker.port} ({topics}{share})"


def free_port(host: str, preferred: int) -> int:
    """`preferred` if nothing listens there, else a free port the OS picks."""
    with socket.socket() as probe:
        try:
            probe.bind((host, preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@app.command()
def demo(
    panels: Annotated[int, typer.Option(help="How many simulated alarm panels.")] = 36,
    hb_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 5.0,
) -> None:
    """Fleet with its embedded broker and database, and simulated alarm panels reporting."""
    from fleet.demo import run_demo

    settings = _settings()
    asyncio.run(run_demo(settings, panels=panels, hb_interval=hb_interval, pick_port=free_port))


@app.command()
def simulate(
    panels: Annotated[int, typer.Option(help="How many simulated alarm panels (0: none).")] = 100,
    broker: Annotated[str, typer.Option(help="mqtt://host:port of the broker.")] = (
        "mqtt://127.0.0.1:1883"
    ),
    base: Annotated[
        str | None,
        typer.Option(
            help="Topic base (default FLEET_ALARM_TOPIC_BASE); several, comma-separated, "
            "spread the panels over them (an account each)."
        ),
    ] = None,
    hb_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 60.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed for repeatable fleets.")] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Load-test mode: publish this many panel messages/s (0 = as fast as possible) "
            "instead of the panels' own timing."
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option(help="Load-test mode: stop after this many messages.")
    ] = None,
    qos: Annotated[int, typer.Option(help="QoS of the load-test messages.")] = 0,
    reporters: Annotated[
        int, typer.Option(help="How many monitoring probes report over HTTP (needs --fleet-url).")
    ] = 0,
    fleet_url: Annotated[
        str, typer.Option(help="Fleet's base URL, for the probes' /report calls.")
    ] = "http://127.0.0.1:8000",
    ingest_token: Annotated[
        str | None,
        typer.Option(
            envvar="FLEET_INGEST_TOKEN",
            help="The account's ingest token (`fleet accounts ingest-token NAME`), for probes.",
        ),
    ] = None,
    report_period: Annotated[int, typer.Option(help="Seconds between a probe's reports.")] = 60,
    report_rate: Annotated[
        float | None,
        typer.Option(help="Load-test mode for probes: this many reports/s, taking turns."),
    ] = None,
    meters: Annotated[
        bool,
        typer.Option(
            "--meters/--no-meters",
            help="Run a simulated meter head-end that answers the commands Fleet sends to meters.",
        ),
    ] = False,
    hes_failure_rate: Annotated[
        float, typer.Option(help="Share of meter commands the head-end answers FAILED.")
    ] = 0.0,
) -> None:
    """Simulated devices of every kind Fleet speaks: alarm panels (MQTT, keyed with
    FLEET_ALARM_HMAC_KEY), monitoring probes (HTTP) and a smart-meter head-end (MQTT)."""
    from rich.live import Live

    from fleet.ingest.mqtt_link import parse_mqtt_url
    from fleet.sim.alarm_panel import topic_bases
    from fleet.sim.session import (
        HesPlan,
        PanelPlan,
        Progress,
        ReporterPlan,
        SimulationPlan,
        run_simulation,
    )

    settings = _settings()
    address = parse_mqtt_url(broker)
    try:
        topic_bases(base or settings.alarm_topic_base)
    except ValueError as exc:
        console.print(f"[red]error:[/red] --base: {exc}")
        raise typer.Exit(2) from None
    plan = SimulationPlan(broker=address, duration=duration, seed=seed)
    if panels:
        plan.panels = PanelPlan(
            panels,
            base or settings.alarm_topic_base,
            settings.hmac_key,
            hb_interval=hb_interval,
            rate=rate,
            total=count,
            qos=qos,
        )
    if reporters:
        if not ingest_token:
            console.print(
                "[red]error:[/red] probes need the account's ingest token: --ingest-token or "
                "FLEET_INGEST_TOKEN (`fleet accounts ingest-token NAME` prints one)"
            )
            raise typer.Exit(2)
        plan.reporters = ReporterPlan(
            reporters, fleet_url, ingest_token, period=report_period, rate=report_rate
        )
    if meters:
        plan.hes = HesPlan(settings.hes_topic_prefix, hes_failure_rate)
    if plan.panels is None and plan.reporters is None and plan.hes is None:
        console.print("[red]error:[/red] nothing to simulate: --panels, --reporters or --meters")
        raise typer.Exit(2)
    kinds = [
        f"{panels} panels → {address.host}:{address.port}"
        + (f" at {rate:g}/s" if rate else " as fast as possible" if rate == 0 else ""),
        f"{reporters} probes → {fleet_url}" if reporters else "",
        f"meter head-end on {settings.hes_topic_prefix}/+/command" if meters else "",
    ]
    console.print("; ".join(k for k in kinds if k and not k.startswith("0 ")))
    if duration is None and count is None:
        console.print("runs until Ctrl+C (--duration or --count bound it)")
    with Live(console=console, refresh_per_second=4) as live:

        def show(progress: Progress) -> None:
            live.update(progress.line())

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_simulation(plan, show))


bench_app = typer.Typer(
    help="Benchmarks (from a source checkout: bench/ is not part of the installed package).",
    no_args_is_help=True,
)
app.add_typer(bench_app, name="bench")


def _bench_module(name: str) -> ModuleType:
    """Import bench/<name>.py from the checkout this Fleet runs from, or say why not."""
    import importlib
    import sys
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "bench" / "__init__.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", f"bench.{name}"):
            raise
        console.print(
            "[red]error:[/red] `fleet bench` runs from a source checkout of Fleet: the bench/ "
            "directory is not part of the installed package. Clone the repository, install it "
            "with `pip install -e .` and run `fleet bench` (or `python -m bench.ingest`) there."
        )
        raise typer.Exit(2) from exc


@bench_app.command(
    "ingest",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench_ingest(ctx: typer.Context) -> None:
    """Ingest throughput and latency beside a bare subscriber and the naive per-message design
    (the options of `python -m bench.ingest`; --help lists them)."""
    module = _bench_module("ingest")
    raise typer.Exit(module.cli(ctx.args, prog="fleet bench ingest"))


def main() -> None:
    app()
