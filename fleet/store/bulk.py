"""Batched writes for the ingest's hot path, one statement per batch whatever its size.

SQLAlchemy's executemany compiles and binds every row in Python; at tens of thousands of rows a
second that is most of the cost. Here PostgreSQL gets one `unnest` of column arrays (one round trip,
the rows expanded by the server) and SQLite the driver's own executemany (its loop is in C).
Values are the same Python values SQLAlchemy would take; this module converts what it must.

A column whose value is the same in every row (a batch's `now`, `is_online`) goes to PostgreSQL
once, as a plain parameter, not as an array of copies: asyncpg encodes each array element on its
own (measured: 0.85 µs per timestamptz, 0.3 µs per bool), in the ingest's busiest process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from fleet.store.types import UTCDateTime

# SQLAlchemy's own storage format for SQLite DATETIME, so that either writer's rows read back alike.
_SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"


def _pg_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, sa.Enum):
        return "text"  # cast to the enum after unnest (asyncpg would introspect enum arrays)
    for sa_type, pg in (
        (sa.Boolean, "bool"),
        (sa.SmallInteger, "int2"),
        (sa.BigInteger, "int8"),
        (sa.Integer, "int4"),
        (sa.Float, "float8"),
        (sa.Numeric, "numeric"),
        (sa.String, "text"),
        (sa.Text, "text"),
    ):
        if isinstance(kind, sa_type):
            return pg
    raise TypeError(f"no bulk mapping for column {column.name} of type {kind!r}")


def _select_item(column: sa.Column[Any], source: str = "") -> str:
    """The column as read from the unnest (`source` qualifies it), cast back to its enum."""
    return _as_column_type(column, f'{source}"{column.name}"')


def _as_column_type(column: sa.Column[Any], item: str) -> str:
    if isinstance(column.type, sa.Enum):
        return f"{item}::{column.type.name}"
    return item


def _is_constant(values: Sequence[Any]) -> bool:
    """Every value is the first one, of the same type (True is not 1: the cast would differ)."""
    first = values[0]
    kind = type(first)
    for value in values:
        if value is not first and (type(value) is not kind or value != first):
            return False
    return True


class _Params:
    """A statement's numbered parameters ($1, $2, …) as they are added."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def array(self, column: sa.Column[Any], values: list[Any]) -> str:
        self.values.append(values)
        return f"${len(self.values)}::{_pg_type(column)}[]"

    def scalar(self, column: sa.Column[Any], value: Any) -> str:
        self.values.append(value)
        return _as_column_type(column, f"${len(self.values)}::{_pg_type(column)}")


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime(_SQLITE_DATETIME)
    return value


def _sqlite_converters(table: sa.Table, columns: Sequence[str]) -> list[int]:
    """Positions of the columns whose values need converting (only the datetimes)."""
    return [i for i, name in enumerate(columns) if isinstance(table.c[name].type, UTCDateTime)]


def _sqlite_rows(rows: Iterable[Sequence[Any]], convert: list[int]) -> list[tuple[Any, ...]]:
    if not convert:
        return [tuple(row) for row in rows]
    # A batch's rows mostly share one timestamp (the batch's `now`): format each distinct one once.
    formatted: dict[Any, Any] = {}
    out: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for i in convert:
            value = values[i]
            text = formatted.get(value)
            if text is None:
                text = formatted[value] = _sqlite_value(value)
            values[i] = text
        out.append(tuple(values))
    return out


async def insert_rows(
    conn: AsyncConnection, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """INSERT rows given as tuples in `columns` order."""
    rows = list(rows)
    if not rows:
        return
    cols = [table.c[name] for name in columns]
    names = ", ".join(f'"{name}"' for name in columns)
    if conn.dialect.name == "postgresql":
        arrays = [list(values) for values in zip(*rows, strict=True)]
        constant = [_is_constant(values) for values in arrays]
        if all(constant):
            constant[0] = False  # one array at least: it carries the number of rows
        params = _Params()
        select = ", ".join(
            params.scalar(c, values[0]) if same else _select_item(c, "v.")
            for c, values, same in zip(cols, arrays, constant, strict=True)
        )
        varying = [
            (c, values) for c, values, same in zip(cols, arrays, constant, strict=True) if not same
        ]
        unnest = ", ".join(params.array(c, values) for c, values in varying)
        alias = ", ".join(f'"{c.name}"' for c, _ in varying)
        await conn.exec_driver_sql(
            f'INSERT INTO "{table.name}" ({names}) '
            f"SELECT {select} FROM unnest({unnest}) AS v({alias})",
            tuple(params.values),
        )
    else:
        marks = ", ".join("?" for _ in cols)
        convert = _sqlite_converters(table, columns)
        await conn.exec_driver_sql(
            f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})',
            _sqlite_rows(rows, convert),
        )


async def update_rows(
    conn: AsyncConnection,
    table: sa.Table,
    key: str,
    rows: Mapping[Any, Mapping[str, Any]],
    *,
    touch: str | None = "updated_at",
) -> None:
    """UPDATE each row by its key; rows with the same set of columns share one statement.
    `touch` names a column set to the current time (the seed's 'auto-trigger' updated_at)."""
    groups: dict[tuple[str, ...], list[tuple[Any, Mapping[str, Any]]]] = {}
    for key_value, values in rows.items():
        groups.setdefault(tuple(sorted(values)), []).append((key_value, values))
    for columns, members in groups.items():
        if conn.dialect.name == "postgresql":
            await _update_pg(conn, table, key, columns, members, touch)
        else:
            sets = ", ".join(f'"{c}" = ?' for c in columns)
            if touch:
                sets += f', "{touch}" = CURRENT_TIMESTAMP'
            convert = _sqlite_converters(table, columns)
            await conn.exec_driver_sql(
                f'UPDATE "{table.name}" SET {sets} WHERE "{key}" = ?',
                _sqlite_rows(
                    ([*(values[c] for c in columns), key_value] for key_value, values in members),
                    convert,
                ),
            )


async def _update_pg(
    conn: AsyncConnection,
    table: sa.Table,
    key: str,
    columns: tuple[str, ...],
    members: list[tuple[Any, Mapping[str, Any]]],
    touch: str | None,
) -> None:
    params = _Params()
    key_column = table.c[key]
    unnest = [params.array(key_column, [k for k, _ in members])]
    alias = [f'"{key}"']
    sets = []
    for name in columns:
        column = table.c[name]
        values = [row[name] for _, row in members]
        if _is_constant(values):
            sets.append(f'"{name}" = {params.scalar(column, values[0])}')
        else:
            unnest.append(params.array(column, values))
            alias.append(f'"{name}"')
            sets.append(f'"{name}" = {_select_item(column, "v.")}')
    if touch:
        sets.append(f'"{touch}" = now()')
    await conn.exec_driver_sql(
        f'UPDATE "{table.name}" AS t SET {", ".join(sets)} '
        f"FROM unnest({', '.join(unnest)}) AS v({', '.join(alias)}) "
        f'WHERE t."{key}" = v."{key}"',
        tuple(params.values),
    )
