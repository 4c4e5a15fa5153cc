from collections import Counter

import pytest

from fleet.ingest.partition import Partition


def test_parse() -> None:
    assert Partition.parse("") is None
    assert Partition.parse("1/3") == Partition(1, 3)
    for bad in ("3/3", "x/2", "1", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="FLEET_INGEST_PARTITION"):
            Partition.parse(bad)


def test_every_device_has_exactly_one_owner_and_all_its_topics_go_there() -> None:
    parts = [Partition(i, 3) for i in range(3)]
    owners: Counter[int] = Counter()
    for n in range(3000):
        host = f"ESG_ALARM_{n:012X}"
        topics = [f"esagtech/pb/d/{host}/{kind}" for kind in ("status", "hb", "alarm", "lw")]
        [owner] = [p.index for p in parts if p.owns(topics[0])]
        assert all(parts[owner].owns(topic) for topic in topics)
        owners[owner] += 1
    assert all(800 < count < 1200 for count in owners.values())  # a fair split
