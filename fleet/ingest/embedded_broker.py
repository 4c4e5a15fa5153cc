"""The embedded MQTT broker (amqtt) for one box and small fleets, run in a child process.

amqtt carries a few thousand messages/s; sharing Fleet's event loop with a busy publisher it timed
out on PUBACKs, so it gets a process (and an event loop) of its own. Past a few hundred devices, or
when several Fleet processes share the load, point FLEET_MQTT_URL at Mosquitto or EMQX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

STARTUP_TIMEOUT_SECONDS = 15.0
READY_LINE = "fleet-embedded-broker-ready"


def broker_config(host: str, port: int) -> dict[str, object]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


async def _serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(broker_config(host, port))
    await broker.start()
    # Tell the parent we listen (a bare TCP probe would make amqtt log a bogus client error).
    print(READY_LINE, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await broker.shutdown()


def port_is_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


class EmbeddedBroker:
    """Starts the broker process, waits until it accepts connections, stops it on close()."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fleet.ingest.embedded_broker", self.host, str(self.port)],
            stdout=subprocess.PIPE,
        )
        assert self._process.stdout is not None
        ready = threading.Event()

        def wait_ready(stream: IO[bytes]) -> None:
            for line in stream:
                if line.strip() == READY_LINE.encode():
                    ready.set()

        threading.Thread(target=wait_ready, args=(self._process.stdout,), daemon=True).start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not ready.wait(0.05):
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"embedded MQTT broker exited with {self._process.returncode} "
                    f"(is {self.host}:{self.port} already taken?)"
                )
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"embedded MQTT broker did not open {self.host}:{self.port}")

    def close(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_serve(sys.argv[1], int(sys.argv[2])))
