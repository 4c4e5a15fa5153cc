"""How a device family other than the alarm panels plugs into the ingest.

The alarm panels have the pipeline's tuned path; every other family (firmware devices, ChirpStack,
the meter head-end, …) implements this small interface. Its messages of one batch are handed over
together, inside one transaction; acknowledgements follow that transaction's commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.core.events import Event
from fleet.ingest.mqtt_link import InboundMessage
from fleet.ingest.rejections import Rejection


@dataclass
class IntegrationOutcome:
    applied: list[str] = field(default_factory=list)  # the kind of each applied message
    rejected: list[Rejection] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class Integration(Protocol):
    name: str

    def subscriptions(self) -> Sequence[str]:
        """MQTT topic filters this integration needs."""
        ...

    def matches(self, topic: str) -> bool: ...

    async def handle(
        self, conn: AsyncConnection, messages: Sequence[InboundMessage], now: datetime
    ) -> IntegrationOutcome:
        """Apply the messages in order inside `conn`'s transaction; never commit."""
        ...
