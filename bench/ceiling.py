"""The ceiling: a bare paho subscriber, in a process of its own, that only receives and counts.

Whatever a consumer does with a message, it cannot receive faster than this from the same broker,
on the same machine, with the same publisher competing for the same cores. At QoS 0 it uses a
clean session; at QoS 1 a persistent one and paho's automatic acknowledgement (sent as soon as
the callback returns). Run through `python -m bench.ingest`, which compares Fleet with it.
"""

from __future__ import annotations

import resource
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import ConsumerProcess, child_loop
from fleet.ingest.mqtt_link import BrokerAddress


def _ceiling_main(
    conn: Connection,
    progress: Any,
    *,
    address: BrokerAddress,
    client_id: str,
    topic: str,
    qos: int,
) -> None:
    subscribed = threading.Event()
    times = {"first": 0.0, "last": 0.0}
    count = 0

    def on_message(_c: object, _u: object, _msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        now = time.time()
        if not count:
            times["first"] = now
        times["last"] = now
        count += 1
        progress.value = count

    def on_connect(client: mqtt.Client, *_args: object) -> None:
        client.subscribe([(each, qos) for each in topic.split(",")])  # one or several filters

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=qos == 0)
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        client.connect(address.host, address.port, keepalive=60)
    except OSError as exc:
        conn.send(("error", f"cannot reach {address.host}:{address.port}: {exc}"))
        return
    client.loop_start()
    if not subscribed.wait(10):
        conn.send(("error", "the subscription was not acknowledged"))
        return
    conn.send(("ready", None))
    reported = 0

    def handle(command: str, _argument: Any) -> dict[str, Any]:
        nonlocal reported
        answer: dict[str, Any] = {
            "count": count - reported,
            "first": times["first"],
            "last": times["last"] if count > reported else None,
            "commits": [],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        reported = count
        if command == "stop":
            client.disconnect()
            client.loop_stop()
        return answer

    child_loop(conn, handle)


def start_ceiling(address: BrokerAddress, client_id: str, topic: str, qos: int) -> ConsumerProcess:
    return ConsumerProcess(
        _ceiling_main,
        f"ceiling-qos{qos}",
        address=address,
        client_id=client_id,
        topic=topic,
        qos=qos,
    )
