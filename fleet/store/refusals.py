"""Telling a write the database refused for what it carried from a database that refuses writes.

The ingest isolates a message the database will never take (a value out of a column's range, a
constraint it breaks) so that it cannot stall the stream. That must never happen when the fault is
the database's (read-only after a failover, disk full, locked, unreachable): every message would
then be rejected and acknowledged, and lost. Only SQLSTATE classes 22 (data exception) and 23
(integrity constraint violation), or an error raised before any database was involved, mean the
content.
"""

from __future__ import annotations

import sqlalchemy as sa

CONTENT_SQLSTATE_CLASSES = ("22", "23")


def refused_for_its_content(error: BaseException) -> bool:
    """True when retrying the same rows can never succeed, whatever the database's state."""
    if isinstance(error, (sa.exc.DataError, sa.exc.IntegrityError)):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        # asyncpg and psycopg name the SQLSTATE on the driver's exception.
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in CONTENT_SQLSTATE_CLASSES
    # Not the database's answer: a connection that failed or timed out is the database's fault;
    # anything else (a value the driver cannot encode, a handler's error) is the message's.
    return not isinstance(
        error, (OSError, TimeoutError, sa.exc.DisconnectionError, sa.exc.TimeoutError)
    )
