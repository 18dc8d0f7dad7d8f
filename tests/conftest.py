"""Shared fixtures: a migrated database on SQLite and, where a server is reachable, on PostgreSQL.

Tests that need PostgreSQL skip with a visible reason when no server answers, except under CI
(LEDGERLINK_REQUIRE_SERVICES=1), where a missing server fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ledgerlink.api.app import create_app
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.serving import running_app
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice
from ledgerlink.tokens import issue_token

POSTGRES_URL = os.environ.get(
    "LEDGERLINK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("LEDGERLINK_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REQUIRE_SERVICES = os.environ.get("LEDGERLINK_REQUIRE_SERVICES") == "1"


def service_missing(what: str, why: str) -> None:
    """Skip (on a developer machine) or fail (under CI) when a server a test needs is absent."""
    message = f"{what} is not reachable ({why})"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and LEDGERLINK_REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def _admin_conninfo(url: str) -> tuple[str, str]:
    """psycopg conninfo for the server's maintenance database, and the URL prefix to reuse."""
    base, _, _db = url.rpartition("/")
    return base.replace("postgresql+psycopg://", "postgresql://") + "/postgres", base


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    admin, base = _admin_conninfo(POSTGRES_URL)
    name = f"ll_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        service_missing("PostgreSQL", str(exc).strip().splitlines()[0])
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A fresh, empty MariaDB database (the server's default strict sql_mode) for one test, dropped afterwards.

    A sync SQLAlchemy URL (`mysql+pymysql://`): Open Dental's database is used through sync drivers.
    """
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(MARIADB_URL)
    name = f"ll_test_{uuid.uuid4().hex[:12]}"
    connect = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.username or "root",
        "password": url.password or "",
        "connect_timeout": 3,
    }
    try:
        with pymysql.connect(**connect) as conn, conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    except pymysql.err.OperationalError as exc:
        service_missing("MariaDB", str(exc.args[-1]))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with pymysql.connect(**connect) as conn, conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledgerlink.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both stores."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await Database.open(db_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def sqlite_db(sqlite_url: str) -> AsyncIterator[Database]:
    database = await Database.open(sqlite_url)
    try:
        yield database
    finally:
        await database.close()


async def make_practice(
    database: Database, *, slug: str = "smile", timezone: str = "America/Chicago", capacity: int | None = None
) -> tuple[Practice, Connection]:
    """A practice with one sandbox connection, for tests that need somewhere to put rows."""
    async with database.sessions.begin() as session:
        practice = await create_practice(
            session, slug=slug, name=slug.title(), timezone=timezone, patient_capacity=capacity
        )
        connection = await add_connection(session, practice, name="pms", kind="sandbox")
    return practice, connection


@dataclass
class Api:
    """The HTTP API served by uvicorn on loopback over the test's store, with a practice and its token."""

    url: str
    practice: Practice
    connection: Connection
    token: str

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture
async def api(db: Database, tmp_path: Path) -> AsyncIterator[Api]:
    practice, connection = await make_practice(db)
    async with db.sessions.begin() as session:
        issued = await issue_token(session, practice, "payment platform", actor="test")
    with running_app(create_app(db.url, tmp_path)) as url:
        yield Api(url, practice, connection, issued.plain)
