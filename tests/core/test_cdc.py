"""The CDC rule, table-driven: each case is (last stored row, new reading, flags) → decision."""

from datetime import UTC, datetime, timedelta

import pytest

from fleet.core.cdc import Decision, Snapshot, StoredRow, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = Snapshot(
    temperature=20.0,
    humidity=50.0,
    fan_pwm_duty=30,
    panic1=False,
    panic2=False,
    box_sw=False,
    siren=False,
    turret=False,
)


def with_(**changes: object) -> Snapshot:
    return Snapshot(**{**{f: getattr(BASE, f) for f in Snapshot.__slots__}, **changes})


CASES = [
    # (name, last row, new reading, seconds since last row, flags, expected)
    ("no previous row", None, BASE, 0, {}, Decision("SENSOR_DATA", ("SENSOR_DATA",))),
    ("nothing changed", BASE, BASE, 10, {}, None),
    ("temperature under", BASE, with_(temperature=20.49), 10, {}, None),
    (
        "temperature at",
        BASE,
        with_(temperature=20.5),
        10,
        {},
        Decision("SENSOR_DATA", ("SENSOR_DATA",)),
    ),
    (
        "float32 threshold",
        BASE,
        with_(temperature=19.5000001),
        10,
        {},
        Decision("SENSOR_DATA", ("SENSOR_DATA",)),
    ),
    ("humidity under", BASE, with_(humidity=51.9), 10, {}, None),
    ("humidity at", BASE, with_(humidity=48.0), 10, {}, Decision("SENSOR_DATA", ("SENSOR_DATA",))),
    ("fan under", BASE, with_(fan_pwm_duty=34), 10, {}, None),
    ("fan at", BASE, with_(fan_pwm_duty=35), 10, {}, Decision("SENSOR_DATA", ("SENSOR_DATA",))),
    ("panic1", BASE, with_(panic1=True), 10, {}, Decision("ALARM", ("ALARM",))),
    ("panic2", BASE, with_(panic2=True), 10, {}, Decision("ALARM", ("ALARM",))),
    ("box_sw", BASE, with_(box_sw=True), 10, {}, Decision("ALARM", ("ALARM",))),
    ("siren follows", BASE, with_(siren=True), 10, {}, Decision("ALARM", ("ALARM",))),
    ("turret follows", BASE, with_(turret=True), 10, {}, Decision("ALARM", ("ALARM",))),
    (
        "state change",
        BASE,
        BASE,
        10,
        {"state_changed": True},
        Decision("STATE_CHANGE", ("STATE_CHANGE",)),
    ),
    (
        "connection",
        BASE,
        BASE,
        10,
        {"connection_changed": True},
        Decision("CONNECTION", ("CONNECTION",)),
    ),
    (
        "alarm and sensor",
        BASE,
        with_(panic1=True, temperature=25.0),
        10,
        {},
        Decision("MULTIPLE", ("ALARM", "SENSOR_DATA")),
    ),
    (
        "all four kinds in priority order",
        BASE,
        with_(box_sw=True, humidity=60.0),
        10,
        {"state_changed": True, "connection_changed": True},
        Decision("MULTIPLE", ("ALARM", "STATE_CHANGE", "CONNECTION", "SENSOR_DATA")),
    ),
    ("periodic due", BASE, BASE, 300, {}, Decision("PERIODIC", ("PERIODIC",))),
    ("periodic not yet", BASE, BASE, 299, {}, None),
    (
        "a change beats periodic",
        BASE,
        with_(temperature=30.0),
        999,
        {},
        Decision("SENSOR_DATA", ("SENSOR_DATA",)),
    ),
    (
        "NULL old value",
        with_(temperature=None),
        BASE,
        10,
        {},
        Decision("SENSOR_DATA", ("SENSOR_DATA",)),
    ),
    ("missing new value is no change", BASE, with_(fan_pwm_duty=None), 10, {}, None),
    ("forced alarm row", BASE, BASE, 10, {"force": "ALARM"}, Decision("ALARM", ("ALARM",))),
    (
        "forced alarm with sensor change",
        BASE,
        with_(temperature=22.0),
        10,
        {"force": "ALARM"},
        Decision("MULTIPLE", ("ALARM", "SENSOR_DATA")),
    ),
]


@pytest.mark.parametrize(
    ("name", "last", "new", "age", "flags", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_cdc_rule(name: str, last, new, age, flags, expected) -> None:
    stored = None if last is None else StoredRow(T0, last)
    now = T0 + timedelta(seconds=age)
    assert decide(stored, new, now, periodic_seconds=300, **flags) == expected


def test_slow_drift_is_recorded_once_it_adds_up() -> None:
    """0.2 °C per message: compared with the previous message this would never be stored."""
    stored = StoredRow(T0, BASE)
    stored_rows = []
    temperature = 20.0
    for i in range(1, 11):
        temperature += 0.2
        now = T0 + timedelta(seconds=i)
        reading = with_(temperature=temperature)
        decision = decide(stored, reading, now, periodic_seconds=300)
        if decision is not None:
            stored_rows.append(round(temperature, 1))
            stored = StoredRow(now, reading)
    assert stored_rows == [20.6, 21.2, 21.8]


def test_merge_fills_gaps_from_older_reading() -> None:
    status_reading = Snapshot(temperature=21.0, panic1=True)
    merged = status_reading.merged_over(BASE)
    assert merged.temperature == 21.0 and merged.panic1 is True and merged.fan_pwm_duty == 30
