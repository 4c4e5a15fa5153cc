"""The MQTT link's receive path alone: drain a backlog of queued messages and acknowledge them.

    .venv/bin/python -m bench.link                      # 50,000 QoS 1 messages, 3 runs each way
    .venv/bin/python -m bench.link --messages 20000 --qos 0 --runs 5

A private Mosquitto (bench/broker.py) holds `--messages` messages for a persistent session; an
`MqttLink` then connects, drains them in bursts and acknowledges each burst as the ingest does
after a commit. Measured twice, alternately: as Fleet runs it, and with the client's own parsing
and batched acknowledgements turned off (paho's path: an `MQTTMessage` per message, one PUBACK
write per message), the baseline it replaced. Prints messages/s and CPU µs per message of this
process (the link and its loop only; no database, no decoding).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.broker import PrivateMosquitto
from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage, MqttLink, parse_mqtt_url

PAYLOAD_BYTES = 90  # about an alarm panel's framed heartbeat
CLIENT_ID = "bench-link"


def _use_paho_path(link: MqttLink) -> None:
    """The baseline: paho parses every PUBLISH and each acknowledgement is its own write."""
    client = link._client
    client.on_publish_received = None

    def ack_each(mids: Sequence[int]) -> None:
        for mid in mids:
            client.ack(mid, 1)

    client.ack_many = ack_each  # type: ignore[method-assign]


async def _drain(
    address: BrokerAddress, qos: int, count: int, paho_path: bool
) -> tuple[float, float]:
    """Seconds and CPU seconds to take `count` messages (0, 0 if they did not all come)."""
    link = MqttLink(address, CLIENT_ID, [("bench/#", qos)])
    if paho_path:
        _use_paho_path(link)
    # Timed from the connection: the queued messages come as soon as it is up (ahead of the
    # SUBACK that start() waits for), so start() already reads many of them.
    started, cpu = time.perf_counter(), time.process_time()
    await link.start()
    got = 0
    deadline = started + 60
    try:
        while got < count and time.perf_counter() < deadline:
            await link.wait_for_messages(1.0)
            burst: list[InboundMessage] = link.drain(2000)
            got += len(burst)
            link.ack(burst)
        if got < count:
            return 0.0, 0.0
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        link.stop()


def _fill(address: BrokerAddress, qos: int, count: int) -> None:
    """Queue `count` messages for the link's persistent session (created first)."""

    async def subscribe_once() -> None:
        link = MqttLink(address, CLIENT_ID, [("bench/#", qos)])
        await link.start()
        link.stop()

    asyncio.run(subscribe_once())
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{CLIENT_ID}-pub")
    publisher.max_inflight_messages_set(0)
    publisher.connect(address.host, address.port)
    publisher.loop_start()
    payload = os.urandom(PAYLOAD_BYTES)
    info = None
    for index in range(count):
        info = publisher.publish(f"bench/p{index % 10_000}/hb", payload, qos)
    if info is not None:
        info.wait_for_publish(120)
    time.sleep(0.2)  # QoS 0: the broker has queued what was written
    publisher.loop_stop()
    publisher.disconnect()


def run(messages: int, qos: int, runs: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[tuple[float, float]]] = {"Fleet's link": [], "paho's path": []}
    # Mosquitto queues QoS 0 messages for an offline session only when told to.
    with PrivateMosquitto(extra_config="queue_qos0_messages true\n") as broker:
        address = parse_mqtt_url(broker.url)
        for _ in range(runs):
            for name in results:
                _fill(address, qos, messages)
                seconds, cpu = asyncio.run(_drain(address, qos, messages, name == "paho's path"))
                if seconds:
                    results[name].append((seconds, cpu))
    summary: dict[str, dict[str, float]] = {}
    for name, measured in results.items():
        if measured:
            summary[name] = {
                "msg_per_s": statistics.median(messages / s for s, _ in measured),
                "cpu_us_per_msg": statistics.median(1e6 * c / messages for _, c in measured),
                "runs": len(measured),
            }
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    summary = run(args.messages, args.qos, args.runs)
    print(f"{args.messages:,} queued messages at QoS {args.qos}, median of {args.runs} runs:")
    for name, figures in summary.items():
        print(
            f"  {name:14s} {figures['msg_per_s']:>10,.0f} msg/s  "
            f"{figures['cpu_us_per_msg']:5.1f} µs CPU per message"
        )
    if len(summary) == 2:
        fleet, paho = summary["Fleet's link"], summary["paho's path"]
        print(f"  CPU per message: {paho['cpu_us_per_msg'] / fleet['cpu_us_per_msg']:.1f}x less")


if __name__ == "__main__":
    main()
