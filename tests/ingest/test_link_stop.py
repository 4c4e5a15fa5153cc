"""Stopping a broker link is bounded: a broker that has stopped reading (frozen, or cut off by the
network) must not hold Fleet's shutdown, which runs on the event loop."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fleet.ingest.mqtt_link import STOP_FLUSH_SECONDS, BrokerAddress, MqttLink, parse_mqtt_url
from tests.ingest.conftest import PrivateBroker

pytestmark = pytest.mark.broker


async def test_stop_returns_when_the_broker_no_longer_reads(
    private_broker: PrivateBroker, topic_base: str
) -> None:
    link = MqttLink(BrokerAddress("127.0.0.1", private_broker.port), f"{topic_base}-stop", [])
    await link.start()
    assert private_broker.process is not None
    os.kill(private_broker.process.pid, signal.SIGSTOP)
    try:
        # Far more than the socket buffers hold: paho is left with bytes it cannot write.
        for i in range(400):
            link.publish(f"{topic_base}/cmd/{i}", b"x" * 100_000, qos=1)
        began = time.monotonic()
        link.stop()
        assert time.monotonic() - began < STOP_FLUSH_SECONDS + 2
        assert not link.connected
    finally:
        os.kill(private_broker.process.pid, signal.SIGCONT)


def test_a_broker_password_never_shows() -> None:
    address = parse_mqtt_url("mqtt://fleet:s3cret-pw@broker.example:1883")
    assert address.password == "s3cret-pw"
    assert "s3cret-pw" not in repr(address)
    with pytest.raises(ValueError) as refused:
        parse_mqtt_url("http://fleet:s3cret-pw@broker.example:1883")
    assert "s3cret-pw" not in str(refused.value)
