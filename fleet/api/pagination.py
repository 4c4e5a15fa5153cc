"""Keyset paging: `{"items": [...], "next_cursor": "<opaque>" | null}`.

A cursor holds the sort key of the last item served, so the next page starts strictly after it:
rows inserted meanwhile never shift the pages (no item twice, none skipped), unlike OFFSET.
It is base64 JSON tagged with the list it belongs to; clients must treat it as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel

from fleet.api.schemas import ErrorOut

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_BIGINT = 2**63

LimitQuery = Annotated[
    int, Query(ge=1, le=MAX_LIMIT, description=f"Items per page (at most {MAX_LIMIT}).")
]
CursorQuery = Annotated[
    str | None,
    Query(max_length=512, description="`next_cursor` of the previous page; omit for the first."),
]


T = TypeVar("T")

BAD_CURSOR: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Invalid cursor"}
}


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


KeyPart = int | datetime


def encode_cursor(scope: str, *key: KeyPart) -> str:
    values = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps({"s": scope, "k": values}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_cursor() -> HTTPException:
    return HTTPException(
        status_code=400, detail="invalid cursor: pass next_cursor exactly as received, or omit it"
    )


def _parse_part(value: Any, kind: type[KeyPart]) -> KeyPart:
    if kind is int:
        if type(value) is not int or not -_BIGINT < value < _BIGINT:
            raise ValueError("not an integer key")
        return value
    if not isinstance(value, str):
        raise ValueError("not a time key")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive time key")
    return moment


def decode_cursor(cursor: str, scope: str, *kinds: type[KeyPart]) -> tuple[Any, ...]:
    """The key tuple inside `cursor`, checked against the list's key shape; 400 otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        values = data["k"]
        if data["s"] != scope or not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("cursor of another list")
        return tuple(_parse_part(v, k) for v, k in zip(values, kinds, strict=True))
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise _bad_cursor() from exc


def cut_page(
    rows: list[T], limit: int, cursor_of: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """Callers fetch `limit + 1` rows: the extra one only says whether another page exists."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, cursor_of(rows[-1])
