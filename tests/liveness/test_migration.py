"""Migration 0004 on SQLite rebuilds alarm_events to let its CHECK accept OFFLINE: every row and
index survives. (PostgreSQL gets `ALTER TYPE … ADD VALUE`; every test on it uses OFFLINE.)"""

import sqlite3
from pathlib import Path

from fleet.store.migrate import upgrade


def test_alarm_events_keep_their_rows_and_indexes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(f"sqlite:///{path}", "0003")
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO accounts (id, name) VALUES (1, 'acme')")
        db.execute(
            "INSERT INTO devices (id, account_id, kind, uid) VALUES (1, 1, 'alarm_panel', 'x')"
        )
        db.execute(
            "INSERT INTO alarm_events (device_id, timestamp, alarm_type, event_state, priority) "
            "VALUES (1, '2025-03-01 12:00:00', 'PANIC1', 'ACTIVE', 'HIGH')"
        )
        indexes_before = sorted(
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='alarm_events'"
            )
        )
    upgrade(f"sqlite:///{path}", "0004")
    upgrade(f"sqlite:///{path}", "0004")  # idempotent: nothing left to do
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT device_id, alarm_type FROM alarm_events").fetchall()
        assert rows == [(1, "PANIC1")]
        db.execute(
            "INSERT INTO alarm_events (device_id, timestamp, alarm_type, event_state, priority) "
            "VALUES (1, '2025-03-01 12:01:00', 'OFFLINE', 'ACTIVE', 'HIGH')"
        )
        indexes_after = sorted(
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='alarm_events'"
            )
        )
        assert indexes_after == indexes_before
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        try:
            db.execute(
                "INSERT INTO alarm_events (device_id, timestamp, alarm_type, event_state, "
                "priority) VALUES (1, '2025-03-01 12:02:00', 'BOGUS', 'ACTIVE', 'HIGH')"
            )
        except sqlite3.IntegrityError:
            pass
        else:
            raise AssertionError("the CHECK constraint must still refuse unknown types")
