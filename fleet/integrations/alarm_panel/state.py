"""What the ingest remembers of each panel between messages, to decide without reading first.

The database stays the authority: an entry is loaded from it on first sight, and every change the
ingest decides is written in the same transaction as the history it produces. After a failed
transaction the entries of that batch are dropped and reloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from fleet.core.cdc import Snapshot, StoredRow


@dataclass(slots=True)
class PanelState:
    device_id: int
    account_id: int
    hostname: str | None
    namespace: str | None
    is_online: bool
    device_state: str | None
    last_seen: datetime | None
    last_frame_seq: int | None
    uptime: int | None
    current: Snapshot  # the device's present values (device_status)
    last_row: StoredRow | None  # its last stored heartbeats row
    device_synced: bool
    sync_attempts: int
    last_sync_attempt: datetime | None
    location: tuple[str | None, int | None, Decimal | None, Decimal | None]
    # (network_type, firmware_version) as device_status holds them; None: not known, write.
    build: tuple[str | None, str | None] | None = None


StateKey = tuple[int, str]  # (account_id, MAC)
