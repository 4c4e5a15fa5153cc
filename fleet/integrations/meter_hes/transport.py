"""Meters receive commands through the head-end: JSON on `{prefix}/{deviceId}/command`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fleet.integrations.meter_hes import KIND
from fleet.integrations.meter_hes import commands as meter_commands
from fleet.integrations.meter_hes.topics import command_topic, valid_meter_id
from fleet.services.transports import CommandRejected, OutboundCommand, Publisher, TargetDevice

# QoS 1: the head-end must not miss a command while its session reconnects.
COMMAND_QOS = 1


def encode_command(device: TargetDevice, command: OutboundCommand) -> bytes:
    return json.dumps(
        {
            "taskId": command.task_id,
            "commandId": command.request_id,
            "deviceId": device.uid,
            "commandType": command.command_type,
            "params": command.payload,
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class MeterHesTransport:
    publisher: Publisher
    prefix: str = "hes"
    kind: str = KIND
    command_types: tuple[str, ...] = meter_commands.COMMAND_TYPES

    def validate(self, command_type: str, payload: dict[str, Any]) -> None:
        meter_commands.validate(command_type, payload)

    def send(self, device: TargetDevice, command: OutboundCommand) -> None:
        if not valid_meter_id(device.uid):
            raise CommandRejected(f"meter id {device.uid!r} cannot be used in an MQTT topic")
        self.publisher.publish(
            command_topic(self.prefix, device.uid), encode_command(device, command), COMMAND_QOS
        )
