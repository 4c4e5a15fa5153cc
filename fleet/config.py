"""Every FLEET_* setting in one place, each with its default and the help text the README shows.

Nothing is read at import time: `Settings()` is built by the CLI or by a test and passed down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The deployed fleet's shared key is provisioned per installation; this default only exists so that
# `make demo` and the simulator agree out of the box. Production sets FLEET_ALARM_HMAC_KEY.
DEMO_HMAC_KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEET_", extra="ignore")

    database_url: str = Field(
        default=f"sqlite:///{Path.cwd() / 'fleet.db'}",
        description="SQLAlchemy URL: a SQLite file (default, one machine) or postgresql://user@host/db.",
    )
    mqtt_url: str = Field(
        default="embedded",
        description="`embedded` starts Fleet's own broker on FLEET_MQTT_LISTEN; otherwise "
        "mqtt://[user:pass@]host:port of an external broker (Mosquitto, EMQX).",
    )
    mqtt_listen: str = Field(
        default="127.0.0.1:1883", description="Where the embedded broker listens (host:port)."
    )
    mqtt_client_id: str = Field(
        default="fleet-ingest",
        description="MQTT client id of the ingest; a fixed id keeps the QoS 1 session "
        "across restarts.",
    )
    mqtt_qos: int = Field(
        default=1, ge=0, le=1, description="Subscription QoS: 1 = at-least-once, 0 = best effort."
    )
    http_listen: str = Field(
        default="127.0.0.1:8000", description="Where the HTTP API and dashboard listen (host:port)."
    )
    alarm_topic_base: str = Field(
        default="esagtech",
        description="Default topic base of alarm panels; with a single account it is "
        "that account's.",
    )
    alarm_topic_filter: str = Field(
        default="+/pb/d/+/+",
        description="MQTT filter(s), comma-separated, the ingest subscribes to for alarm panels "
        "(default: every topic base). `acme/pb/d/+/+,globex/pb/d/+/+` takes only those "
        "accounts' panels, so workers split the load by account on any broker; "
        "`$share/fleet/+/pb/d/+/+` only with a broker that keeps a device on one worker "
        "(EMQX `hash_clientid`; see the README).",
    )
    alarm_hmac_key: str = Field(
        default=DEMO_HMAC_KEY_HEX,
        description="64 hex digits: the HMAC-SHA256 key shared with the alarm panels.",
        repr=False,
    )
    cdc_periodic_seconds: float = Field(
        default=300, gt=0, description="Store a PERIODIC heartbeats row at least this often."
    )
    offline_after_seconds: float = Field(
        default=300, gt=0, description="A device silent this long is marked offline."
    )
    command_timeout_seconds: float = Field(
        default=60, gt=0, description="A SENT command with no response after this is TIMEOUT."
    )
    # Commands and bulk tasks (issue 3).
    command_max_retries: int = Field(
        default=2, ge=0, le=20, description="Default retries of a command that got no answer."
    )
    hes_topic_prefix: str = Field(
        default="hes",
        pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$",
        description="Topic prefix of the meter head-end: commands go to "
        "{prefix}/{deviceId}/command, answers come on {prefix}/{deviceId}/response.",
    )
    hes_share_group: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="When set, head-end answers are taken through the shared subscription "
        "$share/{group}/…, so several Fleet processes split them.",
    )
    task_dispatch_rate: float = Field(
        default=100, gt=0, description="Default dispatch rate of a bulk task (devices/second)."
    )
    task_dispatch_batch: int = Field(
        default=500, ge=1, le=5000, description="Most task devices dispatched per transaction."
    )
    task_max_in_flight: int = Field(
        default=1000,
        ge=1,
        description="Most commands of one task sent and not yet answered: a slow head-end "
        "slows the task down instead of piling up answers.",
    )
    ingest_partition: str = Field(
        default="",
        description="'k/N': this process ingests only its share of the devices (by a hash of the "
        "topic), so N processes split the load on any broker; empty = all devices.",
    )
    ingest_receiver: Literal["inline", "process"] = Field(
        default="process",
        description="'process': read MQTT in a child process (paho's parsing on another core); "
        "'inline': in the ingest's own event loop.",
    )
    ingest_batch_max: int = Field(
        default=2000, ge=1, description="Most messages the ingest writes in one transaction."
    )
    ingest_batch_wait_ms: float = Field(
        default=50, ge=0, description="Longest a message waits for its batch to fill."
    )
    max_payload_bytes: int = Field(
        default=4096, ge=64, description="Larger MQTT payloads are rejected (counted) unread."
    )
    liveness_intervals: dict[str, float] = Field(
        default_factory=lambda: {"firmware_device": 300.0, "lorawan": 3600.0},
        description="JSON object: the expected report interval in seconds per device kind; a "
        "device silent for its interval + 5 s goes Offline. Alarm panels use "
        "FLEET_OFFLINE_AFTER_SECONDS; reporters send their own period.",
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    # The event stream (issue 5: fleet/events).
    events_retention_hours: float = Field(
        default=72,
        gt=0,
        description="Events are kept this long; a client resuming from an older cursor is "
        "told to reload (`reset`).",
    )
    events_client_buffer: int = Field(
        default=1000,
        ge=10,
        le=100_000,
        description="Events queued for one live client; a client that falls further behind is "
        "disconnected and told the cursor to resume from.",
    )

    @field_validator("liveness_intervals")
    @classmethod
    def _positive_intervals(cls, value: dict[str, float]) -> dict[str, float]:
        bad = sorted(kind for kind, seconds in value.items() if not 0 < seconds <= 7 * 86400)
        if bad:
            raise ValueError(f"intervals must be > 0 and at most 7 days (seconds): {bad}")
        return value

    web_session_hours: float = Field(
        default=12, gt=0, description="A dashboard sign-in lasts this long, then asks again."
    )
    web_cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto",
        description="Secure flag of the dashboard's session cookie: `auto` sets it when the "
        "request came over https (behind a proxy, run uvicorn with --proxy-headers).",
    )

    @field_validator("alarm_hmac_key")
    @classmethod
    def _hex_key(cls, value: str) -> str:
        value = value.strip()
        if len(value) != 64 or any(c not in "0123456789abcdefABCDEF" for c in value):
            raise ValueError("FLEET_ALARM_HMAC_KEY must be exactly 64 hex digits (32 bytes)")
        return value

    @property
    def hmac_key(self) -> bytes:
        return bytes.fromhex(self.alarm_hmac_key)

    @field_validator("alarm_topic_filter")
    @classmethod
    def _topic_filters(cls, value: str) -> str:
        filters = [part.strip() for part in value.split(",")]
        for text in filters:
            problem = topic_filter_problem(text)
            if problem:
                raise ValueError(f"FLEET_ALARM_TOPIC_FILTER: {text!r} {problem}")
        return ",".join(filters)

    @property
    def alarm_topic_filters(self) -> list[str]:
        """The panels' subscriptions, in the order given."""
        return self.alarm_topic_filter.split(",")


def split_host_port(value: str) -> tuple[str, int]:
    """'127.0.0.1:1883' -> ('127.0.0.1', 1883), with a clear error for a bad value."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host or "127.0.0.1", int(port)


def topic_filter_problem(text: str) -> str | None:
    """Why `text` is not an MQTT topic filter (None if it is one): `+` and `#` stand for whole
    levels, `#` only as the last one (MQTT 3.1.1, 4.7.1)."""
    if not text:
        return "is empty"
    if any(c.isspace() for c in text) or "\0" in text:
        return "holds whitespace"
    levels = text.split("/")
    for position, level in enumerate(levels):
        if ("+" in level or "#" in level) and len(level) > 1:
            return f"has a wildcard inside the level {level!r}"
        if level == "#" and position != len(levels) - 1:
            return "has '#' before its last level"
    return None
