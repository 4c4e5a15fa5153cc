"""Real fixtures: SQLite files, a PostgreSQL database per test (cloned from a migrated template)
and the Mosquitto broker on 127.0.0.1:1883 with a unique topic base per test.

Where PostgreSQL or Mosquitto is not running, their tests are skipped with the reason, unless
FLEET_REQUIRE_SERVICES=1 (as in CI), where a missing service fails the run instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from fleet.store.engine import create_engine
from fleet.store.migrate import upgrade

PG_ADMIN_URL = os.environ.get("FLEET_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST = os.environ.get("FLEET_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("FLEET_TEST_MQTT_PORT", "1883"))
REQUIRE_SERVICES = os.environ.get("FLEET_REQUIRE_SERVICES") == "1"
RUN_ID = uuid.uuid4().hex[:8]


def service_missing(what: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is not reachable and FLEET_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(f"{what} is not reachable (set FLEET_REQUIRE_SERVICES=1 to fail instead)")


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated database that each test clones: cheaper than migrating for every test."""
    name = f"fleet_tpl_{RUN_ID}"
    try:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')
        _pg_admin(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError:
        service_missing("PostgreSQL at " + PG_ADMIN_URL)
    upgrade(_pg_url(name))
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tpl") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    name = f"fleet_t_{RUN_ID}_{uuid.uuid4().hex[:8]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield _pg_url(name)
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "fleet.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on both databases."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def mqtt_server() -> tuple[str, int]:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=2):
            pass
    except OSError:
        service_missing(f"MQTT broker at {MQTT_HOST}:{MQTT_PORT}")
    return MQTT_HOST, MQTT_PORT


@pytest.fixture
def topic_base() -> str:
    """A topic base no other test (or run) shares, so tests on one broker never see each other."""
    return f"t{RUN_ID}{uuid.uuid4().hex[:8]}"
