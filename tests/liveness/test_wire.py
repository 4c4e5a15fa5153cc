"""Parsing what reporters send (wire-formats.md §4)."""

import json

import pytest

from fleet.integrations.reporter.wire import (
    BadReport,
    clean_connection,
    device_uid,
    parse_monitor_report,
    parse_period,
    parse_report,
)


def test_device_ids_are_stable_64_hex_per_account_and_name() -> None:
    uid = device_uid(1, "PiZeroW0")
    assert uid == device_uid(1, "PiZeroW0") and len(uid) == 64
    assert int(uid, 16) >= 0
    assert uid != device_uid(2, "PiZeroW0") and uid != device_uid(1, "PiZeroW1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("\tssid=HOME", "ssid=HOME"), ("ssid=HOME", "ssid=HOME"), ("\t\t", None), (None, None),
     ("ssid=MY NET ", "ssid=MY NET "), ("ssid=HOME\n", "ssid=HOME")],
)  # fmt: skip
def test_connections_lose_their_leading_tab(raw: str | None, expected: str | None) -> None:
    assert clean_connection(raw) == expected


def test_periods() -> None:
    assert parse_period("60") == 60.0 and parse_period("2.5") == 2.5
    assert parse_period(None) is None and parse_period("") is None
    for bad in ("soon", "0", "-5", "inf", "nan", "1e9"):
        with pytest.raises(BadReport):
            parse_period(bad)


def test_monitor_reports_are_normalised() -> None:
    report = parse_monitor_report(
        json.dumps(
            {
                "connection_used": {"Ethernet": "b8:27:eb:00:00:01"},
                "connections": [{"connection": "\tssid=X", "stats": {"power_dbs": -71}}],
            }
        )
    )
    assert report == {
        "connection_used": "ethernet=b8:27:eb:00:00:01",
        "connections": [{"connection": "ssid=X", "stats": {"power_dbs": -71}}],
    }
    for bad in ("[]", "{", '{"extra": 1}', '{"connections": {}}', '{"connections": [1]}',
                '{"connection_used": {"SSID": 5}}'):  # fmt: skip
        with pytest.raises(BadReport):
            parse_monitor_report(bad)


def test_the_query_connection_wins_over_the_report() -> None:
    report = json.dumps({"connection_used": {"SSID": "B"}})
    parsed = parse_report("ongoing", {"device_id": " p ", "connection": "\tssid=A"}, report)
    assert (parsed.name, parsed.connection) == ("p", "ssid=A")
    parsed = parse_report("ongoing", {"device_id": "p"}, report)
    assert parsed.connection == "ssid=B" and parsed.period_seconds is None
    with pytest.raises(BadReport, match="device_id is missing"):
        parse_report("stop", {}, None)
    with pytest.raises(BadReport, match="longer than"):
        parse_report("stop", {"device_id": "x" * 129}, None)
