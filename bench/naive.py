"""The naive baseline: seed 001's per-message pseudo-code, one transaction per message.

For each message, in paho's callback (a process of its own): decode it (Fleet's own `prepare`:
topic, HMAC, protobuf, so that decoding costs the same as in Fleet), then in one transaction
SELECT the device and its old device_status (and the time of its last history row, for the
five-minute periodic rule), UPDATE device_status, compare old and new values against the seed's
thresholds, INSERT a heartbeats row when they say so, COMMIT. An alarm also INSERTs its
alarm_events row. Plain SQL on psycopg (PostgreSQL, server-side prepared after a few executions)
or sqlite3 (with Fleet's own pragmas: WAL, synchronous=NORMAL); no cache between messages, as in
the seed. Fair, not sabotaged: indexes are Fleet's, the connection stays open, nothing waits.

One difference with Fleet is the seed's: the pseudo-code compares with the previous *message*
(device_status), Fleet with the last *stored* row (a deadband), so their row counts differ a little.
"""

from __future__ import annotations

import resource
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.common import KEY, Commit, ConsumerProcess, child_loop
from fleet.core.cdc import EPSILON, FAN_DELTA, HUMIDITY_DELTA, PRIORITY, TEMPERATURE_DELTA
from fleet.ingest.mqtt_link import BrokerAddress, InboundMessage
from fleet.ingest.rejections import Rejection
from fleet.integrations.alarm_panel import status_fields
from fleet.integrations.alarm_panel.alarm_rules import io_values
from fleet.integrations.alarm_panel.codec import AlarmReport, HeartbeatReport, StatusReport
from fleet.integrations.alarm_panel.prepare import PanelMessage, prepare

PERIODIC = timedelta(minutes=5)
MAX_PAYLOAD = 65536
IO_FIELDS = ("panic1", "panic2", "box_sw", "siren", "turret")
OLD_FIELDS = ("temperature", "humidity", "fan_pwm_duty", *IO_FIELDS)
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how Fleet (SQLAlchemy) stores times in SQLite

SELECT_DEVICE = """
SELECT d.id, s.is_online, s.last_frame_seq, s.temperature, s.humidity, s.fan_pwm_duty,
       s.panic1, s.panic2, s.box_sw, s.siren, s.turret,
       (SELECT max(h.time) FROM heartbeats h WHERE h.device_id = d.id)
FROM devices d JOIN device_status s ON s.device_id = d.id
WHERE d.account_id = %s AND d.kind = 'alarm_panel' AND d.uid = %s
"""
INSERT_HEARTBEAT = """
INSERT INTO heartbeats (time, device_id, temperature, humidity, fan_pwm_duty,
                        panic1, panic2, siren, turret, box_sw, change_type, change_kinds)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s{change_type}, %s)
"""
INSERT_ALARM = """
INSERT INTO alarm_events (device_id, sequence, timestamp, alarm_type, event_state, priority,
                          physical_state, created_at, updated_at)
VALUES (%s, %s, %s, %s{alarm_type}, %s{event_state}, %s{priority}, %s, %s, %s)
"""


class NaiveStore:
    """One open connection; `apply` runs the pseudo-code for one message in one transaction."""

    def __init__(self, url: str, account_id: int) -> None:
        self.account_id = account_id
        self.sqlite = url.startswith("sqlite")
        self._update_sql: dict[tuple[str, ...], str] = {}
        if self.sqlite:
            path = url.removeprefix("sqlite:///")
            self.db: Any = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            for pragma in (
                "foreign_keys=ON",
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "busy_timeout=10000",
            ):
                self.db.execute(f"PRAGMA {pragma}")
            casts = {"change_type": "", "alarm_type": "", "event_state": "", "priority": ""}
        else:
            self.db = psycopg.connect(url, autocommit=False)
            casts = {
                "change_type": "::change_type_enum",
                "alarm_type": "::alarm_type_enum",
                "event_state": "::event_state_enum",
                "priority": "::priority_enum",
            }
        self._select = self._sql(SELECT_DEVICE)
        self._insert_hb = self._sql(INSERT_HEARTBEAT.format(change_type=casts["change_type"]))
        self._insert_alarm = self._sql(
            INSERT_ALARM.format(
                alarm_type=casts["alarm_type"],
                event_state=casts["event_state"],
                priority=casts["priority"],
            )
        )

    def _sql(self, text: str) -> str:
        return text.replace("%s", "?") if self.sqlite else text

    def _time(self, value: datetime) -> Any:
        return value.astimezone(UTC).strftime(SQLITE_TIME) if self.sqlite else value

    def _read_time(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.strptime(value, SQLITE_TIME).replace(tzinfo=UTC)

    def _update(self, columns: tuple[str, ...]) -> str:
        sql = self._update_sql.get(columns)
        if sql is None:
            assignments = ", ".join(f'"{name}" = %s' for name in columns)
            sql = self._sql(f"UPDATE device_status SET {assignments} WHERE device_id = %s")
            self._update_sql[columns] = sql
        return sql

    def apply(self, message: PanelMessage, now: datetime) -> str | None:
        """Returns None when applied, else the reason it was not."""
        db = self.db
        if self.sqlite:
            db.execute("BEGIN")
        try:
            row = db.execute(self._select, (self.account_id, message.mac)).fetchone()
            if row is None:
                self._rollback()
                return "unknown_device"
            device_id, is_online, last_seq, *old_values, last_row_time = row
            old = dict(zip(OLD_FIELDS, old_values, strict=True))
            if last_seq is not None and message.frame_sequence <= last_seq:
                self._rollback()
                return "replay"
            report = message.report
            force = None
            if isinstance(report, HeartbeatReport):
                values = status_fields.from_heartbeat(report)
            elif isinstance(report, StatusReport):
                values = status_fields.from_status(report)
            elif isinstance(report, AlarmReport):
                values = io_values(report)
                force = "ALARM"
                db.execute(
                    self._insert_alarm,
                    (
                        device_id,
                        report.sequence,
                        self._time(now),
                        report.alarm_type,
                        report.event_state,
                        report.priority,
                        report.physical_state,
                        self._time(now),
                        self._time(now),
                    ),
                )
            else:
                values = {}
            changes = {
                "is_online": True,
                "last_seen": now,
                "last_frame_seq": message.frame_sequence,
                "updated_at": now,
                **values,
            }
            columns = tuple(changes)
            params = [self._time(v) if isinstance(v, datetime) else v for v in changes.values()]
            db.execute(self._update(columns), (*params, device_id))
            kinds = self._changed(old, values, bool(is_online), force)
            last_row = self._read_time(last_row_time)
            if not kinds and (last_row is None or now - last_row >= PERIODIC):
                kinds = ["PERIODIC"]
            if kinds:
                new = {**old, **{k: v for k, v in values.items() if k in old and v is not None}}
                db.execute(
                    self._insert_hb,
                    (
                        self._time(now),
                        device_id,
                        new["temperature"],
                        new["humidity"],
                        new["fan_pwm_duty"],
                        new["panic1"],
                        new["panic2"],
                        new["siren"],
                        new["turret"],
                        new["box_sw"],
                        "MULTIPLE" if len(kinds) > 1 else kinds[0],
                        ",".join(kinds),
                    ),
                )
            if self.sqlite:
                db.execute("COMMIT")
            else:
                db.commit()
        except BaseException:
            self._rollback()
            raise
        return None

    def _rollback(self) -> None:
        if not self.sqlite:
            self.db.rollback()
        elif self.db.in_transaction:
            self.db.execute("ROLLBACK")

    @staticmethod
    def _changed(
        old: dict[str, Any], new: dict[str, Any], was_online: bool, force: str | None
    ) -> list[str]:
        """The pseudo-code's comparison of the old device_status with the message."""
        kinds = set()
        if force:
            kinds.add(force)
        if not was_online:
            kinds.add("CONNECTION")
        for name, delta in (
            ("temperature", TEMPERATURE_DELTA),
            ("humidity", HUMIDITY_DELTA),
            ("fan_pwm_duty", FAN_DELTA),
        ):
            value, before = new.get(name), old[name]
            if value is not None and (before is None or abs(value - before) >= delta - EPSILON):
                kinds.add("SENSOR_DATA")
        if any(new.get(f) is not None and bool(new[f]) != bool(old[f]) for f in IO_FIELDS):
            kinds.add("ALARM")
        return [kind for kind in PRIORITY if kind in kinds]

    def close(self) -> None:
        self.db.close()


def _naive_main(
    conn: Connection,
    progress: Any,
    *,
    address: BrokerAddress,
    client_id: str,
    topic: str,
    qos: int,
    database_url: str,
    account_id: int,
) -> None:
    try:
        store = NaiveStore(database_url, account_id)
    except Exception as exc:
        conn.send(("error", f"cannot open {database_url}: {exc}"))
        return
    subscribed = threading.Event()
    commits: list[Commit] = []
    rejected: dict[str, int] = {}
    errors: list[str] = []
    count = 0

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        inbound = InboundMessage(msg.topic, bytes(msg.payload), msg.qos, msg.mid, time.time(), 0)
        prepared = prepare(inbound, KEY, MAX_PAYLOAD)
        reason: str | None
        if isinstance(prepared, Rejection):
            reason = prepared.reason
        elif prepared is None:
            reason = "not_a_device"
        else:
            try:
                reason = store.apply(prepared, datetime.now(UTC))
            except Exception as exc:
                reason = "store_error"
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")
            if reason is None:
                commits.append((prepared.hostname, prepared.frame_sequence, time.time()))
        if reason is not None:
            rejected[reason] = rejected.get(reason, 0) + 1
        count += 1
        progress.value = count

    def on_connect(client: mqtt.Client, *_args: object) -> None:
        client.subscribe(topic, qos)

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=qos == 0)
    if address.username:
        client.username_pw_set(address.username, address.password)
    client.on_message = on_message
    client.on_connect = on_connect
    client.on_subscribe = lambda *_args: subscribed.set()
    try:
        client.connect(address.host, address.port, keepalive=60)
    except OSError as exc:
        conn.send(("error", f"cannot reach {address.host}:{address.port}: {exc}"))
        return
    client.loop_start()
    if not subscribed.wait(10):
        conn.send(("error", "the subscription was not acknowledged"))
        return
    conn.send(("ready", None))

    def handle(command: str, _argument: Any) -> dict[str, Any]:
        taken = commits[:]
        del commits[: len(taken)]
        answer = {
            "commits": taken,
            "last": taken[-1][2] if taken else None,
            "rejected": dict(rejected),
            "errors": list(errors),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if command == "stop":
            client.disconnect()
            client.loop_stop()
            store.close()
        return answer

    child_loop(conn, handle)


def start_naive(
    address: BrokerAddress,
    client_id: str,
    topic: str,
    qos: int,
    database_url: str,
    account_id: int,
) -> ConsumerProcess:
    return ConsumerProcess(
        _naive_main,
        "naive",
        address=address,
        client_id=client_id,
        topic=topic,
        qos=qos,
        database_url=database_url,
        account_id=account_id,
    )
