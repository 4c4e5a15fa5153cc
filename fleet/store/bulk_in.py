"""`column IN (many values)` with one bound parameter on PostgreSQL: `IN (SELECT unnest(:array))`.

SQLAlchemy renders and binds an IN list one value at a time, which at thousands of values costs
more than the query. `= ANY(:array)` would be one parameter too, but asyncpg's prepared statements
get a generic plan after a few runs, where ANY over a parameter is a linear scan of the array for
every row (10,000 rows x 5,000 ids: seconds); the unnest is a hashed semi-join on every plan.
SQLite keeps the plain IN list (callers split it below its parameter cap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection


def one_of(conn: AsyncConnection, column: sa.ColumnElement[Any], values: Sequence[Any]) -> Any:
    if conn.dialect.name == "postgresql":
        array = sa.bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
        return column.in_(sa.select(sa.func.unnest(array)).scalar_subquery())
    return column.in_(list(values))
