"""How a command reaches a device of a given kind: one small interface per transport."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OutboundCommand:
    """Everything a transport needs to encode one attempt of a command."""

    request_id: str
    sequence: int
    timestamp: int
    auth_level: int
    command_type: str
    payload: dict[str, Any]
    task_id: str | None = None  # the bulk task this command belongs to, if any


@dataclass(frozen=True, slots=True)
class TargetDevice:
    id: int
    kind: str
    uid: str
    hostname: str | None
    namespace: str | None


class Publisher(Protocol):
    """The broker link: publish must not block (paho queues and sends from its own thread)."""

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None: ...


class Transport(Protocol):
    kind: str
    # The command types this transport can carry (what a bulk task may ask of its devices).
    command_types: tuple[str, ...]

    def validate(self, command_type: str, payload: dict[str, Any]) -> None:
        """Raise CommandRejected with a clear message when the command cannot be encoded."""

    def send(self, device: TargetDevice, command: OutboundCommand) -> None:
        """Encode and hand the command to the broker; raise on a broker that refuses it."""


class CommandRejected(ValueError):
    """The command cannot be sent as given (unknown type, bad payload, unsupported device)."""
