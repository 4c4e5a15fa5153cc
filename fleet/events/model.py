"""The values of the event stream: an event as sent, a client's filter, and the signals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamEvent:
    cursor: int
    account_id: int
    type: str
    device_id: int | None
    json: str  # {"cursor", "type", "device_id", "data", "time"}, serialized once for every client


@dataclass(frozen=True, slots=True)
class EventFilter:
    types: frozenset[str] | None = None
    device_id: int | None = None

    def matches(self, event: StreamEvent) -> bool:
        return (self.types is None or event.type in self.types) and (
            self.device_id is None or event.device_id == self.device_id
        )


class StreamOverflow(Exception):
    """The client fell further behind than its buffer: it resumes from `cursor` (the last event
    handed to it) on a new connection."""

    def __init__(self, cursor: int) -> None:
        super().__init__(f"client buffer overflowed; resume from cursor {cursor}")
        self.cursor = cursor


class StreamClosed(Exception):
    """The hub stopped (Fleet is shutting down): the client reconnects to another process or
    later, from its last cursor."""


class CursorExpired(Exception):
    """The cursor is older than the events kept (or unknown): what happened in between is gone.
    The client reloads its state and continues from `restart`."""

    def __init__(self, cursor: int, restart: int) -> None:
        super().__init__(
            f"cursor {cursor} is older than the events kept (or unknown): reload your state "
            f"and continue from cursor {restart}"
        )
        self.cursor = cursor
        self.restart = restart


class HubUnavailable(Exception):
    """The hub is not ready (its database cannot be read)."""
