"""What the HTTP API needs from the running service, handed in once by whoever builds the app."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.config import Settings
from fleet.events.hub import EventHub
from fleet.services.commands import CommandService


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    engine: AsyncEngine
    commands: CommandService
    # The event stream (fleet/events): routes that commit events call `event_hub.notify()`.
    event_hub: EventHub | None = None
