"""Jinja2 for the dashboard: the environment, its filters, and HTML responses with the
security headers every page carries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape
from starlette.responses import HTMLResponse

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
DIST = STATIC / "dist"

# Everything comes from Fleet itself: no CDN, no inline script. Inline style attributes are
# refused too; element.style set from a script (uPlot does) is not affected.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages hold an account's data: never from a shared cache, never from history after sign-out.
    "Cache-Control": "no-store",
}


def _as_utc(value: datetime) -> datetime:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)


def iso(value: datetime | None) -> str:
    return "" if value is None else _as_utc(value).isoformat()


def when(value: datetime | None) -> str:
    """An absolute UTC time; the browser turns it into local time and "3 min ago"."""
    return "never" if value is None else _as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def day(value: datetime | None) -> str:
    return "" if value is None else _as_utc(value).strftime("%Y-%m-%d")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def number(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "—"
    text = f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return f"{text} {unit}".strip() if unit else text


def label(value: str | None) -> str:
    """PANIC1 -> "Panic 1", OUTPUT_EVENT -> "Output event", NORMAL -> "Normal"."""
    if not value:
        return "—"
    text = value.replace("_", " ").lower()
    if text[-1:].isdigit() and not text[-2:-1].isdigit() and text[-2:-1] != " ":
        text = f"{text[:-1]} {text[-1]}"
    return text[:1].upper() + text[1:]


def yesno(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _fingerprint(directory: Path) -> str:
    """Changes whenever the bundle is rebuilt, so browsers never run a stale cached copy."""
    digest = hashlib.sha256()
    for path in sorted(directory.glob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


class Templates:
    def __init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            iso=iso,
            when=when,
            day=day,
            duration=duration,
            number=number,
            yesno=yesno,
            label=label,
        )
        self.env.globals["asset"] = self.asset
        self._version = _fingerprint(DIST) if DIST.is_dir() else "0"

    @property
    def built(self) -> bool:
        return (DIST / "app.js").is_file()

    def asset(self, name: str) -> str:
        return f"/static/dist/{name}?v={self._version}"

    def _template(self, name: str) -> Template:
        return self.env.get_template(name)

    def page(self, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        html = self._template(name).render(context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def fragment(self, name: str, block: str, context: dict[str, Any]) -> HTMLResponse:
        """One `{% block %}` of a page: what a live region of the open page re-reads."""
        template = self._template(name)
        render = template.blocks.get(block)
        if render is None:
            return HTMLResponse("unknown fragment", status_code=404, headers=SECURITY_HEADERS)
        html = "".join(render(template.new_context(context)))
        return HTMLResponse(html, headers=SECURITY_HEADERS)
