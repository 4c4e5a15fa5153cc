"""What the HTTP API needs from the running service, handed in once by whoever builds the app."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.config import Settings
from fleet.services.commands import CommandService


@dataclass(frozen=True, slots=True)
class ApiContext:
    settings: Settings
    engine: AsyncEngine
    commands: CommandService
