from dataclasses import asdict
from typing import Any

import pytest

from fleet.integrations.alarm_panel.codec import (
    ALARM_TYPES,
    COMMAND_TYPES,
    DEVICE_STATES,
    EVENT_STATES,
    PRIORITIES,
    AlarmReport,
    CommandError,
    CommandResponseReport,
    DecodeError,
    HeartbeatReport,
    LastWillReport,
    Report,
    StatusReport,
    build_command,
    build_device_id_sync,
    command_type_of,
    decode_command,
    decode_message,
    device_id_sync_payload,
    encode_alarm,
    encode_heartbeat,
    encode_last_will,
    encode_report,
    encode_response,
    encode_status,
)
from fleet.integrations.alarm_panel.proto import alarm_pb2, heartbeat_pb2

# A real CommandEnvelope captured from the reference server (wire-formats.md §1).
CAPTURED = bytes.fromhex(
    "08021083a9cfc5065a220803621e0a164553475f414c41524d5f30343833303830434544443810051801203c"
)
CAPTURED_CONFIG = {
    "type": "DEVICE",
    "device": {
        "hostname": "ESG_ALARM_0483080CEDD8",
        "device_id": 5,
        "enable_heartbeat": True,
        "heartbeat_interval": 60,
    },
}


def _command(command_type: str, payload: Any, **envelope: Any) -> bytes:
    fields = {"request_id": "r-1", "sequence": 1, "timestamp": 1_700_000_000, "auth_level": 1}
    fields.update(envelope)
    return build_command(command_type, payload, **fields)


def _command_error(command_type: str, payload: Any, **envelope: Any) -> str:
    with pytest.raises(CommandError) as err:
        _command(command_type, payload, **envelope)
    assert str(err.value) == err.value.message
    return err.value.message


# ----------------------------------------------------------------------------- captured command


def test_captured_command_decodes() -> None:
    assert decode_command(CAPTURED) == {
        "sequence": 2,
        "timestamp": 1756615811,
        "config": CAPTURED_CONFIG,
    }
    raw = alarm_pb2.CommandEnvelope.FromString(CAPTURED)
    assert raw.config.type == 3
    assert command_type_of(decode_command(CAPTURED)) == "CONFIG"


@pytest.mark.parametrize("type_name", ["DEVICE", "CFG_DEVICE", 3])
def test_build_command_reproduces_the_captured_bytes(type_name: object) -> None:
    payload = {**CAPTURED_CONFIG, "type": type_name}
    built = build_command(
        "CONFIG", payload, request_id="", sequence=2, timestamp=1756615811, auth_level=0
    )
    assert built == CAPTURED


def test_build_command_accepts_json_names_too() -> None:
    payload = {
        "type": "DEVICE",
        "device": {
            "hostname": "ESG_ALARM_0483080CEDD8",
            "deviceId": 5,
            "enableHeartbeat": True,
            "heartbeatInterval": 60,
        },
    }
    built = build_command(
        "CONFIG", payload, request_id="", sequence=2, timestamp=1756615811, auth_level=0
    )
    assert built == CAPTURED


# ----------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("command_type", "payload", "expected"),
    [
        (
            "SYSTEM",
            {"action": "REBOOT", "delay_seconds": 5},
            {"action": "REBOOT", "delay_seconds": 5},
        ),
        ("SYSTEM", {"action": "SYS_GET_STATUS"}, {"action": "GET_STATUS"}),
        (
            "CONFIG",
            {"type": "LOCATION", "location": {"country": "ES", "zone": 2, "latitude": 40.5}},
            {"type": "LOCATION", "location": {"country": "ES", "zone": 2, "latitude": 40.5}},
        ),
        (
            "CONFIG",
            {"type": "NTP", "ntp": {"server1": "pool.ntp.org", "timezone_offset": -28800}},
            {"type": "NTP", "ntp": {"server1": "pool.ntp.org", "timezone_offset": -28800}},
        ),
        (
            "CONFIG",
            {"type": "CFG_BLE", "ble": {"enable": True, "adv_hmac_key": "AAEC"}},
            {"type": "BLE", "ble": {"enable": True, "adv_hmac_key": "AAEC"}},
        ),
        (
            "OUTPUT",
            {"output": "SIREN", "pattern": "BLINK_FAST", "state": True, "total_duration": 10},
            {"output": "SIREN", "pattern": "BLINK_FAST", "state": True, "total_duration": 10},
        ),
        (
            "OUTPUT",
            {"output": "OUT_FAN", "pattern": "PATTERN_PWM", "custom_data": "Sw=="},
            {"output": "FAN", "pattern": "PWM", "custom_data": "Sw=="},
        ),
        (
            "DIAGNOSTIC",
            {"action": "LOG_DUMP", "log_lines": 100},
            {"action": "LOG_DUMP", "log_lines": 100},
        ),
        (
            "OTA",
            {"action": "START_UPDATE", "url": "https://x/fw.bin", "md5": "ab", "size": 1024},
            {"action": "START_UPDATE", "url": "https://x/fw.bin", "md5": "ab", "size": 1024},
        ),
        ("OTA", {"action": "OTA_GET_STATUS"}, {"action": "GET_STATUS"}),
        ("CONFIG_READ", {"type": "ALL"}, {"type": "ALL"}),
        ("CONFIG_READ", {"type": "READ_WIFI", "include_sensitive": False}, {"type": "WIFI"}),
    ],
)
def test_every_command_type_builds(
    command_type: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    decoded = decode_command(_command(command_type, payload))
    assert decoded == {
        "sequence": 1,
        "timestamp": 1_700_000_000,
        "request_id": "r-1",
        "auth_level": 1,
        command_type.lower(): expected,
    }
    assert command_type_of(decoded) == command_type


def test_command_types() -> None:
    assert COMMAND_TYPES == ("SYSTEM", "CONFIG", "OUTPUT", "DIAGNOSTIC", "OTA", "CONFIG_READ")


def test_config_type_is_inferred_from_the_settings_when_missing() -> None:
    decoded = decode_command(_command("CONFIG", {"device": {"device_id": 9}}))
    assert decoded["config"] == {"type": "DEVICE", "device": {"device_id": 9}}


def test_optional_config_fields_keep_explicit_zero() -> None:
    # device_id 0 means "forget your id": it must reach the panel, not vanish as a default.
    decoded = decode_command(_command("CONFIG", {"device": {"device_id": 0}}))
    assert decoded["config"]["device"] == {"device_id": 0}


def test_empty_sub_command_is_still_sent() -> None:
    assert decode_command(_command("SYSTEM", {}))["system"] == {}


def test_null_means_not_set() -> None:
    assert decode_command(_command("SYSTEM", {"action": "REBOOT", "delay_seconds": None}))[
        "system"
    ] == {"action": "REBOOT"}


def test_device_id_sync() -> None:
    built = build_device_id_sync(42, request_id="req", sequence=9, timestamp=1_700_000_001)
    assert decode_command(built) == {
        "sequence": 9,
        "timestamp": 1_700_000_001,
        "request_id": "req",
        "auth_level": 1,
        "config": {"type": "DEVICE", "device": {"device_id": 42}},
    }
    assert device_id_sync_payload(42) == {"type": "DEVICE", "device": {"device_id": 42}}
    raw = alarm_pb2.CommandEnvelope.FromString(built)
    assert raw.config.type == alarm_pb2.ConfigCommand.DEVICE == 3


@pytest.mark.parametrize(
    ("command_type", "payload", "message"),
    [
        (
            "REBOOT",
            {},
            "unknown command type 'REBOOT'; expected one of SYSTEM, CONFIG, OUTPUT, "
            "DIAGNOSTIC, OTA, CONFIG_READ",
        ),
        (
            "SYSTEM",
            {"actoin": "REBOOT"},
            "SYSTEM: unknown field 'actoin'; expected one of action, delay_seconds, unix_time",
        ),
        (
            "CONFIG",
            {"device": {"device_idd": 5}},
            "CONFIG.device: unknown field 'device_idd'; expected one of hostname, device_id, "
            "enable_heartbeat, heartbeat_interval",
        ),
        (
            "SYSTEM",
            {"action": "RESTART"},
            "SYSTEM.action: unknown value 'RESTART'; expected one of SYS_UNKNOWN, REBOOT, "
            "FACTORY_RESET, GET_STATUS, SET_TIME, CLEAR_COUNTERS",
        ),
        (
            "OUTPUT",
            {"output": "SIREN", "pattern": "BLINK"},
            "OUTPUT.pattern: unknown value 'BLINK'; expected one of PATTERN_NONE, CONSTANT, "
            "PULSE, BLINK_SLOW, BLINK_FAST, DOUBLE_PULSE, TRIPLE_PULSE, SOS, STROBE, OFF, PWM, "
            "CUSTOM",
        ),
        (
            "CONFIG_READ",
            {"type": 8},
            "CONFIG_READ.type: unknown value 8; expected one of READ_UNKNOWN, WIFI, MQTT, "
            "DEVICE, LOCATION, NTP, BLE, ALL",
        ),
        ("SYSTEM", {"delay_seconds": "5"}, "SYSTEM.delay_seconds: expected an integer, got str"),
        ("SYSTEM", {"delay_seconds": 1.5}, "SYSTEM.delay_seconds: expected an integer, got float"),
        ("SYSTEM", {"delay_seconds": True}, "SYSTEM.delay_seconds: expected an integer, got bool"),
        (
            "SYSTEM",
            {"delay_seconds": -1},
            "SYSTEM.delay_seconds: -1 is out of range 0..4294967295",
        ),
        (
            "CONFIG",
            {"ntp": {"timezone_offset": 2**31}},
            "CONFIG.ntp.timezone_offset: 2147483648 is out of range -2147483648..2147483647",
        ),
        ("OUTPUT", {"state": "on"}, "OUTPUT.state: expected true or false, got str"),
        ("OTA", {"url": 5}, "OTA.url: expected a string, got int"),
        (
            "CONFIG",
            {"location": {"latitude": "x"}},
            "CONFIG.location.latitude: expected a number, got str",
        ),
        (
            "OUTPUT",
            {"custom_data": "!!"},
            "OUTPUT.custom_data: expected a base64 string, got invalid base64",
        ),
        (
            "CONFIG",
            {"ble": {"spp_hmac_key": 7}},
            "CONFIG.ble.spp_hmac_key: expected a base64 string, got int",
        ),
        ("SYSTEM", ["REBOOT"], "SYSTEM: expected an object, got list"),
        ("CONFIG", {"device": 5}, "CONFIG.device: expected an object, got int"),
        (
            "CONFIG",
            {"device": {}, "wifi": {}},
            "CONFIG: 'device' and 'wifi' are exclusive; set only one",
        ),
        (
            "CONFIG",
            {"type": "WIFI", "device": {"device_id": 5}},
            "CONFIG.type: WIFI does not match the 'device' settings",
        ),
        (
            "CONFIG",
            {"device": {"device_id": 1, "deviceId": 2}},
            "CONFIG.device.device_id: given twice",
        ),
    ],
)
def test_command_errors_say_what_is_wrong(command_type: str, payload: Any, message: str) -> None:
    assert _command_error(command_type, payload) == message


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        ({"auth_level": 3}, "auth_level: 3 is not one of 0 (none), 1 (basic), 2 (admin)"),
        ({"sequence": 2**32}, "sequence: 4294967296 is out of range 0..4294967295"),
        ({"timestamp": -1}, "timestamp: -1 is out of range 0..4294967295"),
    ],
)
def test_envelope_errors(envelope: dict[str, int], message: str) -> None:
    assert _command_error("SYSTEM", {"action": "REBOOT"}, **envelope) == message


def test_float_overflow_is_a_command_error() -> None:
    message = _command_error("CONFIG", {"location": {"latitude": 1e40}})
    assert message.startswith("CONFIG: ")


def test_decode_command_rejects_garbage() -> None:
    with pytest.raises(DecodeError) as err:
        decode_command(b"\x0a\x05ab")
    assert err.value.reason == "truncated"


# ----------------------------------------------------------------------------- device messages

STATUS = StatusReport(
    sequence=17,
    timestamp=1_756_615_811,
    device_db_id=5,
    device_state="ALARM",
    state_duration=12,
    uptime=3600,
    boot_count=4,
    free_heap=150_000,
    min_heap=120_000,
    firmware="v1.0.5-989f981",
    network_type="ethernet",
    connected=True,
    has_ip=True,
    rssi=-61,
    ip_address="192.168.1.100",
    mac_address="04:83:08:0C:ED:D8",
    mqtt_connected=True,
    ntp_synced=True,
    last_ntp_sync=1_756_600_000,
    panic1=True,
    panic2=False,
    box_sw=True,
    siren=True,
    turret=False,
    panic1_count=3,
    panic2_count=1,
    tamper_count=2,
    wifi_disconnects=7,
    mqtt_disconnects=8,
    temperature=23.1,
    humidity=55.5,
    country="ES",
    zone=3,
    latitude=40.4168,
    longitude=-3.7038,
    error_flags=0b101,
    error_count=2,
    partition=2,
    ota_validated=True,
)
HEARTBEAT = HeartbeatReport(
    timestamp=1_756_615_812,
    device_db_id=5,
    temperature=24.7,
    humidity=40.2,
    panic1=True,
    panic2=True,
    siren=False,
    turret=True,
    box_sw=False,
    uptime=3601,
    network_type="ethernet",
    firmware="v1.0.5",
    fan_pwm_duty=100,
)
ALARM = AlarmReport(
    sequence=18,
    timestamp=1_756_615_813,
    device_db_id=5,
    alarm_type="OUTPUT_EVENT",
    event_state="STOPPING",
    priority="CRITICAL",
    physical_state=True,
    output_type=1,
    pattern_type=4,
    duration_seconds=30,
    elapsed_seconds=29,
)
RESPONSE = CommandResponseReport(
    request_id="550e8400-e29b-41d4-a716-446655440000",
    timestamp=1_756_615_814,
    success=False,
    error_code=3,
    message="Invalid parameters",
    payload=b'{"x":1}',
)
LAST_WILL = LastWillReport(
    sequence=1,
    timestamp=1_756_600_000,
    device_db_id=5,
    uptime_at_connect=12,
    firmware="v1.0.5",
    ip_address="10.0.0.7",
    rssi=-70,
    hostname="ESG_ALARM_0483080CEDD8",
)


@pytest.mark.parametrize(
    ("kind", "report"),
    [
        ("status", STATUS),
        ("login", STATUS),
        ("hb", HEARTBEAT),
        ("alarm", ALARM),
        ("response", RESPONSE),
        ("lw", LAST_WILL),
    ],
)
def test_every_kind_round_trips(kind: str, report: Report) -> None:
    assert decode_message(kind, encode_report(report)) == report


def test_keyword_encoders_match_the_reports() -> None:
    assert encode_status(**asdict(STATUS)) == encode_report(STATUS)
    assert encode_heartbeat(**asdict(HEARTBEAT)) == encode_report(HEARTBEAT)
    assert encode_alarm(**asdict(ALARM)) == encode_report(ALARM)
    assert encode_response(**asdict(RESPONSE)) == encode_report(RESPONSE)
    assert encode_last_will(**asdict(LAST_WILL)) == encode_report(LAST_WILL)


def test_keyword_encoders_reject_unknown_names() -> None:
    with pytest.raises(TypeError):
        encode_heartbeat(temprature=20.0)


def test_every_label_of_every_enum_round_trips() -> None:
    assert list(DEVICE_STATES.values()) == [
        "BOOT", "INIT", "CONNECTING", "NORMAL", "ALARM", "MAINTENANCE", "ERROR", "CRITICAL"
    ]  # fmt: skip
    assert list(ALARM_TYPES.values()) == [
        "UNKNOWN", "PANIC1", "PANIC2", "TAMPER", "FIRE", "INTRUSION", "MEDICAL", "DURESS",
        "OUTPUT_EVENT",
    ]  # fmt: skip
    assert list(EVENT_STATES.values()) == ["INACTIVE", "ACTIVE", "TEST", "STARTING", "STOPPING"]
    assert list(PRIORITIES.values()) == ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    for state in DEVICE_STATES.values():
        for network in ("wifi", "ethernet", "none"):
            status = StatusReport(device_state=state, network_type=network)
            assert decode_message("status", encode_report(status)) == status
    for alarm_type in ALARM_TYPES.values():
        for event_state in EVENT_STATES.values():
            for priority in PRIORITIES.values():
                alarm = AlarmReport(
                    alarm_type=alarm_type, event_state=event_state, priority=priority
                )
                assert decode_message("alarm", encode_report(alarm)) == alarm


def test_enum_numbers_are_the_wire_numbers() -> None:
    assert ALARM_TYPES[10] == "OUTPUT_EVENT"
    assert alarm_pb2.ConfigReadCommand.ALL == 7
    assert alarm_pb2.OutputCommand.CUSTOM == 255


def test_encoders_reject_unknown_labels() -> None:
    with pytest.raises(ValueError, match="unknown state 'SLEEPING'"):
        encode_status(device_state="SLEEPING")
    with pytest.raises(ValueError, match="unknown network_type 'none'"):
        encode_heartbeat(network_type="none")  # Heartbeat can only say wifi or ethernet


def test_status_wire_details() -> None:
    raw = alarm_pb2.StatusMessage(
        ip_address=0xC0A80164, mac_address=bytes.fromhex("0483080cedd8"), state=7
    )
    decoded = decode_message("status", raw.SerializeToString())
    assert isinstance(decoded, StatusReport)
    assert decoded.ip_address == "192.168.1.100"  # ip >> 24 is the first octet
    assert decoded.mac_address == "04:83:08:0C:ED:D8"
    assert decoded.device_state == "CRITICAL"


def test_status_zero_values_become_none() -> None:
    decoded = decode_message(
        "status", alarm_pb2.StatusMessage(mac_address=b"\x01\x02").SerializeToString()
    )
    assert isinstance(decoded, StatusReport)
    assert decoded.ip_address is None
    assert decoded.mac_address is None  # not 6 bytes
    assert decoded.last_ntp_sync is None
    assert decoded == StatusReport()


def test_float32_noise_is_trimmed() -> None:
    raw = heartbeat_pb2.Heartbeat(temperature=23.1, humidity=55.55)
    assert raw.temperature != 23.1  # float32 on the wire
    decoded = decode_message("hb", raw.SerializeToString())
    assert isinstance(decoded, HeartbeatReport)
    assert (decoded.temperature, decoded.humidity) == (23.1, 55.55)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("status", alarm_pb2.StatusMessage(state=8)),
        ("status", alarm_pb2.StatusMessage(network=3)),
        ("login", alarm_pb2.StatusMessage(state=99)),
        ("alarm", alarm_pb2.AlarmEvent(type=8)),  # the gap between DURESS 7 and OUTPUT_EVENT 10
        ("alarm", alarm_pb2.AlarmEvent(state=5)),
        ("alarm", alarm_pb2.AlarmEvent(priority=4)),
    ],
)
def test_unknown_enum(kind: str, message: Any) -> None:
    with pytest.raises(DecodeError) as err:
        decode_message(kind, message.SerializeToString())
    assert err.value.reason == "unknown_enum"


@pytest.mark.parametrize(
    "message",
    [heartbeat_pb2.Heartbeat(eth_interface=2), heartbeat_pb2.Heartbeat(fan_pwm_duty=101)],
)
def test_heartbeat_bad_value(message: heartbeat_pb2.Heartbeat) -> None:
    with pytest.raises(DecodeError) as err:
        decode_message("hb", message.SerializeToString())
    assert err.value.reason == "bad_value"


@pytest.mark.parametrize("kind", ["status", "login", "hb", "alarm", "response", "lw"])
@pytest.mark.parametrize(
    "tail",
    [
        b"\x08\x80",  # a varint whose continuation byte never comes
        b"\x52\x05ab",  # a length-delimited field announcing 5 bytes, carrying 2
    ],
)
def test_truncated(kind: str, tail: bytes) -> None:
    valid = {
        "status": STATUS,
        "login": STATUS,
        "hb": HEARTBEAT,
        "alarm": ALARM,
        "response": RESPONSE,
        "lw": LAST_WILL,
    }[kind]
    with pytest.raises(DecodeError) as err:
        decode_message(kind, encode_report(valid) + tail)
    assert err.value.reason == "truncated"


def test_a_frame_cut_mid_string_is_truncated() -> None:
    payload = encode_report(RESPONSE)
    cut = payload[: payload.index(b"Invalid") + 3]
    with pytest.raises(DecodeError) as err:
        decode_message("response", cut)
    assert err.value.reason == "truncated"


def test_unknown_kind() -> None:
    with pytest.raises(DecodeError) as err:
        decode_message("cmd", CAPTURED)
    assert err.value.reason == "unknown_kind"


def test_unknown_fields_are_ignored() -> None:
    # Newer firmware may add fields; older servers must keep decoding.
    extra = encode_report(HEARTBEAT) + b"\xa0\x06\x01"  # field 100, varint 1
    assert decode_message("hb", extra) == HEARTBEAT
