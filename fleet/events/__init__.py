"""The real-time event stream (issue 5): one ordered stream of events per account, live over
Server-Sent Events and WebSocket, resumable by cursor. See hub.py."""

from fleet.events.hub import EventHub, Subscription
from fleet.events.model import (
    CursorExpired,
    EventFilter,
    HubUnavailable,
    StreamClosed,
    StreamEvent,
    StreamOverflow,
)

__all__ = [
    "CursorExpired",
    "EventFilter",
    "EventHub",
    "HubUnavailable",
    "StreamClosed",
    "StreamEvent",
    "StreamOverflow",
    "Subscription",
]
