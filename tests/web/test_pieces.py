"""The dashboard's pure pieces: the map projection, the devices table's query, event wording,
labels and the status groups."""

from __future__ import annotations

from datetime import UTC, datetime

from fleet.web.describe import describe, tone
from fleet.web.device_table import PAGE_SIZES, DeviceQuery
from fleet.web.fields import status_groups
from fleet.web.geo import HEIGHT, MARGIN, WIDTH, project
from fleet.web.signin import safe_next
from fleet.web.templating import duration, label


def test_the_map_fits_every_device_inside_the_drawing_north_up() -> None:
    points = [
        {"id": 1, "latitude": 40.40, "longitude": -3.70},
        {"id": 2, "latitude": 40.60, "longitude": -3.50},  # north-east
        {"id": 3, "latitude": 40.20, "longitude": -3.90},  # south-west
    ]
    drawn = project(points)
    for dot in drawn.dots:
        assert MARGIN - 0.5 <= dot.x <= WIDTH - MARGIN + 0.5
        assert MARGIN - 0.5 <= dot.y <= HEIGHT - MARGIN + 0.5
    middle, north_east, south_west = drawn.dots
    assert north_east.x > middle.x > south_west.x
    assert north_east.y < middle.y < south_west.y  # north is up
    assert any(line.label.endswith("N") for line in drawn.grid)
    assert any(line.label.endswith("W") for line in drawn.grid)
    alone = project([{"latitude": -33.45, "longitude": -70.66}])
    assert (alone.dots[0].x, alone.dots[0].y) == (WIDTH / 2, HEIGHT / 2)
    assert project([]).dots == []


def test_the_devices_query_is_lenient_and_round_trips() -> None:
    query = DeviceQuery.from_params(
        {"q": "  lobby ", "state": "offline", "sort": "nonsense", "page": "-3", "per": "7"}
    )
    assert query == DeviceQuery(q="lobby", state="Offline")
    panel = DeviceQuery.from_params({"state": "panel:alarm", "dir": "desc", "sort": "last_seen"})
    assert panel.state == "panel:ALARM" and panel.desc and panel.sort == "last_seen"
    assert DeviceQuery.from_params({"per": str(PAGE_SIZES[-1])}).per == PAGE_SIZES[-1]
    assert DeviceQuery().params() == ""
    assert DeviceQuery(q="a b", page=3).params() == "q=a+b&page=3"
    # Clicking the sorted column flips the direction and goes back to page 1.
    sorted_query = DeviceQuery(sort="firmware", page=4)
    assert sorted_query.sorted_by("firmware") == "sort=firmware&dir=desc"
    assert sorted_query.sorted_by("name") == ""


def test_events_in_words() -> None:
    raised = {"id": 1, "alarm_type": "PANIC1", "priority": "CRITICAL", "state": "ACTIVE"}
    assert describe("alarm.raised", raised) == "Alarm raised: panic1 (critical)"
    assert tone("alarm.raised") == "danger"
    change = {"previous": "Reporting", "state": "Offline", "connection": "ssid=HOME"}
    assert describe("device.state", change) == "Reporting → Offline on ssid=HOME"
    assert tone("device.state", change) == "warn"
    assert describe("device.state", {"from": "NORMAL", "to": "ALARM"}) == "State NORMAL → ALARM"
    assert describe("rollout.finished", {"status": "DONE"}) == "Rollout finished: DONE"


def test_labels_durations_and_where_sign_in_may_lead() -> None:
    assert [label(v) for v in ("PANIC1", "OUTPUT_EVENT", "alarm_panel", None)] == [
        "Panic 1",
        "Output event",
        "Alarm panel",
        "—",
    ]
    assert [duration(v) for v in (5, 125, 7300, 200000)] == [
        "5 s",
        "2 min 5 s",
        "2 h 1 min",
        "2 d 7 h",
    ]
    assert safe_next("/devices?q=x") == "/devices?q=x"
    for target in ("https://evil.example", "//evil.example", "/\\evil.example", "", None):
        assert safe_next(target) == "/"


def test_status_groups_colour_what_matters() -> None:
    status = {
        "device_id": 1,
        "is_online": True,
        "temperature": 21.456,
        "panic1": True,
        "mqtt_connected": False,
        "last_seen": datetime(2025, 3, 1, tzinfo=UTC),
        "some_future_field": 7,
    }
    groups = dict(status_groups(status))
    assert [item.text for item in groups["Sensors"]] == ["21.5 °C"]
    panic = next(item for item in groups["Inputs and outputs"] if item.name == "panic1")
    assert panic.tone == "danger"
    mqtt = next(item for item in groups["Network"] if item.name == "mqtt_connected")
    assert mqtt.tone == "warn"
    seen = next(item for item in groups["Network"] if item.name == "last_seen")
    assert seen.time == status["last_seen"]
    assert [item.name for item in groups["Other"]] == ["some_future_field"]
    assert status_groups(None) == []
