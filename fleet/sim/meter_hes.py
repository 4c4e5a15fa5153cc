"""A simulated smart-meter head-end (HES) on a real MQTT broker, for tests, the benchmark and demos.

It subscribes to `{prefix}/+/command` and answers each command on `{prefix}/{deviceId}/response`
with SUCCESS or FAILED (a configurable failure rate, or fixed failing meters), optionally after a
delay and after an intermediate ACKNOWLEDGED. Like a real head-end it executes a commandId once:
a repeated command (a retry after a lost answer) gets the first answer again.

    python -m fleet.sim.meter_hes --broker mqtt://127.0.0.1:1883 --failure-rate 0.05
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

log = logging.getLogger(__name__)

# DLMS data-access results the simulated meters answer with.
DLMS_SUCCESS = 0
DLMS_READ_WRITE_DENIED = 3


@dataclass
class HesStats:
    received: int = 0  # command messages, repeats included
    executed: int = 0  # distinct commandIds
    repeats: int = 0
    answered: int = 0
    failed: int = 0
    per_device: Counter[str] = field(default_factory=Counter)  # executions per meter


class SimulatedHes:
    def __init__(
        self,
        host: str,
        port: int,
        prefix: str = "hes",
        *,
        failure_rate: float = 0.0,
        delay: float = 0.0,
        ack: bool = False,
        fail: frozenset[str] = frozenset(),
        silent: frozenset[str] = frozenset(),
        seed: int | None = None,
        client_id: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.prefix = prefix
        self.failure_rate = failure_rate
        self.delay = delay
        self.ack = ack
        self.fail = fail  # these meters always answer FAILED
        self.silent = silent  # these meters never answer
        self.rng = random.Random(seed)
        self.stats = HesStats()
        self.commands: list[dict[str, Any]] = []  # every command received, in order
        self._answers: dict[str, bool] = {}  # commandId → success, once executed
        self._lock = threading.Lock()
        self._due: list[tuple[float, int, str, bytes, bool]] = []
        self._order = itertools.count()
        self._wake = threading.Condition(self._lock)
        self._running = False
        self._subscribed = threading.Event()
        self._worker: threading.Thread | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"hes-sim-{uuid.uuid4().hex[:8]}",
            clean_session=True,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> SimulatedHes:
        self._running = True
        self._worker = threading.Thread(target=self._deliver, name="hes-sim", daemon=True)
        self._worker.start()
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise ConnectionError(f"HES simulator could not subscribe on {self.host}:{self.port}")
        return self

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify()
        self.client.disconnect()
        self.client.loop_stop()
        if self._worker is not None:
            self._worker.join(2)

    def __enter__(self) -> SimulatedHes:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- paho's thread -------------------------------------------------------------------------
    def _on_connect(self, client: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if getattr(reason, "is_failure", False):
            log.error("HES simulator refused by the broker: %s", reason)
            return
        client.subscribe(f"{self.prefix}/+/command", qos=1)

    def _on_subscribe(self, *_args: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _c: Any, _u: Any, message: Any) -> None:
        try:
            command = json.loads(message.payload)
            command_id = str(command["commandId"])
            device_id = str(command["deviceId"])
        except (ValueError, KeyError, TypeError):
            log.warning("HES simulator dropped a malformed command on %s", message.topic)
            return
        with self._lock:
            self.stats.received += 1
            self.commands.append(command)
            success = self._answers.get(command_id)
            if success is None:
                success = self._decide(device_id)
                self._answers[command_id] = success
                self.stats.executed += 1
                self.stats.per_device[device_id] += 1
            else:
                self.stats.repeats += 1
        if device_id in self.silent:
            return
        if self.ack:
            self._send(device_id, self._response(command, "ACKNOWLEDGED", {}), None)
        status = "SUCCESS" if success else "FAILED"
        details: dict[str, Any] = {"dlmsResultCode": DLMS_SUCCESS}
        if not success:
            details = {"dlmsResultCode": DLMS_READ_WRITE_DENIED, "error": "meter refused the write"}
        payload = self._response(command, status, details)
        if self.delay > 0:
            with self._wake:
                due = time.monotonic() + self.delay
                heapq.heappush(self._due, (due, next(self._order), device_id, payload, not success))
                self._wake.notify()
        else:
            self._send(device_id, payload, not success)

    def _decide(self, device_id: str) -> bool:
        if device_id in self.fail:
            return False
        return self.rng.random() >= self.failure_rate

    def _response(self, command: dict[str, Any], status: str, details: dict[str, Any]) -> bytes:
        return json.dumps(
            {
                "taskId": command.get("taskId"),
                "commandId": command["commandId"],
                "deviceId": command["deviceId"],
                "status": status,
                "receivedAt": datetime.now(UTC).isoformat(),
                "responsePayload": details,
            }
        ).encode()

    def _send(self, device_id: str, payload: bytes, failed: bool | None) -> None:
        """Publish an answer; `failed` is None for an acknowledgement (not a final answer)."""
        self.client.publish(f"{self.prefix}/{device_id}/response", payload, qos=1)
        if failed is not None:
            with self._lock:
                self.stats.answered += 1
                self.stats.failed += int(failed)

    def _deliver(self) -> None:
        """Publishes delayed answers when they are due (one thread for every pending answer)."""
        while True:
            with self._wake:
                while self._running and (not self._due or self._due[0][0] > time.monotonic()):
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._wake.wait(wait)
                if not self._running:
                    return
                _due, _n, device_id, payload, failed = heapq.heappop(self._due)
            self._send(device_id, payload, failed)


def main() -> None:
    parser = argparse.ArgumentParser(description="A simulated smart-meter head-end (HES).")
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    parser.add_argument("--prefix", default="hes")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--ack", action="store_true", help="send ACKNOWLEDGED first")
    args = parser.parse_args()
    from fleet.ingest.mqtt_link import parse_mqtt_url

    logging.basicConfig(level=logging.INFO)
    address = parse_mqtt_url(args.broker)
    hes = SimulatedHes(
        address.host,
        address.port,
        args.prefix,
        failure_rate=args.failure_rate,
        delay=args.delay,
        ack=args.ack,
    )
    with hes:
        log.info(
            "HES simulator on %s:%d, prefix %s; Ctrl+C stops",
            address.host,
            address.port,
            args.prefix,
        )
        try:
            while True:
                time.sleep(5)
                log.info("%s", hes.stats)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
