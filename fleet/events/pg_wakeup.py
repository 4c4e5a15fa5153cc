"""Wake-ups between Fleet processes on one PostgreSQL database: LISTEN/NOTIFY.

One dedicated asyncpg connection per process listens on a channel and also sends the
notifications (coalesced: one in flight, one pending at most). It reconnects with backoff; on every
(re)connection the hub is woken, so events committed while it was away are read at once. A lost
notification costs latency only: the hub also polls the table on a slow timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.stopping import cancel_and_wait

log = logging.getLogger(__name__)

CHANNEL = "fleet_events"
CHECK_SECONDS = 5.0  # a dead connection (no FIN) is noticed by a query this often
CONNECT_TIMEOUT = 5.0
RETRY_MIN, RETRY_MAX = 0.2, 10.0


def connect_kwargs(engine: AsyncEngine) -> dict[str, Any]:
    """The engine's own connection parameters, for asyncpg.connect (same host, user, ssl, …)."""
    args, params = engine.dialect.create_connect_args(engine.url)
    accepted = set(inspect.signature(asyncpg.connect).parameters)
    kwargs = {k: v for k, v in params.items() if k in accepted}
    if args:
        kwargs["dsn"] = args[0]
    return kwargs


class PgWakeups:
    def __init__(
        self, engine: AsyncEngine, on_wake: Callable[[], None], channel: str = CHANNEL
    ) -> None:
        self._kwargs = connect_kwargs(engine)
        self._on_wake = on_wake
        self.channel = channel
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._send = asyncio.Event()
        self._connected = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connections = 0  # how many times it (re)connected: for tests and logs
        self.received = 0

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="events-listen"),
            asyncio.create_task(self._notify_loop(), name="events-notify"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        await self._close()

    async def wait_connected(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT * 2):
            await self._connected.wait()

    def notify(self) -> None:
        """Tell the other processes to look (after a commit); never blocks."""
        self._send.set()

    @property
    def backend_pid(self) -> int | None:
        return None if self._conn is None else self._conn.get_server_pid()

    def _received(self, _conn: object, pid: int, _channel: str, _payload: object) -> None:
        self.received += 1
        if self._conn is None or pid != self._conn.get_server_pid():
            self._on_wake()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _listen(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                conn = await asyncpg.connect(timeout=CONNECT_TIMEOUT, **self._kwargs)
                self._conn = conn
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(self.channel, self._received)
                self.connections += 1
                self._connected.set()
                if self.connections > 1:
                    log.info("event wake-ups: listening again on %s", self.channel)
                delay = RETRY_MIN
                self._on_wake()  # whatever was committed while nobody listened
                while True:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(CHECK_SECONDS):
                            await lost.wait()
                    if lost.is_set() or conn.is_closed():
                        raise ConnectionError("closed by the server")
                    async with self._lock, asyncio.timeout(CONNECT_TIMEOUT):
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # refused, reset, timed out, server restarting
                log.warning(
                    "event wake-ups: PostgreSQL connection lost (%s); retrying in %.1f s",
                    exc or type(exc).__name__,
                    delay,
                )
            await self._close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def _notify_loop(self) -> None:
        while True:
            await self._send.wait()
            self._send.clear()
            conn = self._conn
            if conn is None or conn.is_closed():
                continue  # the others find the events by their poll; the hub woke itself
            try:
                async with self._lock, asyncio.timeout(CONNECT_TIMEOUT):
                    await conn.execute("SELECT pg_notify($1, '')", self.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("event wake-ups: NOTIFY not sent (%s)", exc)
