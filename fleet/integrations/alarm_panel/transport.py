"""Alarm panels receive commands as framed protobuf CommandEnvelopes on `{base}/pb/d/{host}/cmd`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.integrations.alarm_panel.codec import COMMAND_TYPES, CommandError, build_command
from fleet.integrations.alarm_panel.framing import encode_frame
from fleet.integrations.alarm_panel.topics import command_topic
from fleet.services.transports import CommandRejected, OutboundCommand, Publisher, TargetDevice

KIND = "alarm_panel"
# The reference server published commands at QoS 0; QoS 1 costs little and survives a brief
# disconnect of the panel's session.
COMMAND_QOS = 1


@dataclass
class AlarmPanelTransport:
    publisher: Publisher
    hmac_key: bytes
    kind: str = KIND
    command_types: tuple[str, ...] = COMMAND_TYPES

    def _encode(self, command: OutboundCommand) -> bytes:
        if command.command_type not in COMMAND_TYPES:
            raise CommandRejected(
                f"unknown command type {command.command_type!r}; "
                f"alarm panels accept {', '.join(COMMAND_TYPES)}"
            )
        try:
            return build_command(
                command.command_type,
                command.payload,
                request_id=command.request_id,
                sequence=command.sequence,
                timestamp=command.timestamp,
                auth_level=command.auth_level,
            )
        except CommandError as exc:
            raise CommandRejected(str(exc)) from exc

    def validate(self, command_type: str, payload: dict[str, Any]) -> None:
        self._encode(OutboundCommand("", 0, 0, 0, command_type, payload))

    def send(self, device: TargetDevice, command: OutboundCommand) -> None:
        if not device.hostname or not device.namespace:
            raise CommandRejected("this panel has not reported its hostname and topic base yet")
        envelope = self._encode(command)
        frame = encode_frame(self.hmac_key, command.sequence, envelope)
        self.publisher.publish(command_topic(device.namespace, device.hostname), frame, COMMAND_QOS)
