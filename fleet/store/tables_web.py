"""The dashboard's tables: browser sign-in sessions (issue 5).

Kept apart from tables.py so the dashboard's schema reads on its own; the tables join the one
`metadata` (imported at the end of tables.py) so migrations and tests see every table.
"""

from __future__ import annotations

import sqlalchemy as sa

from fleet.store.tables import metadata
from fleet.store.types import UTCDateTime

# A browser's sign-in. The cookie holds a 256-bit random session id; only its SHA-256 is kept,
# so a leaked database (or backup) cannot be replayed as a session.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("id_hash", sa.String(64), nullable=False, unique=True),
    sa.Column(
        "account_id",
        sa.Integer,
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("created_at", UTCDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)
