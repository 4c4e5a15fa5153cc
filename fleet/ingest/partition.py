"""Splitting the ingest between Fleet processes so that each device stays on one process.

A device's messages must be applied in order by one process (the CDC rule and anti-replay compare
with its previous message). Mosquitto's shared subscriptions hand messages out round-robin, which
breaks that; EMQX's `hash_topic`/`hash_clientid` strategies keep it. Partitions work on any broker:
every worker subscribes to everything and keeps only the devices whose hash falls in its share,
acknowledging the rest at once. Receiving is cheap next to decoding and storing, so N workers
still divide the expensive part by N, but each still reads every message: on 2 cores that gained
nothing measurable. With several accounts, workers split by account instead (each subscribed to
its accounts' topic bases, FLEET_ALARM_TOPIC_FILTER) receive only their own messages.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Partition:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Partition | None:
        """'1/3' → the second of three partitions; '' → None (this process takes everything)."""
        text = text.strip()
        if not text:
            return None
        index, sep, count = text.partition("/")
        if not sep or not index.isdigit() or not count.isdigit():
            raise ValueError(
                f"FLEET_INGEST_PARTITION must look like 'k/N' (e.g. 0/2), got {text!r}"
            )
        partition = cls(int(index), int(count))
        if partition.count < 1 or not 0 <= partition.index < partition.count:
            raise ValueError(f"FLEET_INGEST_PARTITION {text!r}: need 0 <= k < N")
        return partition

    def owns(self, topic: str) -> bool:
        return zlib.crc32(device_of(topic).encode()) % self.count == self.index


def device_of(topic: str) -> str:
    """The topic without its last level: it names the device on every family Fleet speaks
    ({base}/pb/d/{hostname}, hes/{meter}, application/{app}/device/{eui}/event), so all of a
    device's topics give the same value."""
    return topic.rpartition("/")[0]
