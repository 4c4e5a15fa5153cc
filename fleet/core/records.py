"""`@record`: an immutable value class that is cheap to build, for the ingest's hot path.

A frozen dataclass sets each field in `__init__` through `object.__setattr__`: 1.0 µs for seven
fields against 0.29 µs for a plain slots dataclass (Python 3.11), and the ingest builds several
such values per message (the inbound message, its frame, its report, its snapshot). A `@record`
class is frozen for the type checker, so mypy still rejects any assignment to a field, and a
plain slots dataclass at run time. Like any non-frozen dataclass with `eq`, it is not hashable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    return dataclass(slots=True)(cls)
