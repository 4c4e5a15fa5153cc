"""The overview's map: device coordinates projected onto an SVG, with no map tiles.

Fleet may run with no internet, so there is no base map: the devices' own bounding box, a light
graticule with its degrees, and one dot per device. An equirectangular projection scaled by the
cosine of the mean latitude keeps distances honest over the few kilometres to few hundred
kilometres a fleet usually spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

WIDTH = 640
HEIGHT = 360
MARGIN = 24
_MIN_SPAN_DEG = 0.01  # about 1 km: a lone device (or a tight cluster) still gets some room
_STEPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 45, 90)


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    device: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GridLine:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str


@dataclass(frozen=True, slots=True)
class DeviceMap:
    width: int
    height: int
    dots: list[Dot]
    grid: list[GridLine]


def _step(span: float) -> float:
    """A round number of degrees giving three to six grid lines over `span`."""
    for step in _STEPS:
        if span / step <= 6:
            return step
    return 90.0


def _label(value: float, step: float, positive: str, negative: str) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    hemisphere = positive if value >= 0 else negative
    return f"{abs(value):.{decimals}f}°{hemisphere}"


def project(points: Sequence[dict[str, Any]]) -> DeviceMap:
    """Dots for `points` (dicts with `latitude` and `longitude`), fitted into WIDTH by HEIGHT."""
    if not points:
        return DeviceMap(WIDTH, HEIGHT, [], [])
    lats = [float(p["latitude"]) for p in points]
    lons = [float(p["longitude"]) for p in points]
    mid_lat = (min(lats) + max(lats)) / 2
    squash = max(math.cos(math.radians(mid_lat)), 0.05)  # degrees of longitude are shorter
    lat_span = max(max(lats) - min(lats), _MIN_SPAN_DEG)
    lon_span = max(max(lons) - min(lons), _MIN_SPAN_DEG)
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN
    scale = min(inner_w / (lon_span * squash), inner_h / lat_span)  # pixels per degree of latitude
    mid_lon = (min(lons) + max(lons)) / 2

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return (
            round(WIDTH / 2 + (lon - mid_lon) * squash * scale, 1),
            round(HEIGHT / 2 - (lat - mid_lat) * scale, 1),
        )

    dots = [
        Dot(*xy(lat, lon), device=dict(p)) for lat, lon, p in zip(lats, lons, points, strict=True)
    ]
    # Grid lines over the whole drawing, which shows a little more than the devices' box.
    lat_half, lon_half = HEIGHT / 2 / scale, WIDTH / 2 / (squash * scale)
    grid: list[GridLine] = []
    step = _step(2 * lat_half)
    value = math.ceil((mid_lat - lat_half) / step) * step
    while value <= mid_lat + lat_half:
        _, y = xy(value, mid_lon)
        grid.append(GridLine(0, y, WIDTH, y, _label(value, step, "N", "S")))
        value += step
    step = _step(2 * lon_half)
    value = math.ceil((mid_lon - lon_half) / step) * step
    while value <= mid_lon + lon_half:
        x, _ = xy(mid_lat, value)
        grid.append(GridLine(x, 0, x, HEIGHT, _label(value, step, "E", "W")))
        value += step
    return DeviceMap(WIDTH, HEIGHT, dots, grid)
