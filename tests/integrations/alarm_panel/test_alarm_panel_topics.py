import pytest

from fleet.integrations.alarm_panel.topics import (
    SUBSCRIPTION,
    PanelTopic,
    TopicError,
    command_topic,
    device_topic,
    hostname_from_mac,
    mac_from_hostname,
    parse_topic,
)

HOST = "ESG_ALARM_0483080CEDD8"


@pytest.mark.parametrize("kind", ["status", "login", "hb", "alarm", "response", "lw", "cmd"])
def test_parse_every_kind(kind: str) -> None:
    assert parse_topic(f"esagtech/pb/d/{HOST}/{kind}") == PanelTopic("esagtech", HOST, kind)


def test_resp_from_older_firmware_is_normalised() -> None:
    assert parse_topic(f"esagtech/pb/d/{HOST}/resp").kind == "response"


@pytest.mark.parametrize(
    "topic",
    [
        f"pb/d/{HOST}/status",  # no base
        f"a/b/pb/d/{HOST}/status",  # multi-level base: SUBSCRIPTION never delivers it
        f"esagtech/pb/c/{HOST}/cmd",
        f"esagtech/pb/d/{HOST}",
        f"esagtech/pb/d/{HOST}/status/extra",
        f"/pb/d/{HOST}/status",
        f"esagtech/pb/d/{HOST}/",
        f"+/pb/d/{HOST}/status",
        "",
    ],
)
def test_bad_shape(topic: str) -> None:
    with pytest.raises(TopicError) as err:
        parse_topic(topic)
    assert err.value.reason == "bad_shape"


def test_unknown_kind() -> None:
    with pytest.raises(TopicError) as err:
        parse_topic(f"esagtech/pb/d/{HOST}/telemetry")
    assert err.value.reason == "unknown_kind"


@pytest.mark.parametrize(
    "hostname",
    [
        "ESG_ALARM_0483080cedd8",  # lower-case hex
        "ESG_ALARM_0483080CEDD",  # 11 digits
        "ESG_ALARM_0483080CEDD8A",  # 13 digits
        "ESG_ALARM_0483080CEDDG",  # not hex
        "ESP32-001",
    ],
)
def test_bad_hostname(hostname: str) -> None:
    with pytest.raises(TopicError) as err:
        parse_topic(f"esagtech/pb/d/{hostname}/status")
    assert err.value.reason == "bad_hostname"


def test_mac_from_hostname() -> None:
    assert mac_from_hostname(HOST) == "04:83:08:0C:ED:D8"
    with pytest.raises(TopicError):
        mac_from_hostname("ESG_ALARM_xyz")


def test_hostname_from_mac_inverts_it() -> None:
    assert hostname_from_mac(bytes.fromhex("0483080cedd8")) == HOST
    with pytest.raises(ValueError):
        hostname_from_mac(b"\x01\x02")


def test_command_topic() -> None:
    assert command_topic("esagtech", HOST) == f"esagtech/pb/d/{HOST}/cmd"
    assert parse_topic(command_topic("esagtech", HOST)).kind == "cmd"


@pytest.mark.parametrize(
    ("base", "hostname", "reason"),
    [("a/b", HOST, "bad_shape"), ("", HOST, "bad_shape"), ("esagtech", "nope", "bad_hostname")],
)
def test_command_topic_refuses_topics_no_panel_listens_on(
    base: str, hostname: str, reason: str
) -> None:
    with pytest.raises(TopicError) as err:
        command_topic(base, hostname)
    assert err.value.reason == reason


def test_device_topic_rejects_unknown_kind() -> None:
    with pytest.raises(TopicError) as err:
        device_topic("esagtech", HOST, "nope")
    assert err.value.reason == "unknown_kind"


def test_subscription_covers_every_base_with_one_wildcard() -> None:
    assert SUBSCRIPTION == "+/pb/d/+/+"
