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


def test_the_panels_topic_filter_takes_a_list_and_refuses_what_is_no_filter() -> None:
    from pydantic import ValidationError

    from fleet.config import Settings

    settings = Settings(alarm_topic_filter=" acme/pb/d/+/+ , globex/pb/d/+/+")
    assert settings.alarm_topic_filters == ["acme/pb/d/+/+", "globex/pb/d/+/+"]
    assert Settings().alarm_topic_filters == ["+/pb/d/+/+"]
    assert Settings(alarm_topic_filter="$share/fleet/+/pb/d/#").alarm_topic_filters == [
        "$share/fleet/+/pb/d/#"
    ]
    for bad, reason in (
        ("acme/pb/d/+/+,", "is empty"),
        ("acme*/pb/d/+/+", None),
        ("acme+/pb/d/+/+", "wildcard inside"),
        ("acme/#/d", "'#' before its last level"),
        ("acme/pb d/+/+", "whitespace"),
    ):
        if reason is None:  # an ordinary character in MQTT: accepted
            Settings(alarm_topic_filter=bad)
            continue
        with pytest.raises(ValidationError, match=reason):
            Settings(alarm_topic_filter=bad)


def test_an_ingest_worker_says_what_it_takes() -> None:
    from fleet.cli import ingest_banner
    from fleet.config import Settings
    from fleet.runtime import FleetRuntime

    runtime = FleetRuntime(
        Settings(
            database_url="sqlite:///:memory:",
            mqtt_url="mqtt://127.0.0.1:1883",
            alarm_topic_filter="acme/pb/d/+/+,globex/pb/d/+/+",
            ingest_partition="1/2",
        ),
        ingest=True,
    )
    banner = ingest_banner(runtime)
    assert banner.startswith("ingesting from 127.0.0.1:1883 (acme/pb/d/+/+, globex/pb/d/+/+, ")
    assert banner.endswith(", partition 1/2)")
