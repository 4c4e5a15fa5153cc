"""A private Mosquitto for one benchmark run: a free 127.0.0.1 port, limits fit for the ingest.

    .venv/bin/python -m bench.broker            # run one in the foreground, print its URL

Mosquitto's per-client defaults are made for small devices, not for a backend that subscribes to
a whole fleet: at QoS 1 it sends a subscriber at most `max_inflight_messages` (20) unacknowledged
messages and queues at most `max_queued_messages` (1000) more, then *drops* what arrives for that
client ("Outgoing messages are being dropped for client …" in its log). Fleet acknowledges a QoS 1
message only after the batch holding it has committed, so with the defaults a burst larger than
about a thousand messages is lost before Fleet sees it. The configuration below is what the
benchmark uses and what bench/README.md recommends for production.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"

# Fleet's window of unacknowledged QoS 1 messages: Fleet commits in batches of up to
# FLEET_INGEST_BATCH_MAX (2000) messages and acknowledges them after the commit.
MAX_INFLIGHT = 1000
# What Mosquitto may hold for one client beyond that window (a slow or restarting ingest):
# bounded, so that a subscriber that never comes back cannot take all of the broker's memory.
MAX_QUEUED = 1_000_000

LIMITS = f"""\
max_inflight_messages {MAX_INFLIGHT}
max_queued_messages {MAX_QUEUED}
"""


class BrokerError(RuntimeError):
    """Mosquitto is missing or did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PrivateMosquitto:
    """`/usr/sbin/mosquitto -c <tmp conf>` on a free port; `stop()` (or the `with` block) ends
    it and removes its directory. Persistence is off: the benchmark never restarts it."""

    def __init__(
        self,
        binary: str = MOSQUITTO,
        *,
        max_inflight: int = MAX_INFLIGHT,
        max_queued: int = MAX_QUEUED,
        host: str = "127.0.0.1",
        extra_config: str = "",
    ) -> None:
        self.binary = binary
        self.extra_config = extra_config  # more lines for its configuration
        self.host = host
        self.port = 0
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.process: subprocess.Popen[bytes] | None = None
        self.directory: Path | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def log_path(self) -> Path | None:
        return None if self.directory is None else self.directory / "mosquitto.log"

    def config_text(self) -> str:
        return (
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            f"max_inflight_messages {self.max_inflight}\n"
            f"max_queued_messages {self.max_queued}\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + self.extra_config
        )

    def start(self, within: float = 5.0) -> PrivateMosquitto:
        if not Path(self.binary).exists():
            raise BrokerError(
                f"{self.binary} not found: install Mosquitto (apt-get install mosquitto) or "
                "point --broker at a running broker"
            )
        self.directory = Path(tempfile.mkdtemp(prefix="fleet-bench-mosquitto-"))
        self.port = free_port(self.host)
        config = self.directory / "mosquitto.conf"
        config.write_text(self.config_text())
        self.process = subprocess.Popen(
            [self.binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        log = self.log_text()
        self.stop()
        raise BrokerError(f"mosquitto did not start on {self.host}:{self.port}: {log[-500:]}")

    def log_text(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")
        return ""

    def dropped_warnings(self) -> int:
        """Lines where Mosquitto said it dropped a client's messages (should stay 0)."""
        return sum("being dropped" in line for line in self.log_text().splitlines())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main() -> None:
    with PrivateMosquitto() as broker:
        print(f"{broker.url} (pid {broker.pid}); configuration:\n{broker.config_text()}")
        print("Ctrl+C stops it", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            assert broker.process is not None
            broker.process.wait()


if __name__ == "__main__":
    main()
