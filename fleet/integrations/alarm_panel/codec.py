"""Alarm-panel protobuf payloads <-> plain Python values. Pure functions, no I/O.

Device -> server payloads decode into frozen report dataclasses whose fields are
plain values (enum labels as strings, IPs dotted, MACs colon-separated), so the
rest of Fleet never touches protobuf. Server -> device commands are built from
JSON-like dicts (what the HTTP API receives) and validated field by field so a
bad request gets an error message that names the offending field.

Frames (HMAC, sequence) are handled by ``framing``; this module sees payloads only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, Final, TypeVar, assert_never

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message

from fleet.core.records import record

from .proto import alarm_pb2 as pb
from .proto import heartbeat_pb2 as hb_pb


class DecodeError(ValueError):
    """A payload that cannot be turned into a report. ``reason`` is a metrics label:
    ``truncated``, ``unknown_enum``, ``bad_value`` or ``unknown_kind``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class CommandError(ValueError):
    """A command request that cannot be encoded; ``message`` is meant for API clients."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- enum labels


def _labels(enum: EnumDescriptor, prefix: str) -> dict[int, str]:
    """Number -> label, where the label is the proto name minus its common prefix."""
    return {value.number: value.name.removeprefix(prefix) for value in enum.values}


DEVICE_STATES: Final = _labels(pb.DeviceState.DESCRIPTOR, "STATE_")
ALARM_TYPES: Final = _labels(pb.AlarmType.DESCRIPTOR, "ALARM_")  # OUTPUT_EVENT keeps its name
EVENT_STATES: Final = _labels(pb.EventState.DESCRIPTOR, "STATE_")
PRIORITIES: Final = _labels(pb.Priority.DESCRIPTOR, "PRIORITY_")
NETWORK_TYPES: Final[dict[int, str]] = {
    pb.NETWORK_WIFI: "wifi",
    pb.NETWORK_ETHERNET: "ethernet",
    pb.NETWORK_NONE: "none",
}
# Heartbeat carries the interface as a bare u32 rather than the enum.
HEARTBEAT_NETWORK_TYPES: Final[dict[int, str]] = {0: "wifi", 1: "ethernet"}
MAX_FAN_DUTY = 100


def _label(table: Mapping[int, str], number: int, field: str) -> str:
    # proto3 enums are open: an unknown number parses fine and must be caught here.
    try:
        return table[number]
    except KeyError:
        raise DecodeError("unknown_enum", f"{field}={number}") from None


def _number(table: Mapping[int, str], label: str, field: str) -> int:
    for number, candidate in table.items():
        if candidate == label:
            return number
    raise ValueError(f"unknown {field} {label!r}; expected one of {', '.join(table.values())}")


# --------------------------------------------------------------------------- value helpers


@functools.lru_cache(maxsize=1 << 16)  # sensors repeat their readings: most are a lookup
def _float32(value: float) -> float:
    """The shortest decimal that round-trips through float32.

    Sensors send float32, so 23.1 arrives as 23.100000381469727; reporting 23.1
    keeps stored values and change thresholds free of float32 noise.
    """
    if not math.isfinite(value):
        return value
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def _ip_to_str(ip: int) -> str | None:
    return None if ip == 0 else str(ipaddress.IPv4Address(ip))


def _ip_to_int(ip: str | None) -> int:
    return 0 if ip is None else int(ipaddress.IPv4Address(ip))


def _mac_to_str(mac: bytes) -> str | None:
    return ":".join(f"{byte:02X}" for byte in mac) if len(mac) == 6 else None


def _mac_to_bytes(mac: str | None) -> bytes:
    if mac is None:
        return b""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"MAC must be 6 bytes, got {mac!r}")
    return raw


# --------------------------------------------------------------------------- reports
# Defaults are the protobuf zero values, so encoders (simulator, tests) can pass
# only the fields they care about.


@record
class StatusReport:
    """StatusMessage, sent on ``status`` and ``login``."""

    sequence: int = 0
    timestamp: int = 0
    device_db_id: int = 0
    device_state: str = "BOOT"
    state_duration: int = 0
    uptime: int = 0
    boot_count: int = 0
    free_heap: int = 0
    min_heap: int = 0
    firmware: str = ""
    network_type: str = "wifi"
    connected: bool = False
    has_ip: bool = False
    rssi: int = 0
    ip_address: str | None = None
    mac_address: str | None = None
    mqtt_connected: bool = False
    ntp_synced: bool = False
    last_ntp_sync: int | None = None
    panic1: bool = False
    panic2: bool = False
    box_sw: bool = False
    siren: bool = False
    turret: bool = False
    panic1_count: int = 0
    panic2_count: int = 0
    tamper_count: int = 0
    wifi_disconnects: int = 0
    mqtt_disconnects: int = 0
    temperature: float = 0.0
    humidity: float = 0.0
    country: str = ""
    zone: int = 0
    latitude: float = 0.0
    longitude: float = 0.0
    error_flags: int = 0
    error_count: int = 0
    partition: int = 0
    ota_validated: bool = False


@record
class HeartbeatReport:
    timestamp: int = 0
    device_db_id: int = 0
    temperature: float = 0.0
    humidity: float = 0.0
    panic1: bool = False
    panic2: bool = False
    siren: bool = False
    turret: bool = False
    box_sw: bool = False
    uptime: int = 0
    network_type: str = "wifi"
    firmware: str = ""
    fan_pwm_duty: int = 0


@record
class AlarmReport:
    sequence: int = 0
    timestamp: int = 0
    device_db_id: int = 0
    alarm_type: str = "UNKNOWN"
    event_state: str = "INACTIVE"
    priority: str = "LOW"
    physical_state: bool = False
    output_type: int = 0
    pattern_type: int = 0
    duration_seconds: int = 0
    elapsed_seconds: int = 0


@record
class CommandResponseReport:
    request_id: str = ""
    timestamp: int = 0
    success: bool = False
    error_code: int = 0
    message: str = ""
    payload: bytes = b""


@record
class LastWillReport:
    sequence: int = 0
    timestamp: int = 0  # when the device connected, not when it dropped
    device_db_id: int = 0
    uptime_at_connect: int = 0
    firmware: str = ""
    ip_address: str | None = None
    rssi: int = 0
    hostname: str = ""


Report = StatusReport | HeartbeatReport | AlarmReport | CommandResponseReport | LastWillReport

# --------------------------------------------------------------------------- decoding


_M = TypeVar("_M", bound=Message)


def _parse(message: _M, payload: bytes) -> _M:
    try:
        message.ParseFromString(payload)
    except ProtobufDecodeError as exc:
        raise DecodeError("truncated", str(exc)) from None
    return message


def _decode_status(payload: bytes) -> StatusReport:
    msg = _parse(pb.StatusMessage(), payload)
    return StatusReport(
        sequence=msg.sequence,
        timestamp=msg.timestamp,
        device_db_id=msg.device_db_id,
        device_state=_label(DEVICE_STATES, msg.state, "state"),
        state_duration=msg.state_duration,
        uptime=msg.uptime,
        boot_count=msg.boot_count,
        free_heap=msg.free_heap,
        min_heap=msg.min_heap,
        firmware=msg.firmware,
        network_type=_label(NETWORK_TYPES, msg.network, "network"),
        connected=msg.connected,
        has_ip=msg.has_ip,
        rssi=msg.rssi,
        ip_address=_ip_to_str(msg.ip_address),
        mac_address=_mac_to_str(msg.mac_address),
        mqtt_connected=msg.mqtt_connected,
        ntp_synced=msg.ntp_synced,
        last_ntp_sync=msg.last_ntp_sync or None,
        panic1=msg.panic1,
        panic2=msg.panic2,
        box_sw=msg.box_sw,
        siren=msg.siren,
        turret=msg.turret,
        panic1_count=msg.panic1_count,
        panic2_count=msg.panic2_count,
        tamper_count=msg.tamper_count,
        wifi_disconnects=msg.wifi_disconnects,
        mqtt_disconnects=msg.mqtt_disconnects,
        temperature=_float32(msg.temperature),
        humidity=_float32(msg.humidity),
        country=msg.country,
        zone=msg.zone,
        latitude=_float32(msg.latitude),
        longitude=_float32(msg.longitude),
        error_flags=msg.error_flags,
        error_count=msg.error_count,
        partition=msg.partition,
        ota_validated=msg.ota_validated,
    )


def _decode_heartbeat(payload: bytes) -> HeartbeatReport:
    msg = _parse(hb_pb.Heartbeat(), payload)
    if msg.eth_interface not in HEARTBEAT_NETWORK_TYPES:
        raise DecodeError("bad_value", f"eth_interface={msg.eth_interface}")
    if msg.fan_pwm_duty > MAX_FAN_DUTY:
        raise DecodeError("bad_value", f"fan_pwm_duty={msg.fan_pwm_duty}")
    return HeartbeatReport(
        timestamp=msg.timestamp,
        device_db_id=msg.device_db_id,
        temperature=_float32(msg.temperature),
        humidity=_float32(msg.humidity),
        panic1=msg.panic1,
        panic2=msg.panic2,
        siren=msg.siren,
        turret=msg.turret,
        box_sw=msg.box_sw,
        uptime=msg.uptime,
        network_type=HEARTBEAT_NETWORK_TYPES[msg.eth_interface],
        firmware=msg.firmware,
        fan_pwm_duty=msg.fan_pwm_duty,
    )


def _decode_alarm(payload: bytes) -> AlarmReport:
    msg = _parse(pb.AlarmEvent(), payload)
    return AlarmReport(
        sequence=msg.sequence,
        timestamp=msg.timestamp,
        device_db_id=msg.device_db_id,
        alarm_type=_label(ALARM_TYPES, msg.type, "type"),
        event_state=_label(EVENT_STATES, msg.state, "state"),
        priority=_label(PRIORITIES, msg.priority, "priority"),
        physical_state=msg.physical_state,
        output_type=msg.output_type,
        pattern_type=msg.pattern_type,
        duration_seconds=msg.duration_seconds,
        elapsed_seconds=msg.elapsed_seconds,
    )


def _decode_response(payload: bytes) -> CommandResponseReport:
    msg = _parse(pb.CommandResponse(), payload)
    return CommandResponseReport(
        request_id=msg.request_id,
        timestamp=msg.timestamp,
        success=msg.success,
        error_code=msg.error_code,
        message=msg.message,
        payload=msg.payload,
    )


def _decode_last_will(payload: bytes) -> LastWillReport:
    msg = _parse(pb.LastWillMessage(), payload)
    return LastWillReport(
        sequence=msg.sequence,
        timestamp=msg.timestamp,
        device_db_id=msg.device_db_id,
        uptime_at_connect=msg.uptime_at_connect,
        firmware=msg.firmware,
        ip_address=_ip_to_str(msg.ip_address),
        rssi=msg.rssi,
        hostname=msg.hostname,
    )


_DECODERS: Final[dict[str, Callable[[bytes], Report]]] = {
    "status": _decode_status,
    "login": _decode_status,
    "hb": _decode_heartbeat,
    "alarm": _decode_alarm,
    "response": _decode_response,
    "lw": _decode_last_will,
}
DECODABLE_KINDS: Final = frozenset(_DECODERS)


def decode_message(kind: str, payload: bytes) -> Report:
    """Decode the payload of a device -> server topic ``kind`` (canonical, see topics)."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise DecodeError("unknown_kind", kind)
    return decoder(payload)


# --------------------------------------------------------------------------- encoding
# Used by the simulator and tests; the inverse of decoding.


def _status_message(report: StatusReport) -> pb.StatusMessage:
    msg = pb.StatusMessage(
        state=pb.DeviceState.ValueType(_number(DEVICE_STATES, report.device_state, "state")),
        network=pb.NetworkInterface.ValueType(
            _number(NETWORK_TYPES, report.network_type, "network_type")
        ),
        ip_address=_ip_to_int(report.ip_address),
        mac_address=_mac_to_bytes(report.mac_address),
        last_ntp_sync=report.last_ntp_sync or 0,
    )
    converted = {"device_state", "network_type", "ip_address", "mac_address", "last_ntp_sync"}
    for field in fields(report):
        if field.name not in converted:
            setattr(msg, field.name, getattr(report, field.name))
    return msg


def _heartbeat_message(report: HeartbeatReport) -> hb_pb.Heartbeat:
    msg = hb_pb.Heartbeat(
        eth_interface=_number(HEARTBEAT_NETWORK_TYPES, report.network_type, "network_type")
    )
    for field in fields(report):
        if field.name != "network_type":
            setattr(msg, field.name, getattr(report, field.name))
    return msg


def _alarm_message(report: AlarmReport) -> pb.AlarmEvent:
    return pb.AlarmEvent(
        sequence=report.sequence,
        timestamp=report.timestamp,
        device_db_id=report.device_db_id,
        type=pb.AlarmType.ValueType(_number(ALARM_TYPES, report.alarm_type, "alarm_type")),
        state=pb.EventState.ValueType(_number(EVENT_STATES, report.event_state, "event_state")),
        priority=pb.Priority.ValueType(_number(PRIORITIES, report.priority, "priority")),
        physical_state=report.physical_state,
        output_type=report.output_type,
        pattern_type=report.pattern_type,
        duration_seconds=report.duration_seconds,
        elapsed_seconds=report.elapsed_seconds,
    )


def _response_message(report: CommandResponseReport) -> pb.CommandResponse:
    return pb.CommandResponse(
        request_id=report.request_id,
        timestamp=report.timestamp,
        success=report.success,
        error_code=report.error_code,
        message=report.message,
        payload=report.payload,
    )


def _last_will_message(report: LastWillReport) -> pb.LastWillMessage:
    return pb.LastWillMessage(
        sequence=report.sequence,
        timestamp=report.timestamp,
        device_db_id=report.device_db_id,
        uptime_at_connect=report.uptime_at_connect,
        firmware=report.firmware,
        ip_address=_ip_to_int(report.ip_address),
        rssi=report.rssi,
        hostname=report.hostname,
    )


def encode_report(report: Report) -> bytes:
    """Serialize a report back into the payload a panel would send."""
    message: Message
    match report:
        case StatusReport():
            message = _status_message(report)
        case HeartbeatReport():
            message = _heartbeat_message(report)
        case AlarmReport():
            message = _alarm_message(report)
        case CommandResponseReport():
            message = _response_message(report)
        case LastWillReport():
            message = _last_will_message(report)
        case _:
            assert_never(report)
    return message.SerializeToString()


def encode_status(**fields: Any) -> bytes:
    return encode_report(StatusReport(**fields))


def encode_heartbeat(**fields: Any) -> bytes:
    return encode_report(HeartbeatReport(**fields))


def encode_alarm(**fields: Any) -> bytes:
    return encode_report(AlarmReport(**fields))


def encode_response(**fields: Any) -> bytes:
    return encode_report(CommandResponseReport(**fields))


def encode_last_will(**fields: Any) -> bytes:
    return encode_report(LastWillReport(**fields))


# --------------------------------------------------------------------------- commands

COMMAND_TYPES: Final = ("SYSTEM", "CONFIG", "OUTPUT", "DIAGNOSTIC", "OTA", "CONFIG_READ")
# CommandEnvelope oneof member carrying each command type.
_COMMAND_FIELDS: Final = {command_type: command_type.lower() for command_type in COMMAND_TYPES}
AUTH_LEVELS: Final = (0, 1, 2)  # none, basic, admin
_U32_MAX = 0xFFFFFFFF
_INT_RANGES: Final = {
    FieldDescriptor.TYPE_UINT32: (0, _U32_MAX),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
}


def _enum_alias_prefix(enum: EnumDescriptor) -> str:
    """Firmware sources prefix every value (``CFG_DEVICE``, ``OUT_SIREN``); the prefix is
    the one on the zero value (``CFG_UNKNOWN``, ``PATTERN_NONE``)."""
    zero_name = enum.values_by_number[0].name
    return zero_name.split("_", 1)[0] + "_"


def _resolve_enum(enum: EnumDescriptor, value: object, path: str) -> str | int:
    expected = ", ".join(v.name for v in enum.values)
    if isinstance(value, str):
        if value in enum.values_by_name:
            return value
        unprefixed = value.removeprefix(_enum_alias_prefix(enum))
        if unprefixed in enum.values_by_name:
            return unprefixed
        raise CommandError(f"{path}: unknown value {value!r}; expected one of {expected}")
    if isinstance(value, int) and not isinstance(value, bool):
        if value in enum.values_by_number:
            return value
        raise CommandError(f"{path}: unknown value {value}; expected one of {expected}")
    raise CommandError(f"{path}: expected one of {expected}, got {type(value).__name__}")


def _is_base64(value: object) -> bool:
    # json_format silently drops invalid characters (so "!!" would become b""); accept
    # standard or URL-safe base64, padded or not, and nothing else.
    if not isinstance(value, str):
        return False
    standard = value.replace("-", "+").replace("_", "/")
    try:
        base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except binascii.Error:
        return False
    return True


def _check_scalar(field: FieldDescriptor, value: object, path: str) -> None:
    # Stricter than json_format (which also takes "5" for an int) so that API clients
    # get one clear message per mistake; json_format still does the conversion.
    kind = field.type
    got = type(value).__name__
    if kind == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise CommandError(f"{path}: expected true or false, got {got}")
    elif kind in _INT_RANGES:
        if not isinstance(value, int) or isinstance(value, bool):
            raise CommandError(f"{path}: expected an integer, got {got}")
        low, high = _INT_RANGES[kind]
        if not low <= value <= high:
            raise CommandError(f"{path}: {value} is out of range {low}..{high}")
    elif kind == FieldDescriptor.TYPE_FLOAT:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CommandError(f"{path}: expected a number, got {got}")
    elif kind == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise CommandError(f"{path}: expected a string, got {got}")
    elif kind == FieldDescriptor.TYPE_BYTES and not _is_base64(value):
        # Never echo the value: bytes fields carry keys (BLE adv/spp HMAC keys).
        detail = "invalid base64" if isinstance(value, str) else got
        raise CommandError(f"{path}: expected a base64 string, got {detail}")


def _normalise(descriptor: Descriptor, data: object, path: str) -> dict[str, Any]:
    """Validate ``data`` against ``descriptor``; return it with enum aliases resolved."""
    if not isinstance(data, dict):
        raise CommandError(f"{path}: expected an object, got {type(data).__name__}")
    by_json_name = {f.json_name: f for f in descriptor.fields}
    result: dict[str, Any] = {}
    oneofs_seen: dict[str, str] = {}
    for key, value in data.items():
        field = descriptor.fields_by_name.get(key) or by_json_name.get(key)
        if field is None:
            known = ", ".join(f.name for f in descriptor.fields)
            raise CommandError(f"{path}: unknown field {key!r}; expected one of {known}")
        field_path = f"{path}.{field.name}"
        if field.name in result:
            raise CommandError(f"{field_path}: given twice")
        if value is None:  # JSON null means "not set"
            continue
        oneof = field.containing_oneof
        # proto3 `optional` fields sit alone in a synthetic oneof: nothing to exclude.
        if oneof is not None and len(oneof.fields) > 1:
            if oneof.name in oneofs_seen:
                raise CommandError(
                    f"{path}: {oneofs_seen[oneof.name]!r} and {field.name!r} are exclusive;"
                    " set only one"
                )
            oneofs_seen[oneof.name] = field.name
        if field.message_type is not None:
            result[field.name] = _normalise(field.message_type, value, field_path)
        elif field.enum_type is not None:
            result[field.name] = _resolve_enum(field.enum_type, value, field_path)
        else:
            _check_scalar(field, value, field_path)
            result[field.name] = value
    return result


def _check_config_type(config: pb.ConfigCommand, path: str) -> None:
    """ConfigCommand says what it carries twice (``type`` and the oneof): make them agree."""
    carried = config.WhichOneof("config")
    if carried is None:
        return
    expected_type = pb.ConfigCommand.ConfigType.Value(carried.upper())
    if config.type == pb.ConfigCommand.CFG_UNKNOWN:
        config.type = expected_type  # {"device": {...}} alone is unambiguous
    elif config.type != expected_type:
        type_name = pb.ConfigCommand.ConfigType.Name(config.type)
        raise CommandError(f"{path}.type: {type_name} does not match the {carried!r} settings")


def _check_envelope_numbers(sequence: int, timestamp: int, auth_level: int) -> None:
    for name, value in (("sequence", sequence), ("timestamp", timestamp)):
        if not 0 <= value <= _U32_MAX:
            raise CommandError(f"{name}: {value} is out of range 0..{_U32_MAX}")
    if auth_level not in AUTH_LEVELS:
        raise CommandError(f"auth_level: {auth_level} is not one of 0 (none), 1 (basic), 2 (admin)")


def build_command(
    command_type: str,
    payload: dict[str, Any],
    *,
    request_id: str,
    sequence: int,
    timestamp: int,
    auth_level: int,
) -> bytes:
    """Serialize a CommandEnvelope (unframed) carrying ``payload`` as a ``command_type``.

    ``payload`` uses the protobuf JSON mapping of the sub-command, with proto field
    names (``{"action": "REBOOT", "delay_seconds": 5}``); enum values may also be
    given with the firmware's prefixes (``CFG_DEVICE``, ``OUT_SIREN``) and bytes as
    base64. Raises CommandError naming the offending field.
    """
    oneof_field = _COMMAND_FIELDS.get(command_type)
    if oneof_field is None:
        raise CommandError(
            f"unknown command type {command_type!r}; expected one of {', '.join(COMMAND_TYPES)}"
        )
    _check_envelope_numbers(sequence, timestamp, auth_level)
    envelope = pb.CommandEnvelope(
        sequence=sequence, timestamp=timestamp, request_id=request_id, auth_level=auth_level
    )
    command = getattr(envelope, oneof_field)
    normalised = _normalise(command.DESCRIPTOR, payload, command_type)
    try:
        json_format.ParseDict(normalised, command)
    except json_format.ParseError as exc:  # e.g. invalid base64: still name the command
        raise CommandError(f"{command_type}: {exc}") from None
    # An empty sub-command is still a command (SYSTEM {} = SYS_UNKNOWN): mark it set.
    command.SetInParent()
    if isinstance(command, pb.ConfigCommand):
        _check_config_type(command, command_type)
    return envelope.SerializeToString()


def device_id_sync_payload(device_id: int) -> dict[str, Any]:
    """The CONFIG payload of a device-id sync ("SET_DEVICE_ID"), as logged."""
    return {"type": "DEVICE", "device": {"device_id": device_id}}


def build_device_id_sync(
    device_id: int, *, request_id: str, sequence: int, timestamp: int
) -> bytes:
    """Tell a panel its database id; it echoes it back as ``device_db_id``."""
    return build_command(
        "CONFIG",
        device_id_sync_payload(device_id),
        request_id=request_id,
        sequence=sequence,
        timestamp=timestamp,
        auth_level=1,
    )


def decode_command(payload: bytes) -> dict[str, Any]:
    """CommandEnvelope -> dict with proto field names (for the simulator and tests)."""
    envelope = _parse(pb.CommandEnvelope(), payload)
    return json_format.MessageToDict(envelope, preserving_proto_field_name=True)


def command_type_of(command: Mapping[str, Any]) -> str | None:
    """Which COMMAND_TYPES entry a decoded command carries, if any."""
    for command_type, oneof_field in _COMMAND_FIELDS.items():
        if oneof_field in command:
            return command_type
    return None
