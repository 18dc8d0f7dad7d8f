"""Database engines and the first-use initialisation (migrations applied automatically)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0007"
"""The newest migration's revision; a test keeps it equal to Alembic's head. Lets every command start
without loading Alembic when the schema is already current."""


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sync_url(url: str) -> str:
    """The synchronous twin of an async URL, for Alembic (aiosqlite -> sqlite3; psycopg serves both)."""
    return url.replace("sqlite+aiosqlite", "sqlite", 1).replace("postgresql+asyncpg", "postgresql+psycopg", 1)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (report, dashboard) run beside a sync; NORMAL is durable across process crashes,
    # which is what exactly-once needs (a power cut may lose the last commit, never corrupt the file).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _prepare_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def create_sync_engine(url: str) -> Engine:
    url = sync_url(url)
    if is_sqlite(url):
        _prepare_sqlite_dir(url)
    engine = create_engine(url, hide_parameters=True)
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_engine_for(url: str) -> AsyncEngine:
    # hide_parameters: a failed statement's error names no values (patient names, search words) in logs.
    if is_sqlite(url):
        _prepare_sqlite_dir(url)
        engine = create_async_engine(url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to the newest schema (or to `revision`). Safe to call on every start.

    On SQLite, a migration that changes a column rebuilds its table (Alembic batch mode: copy, drop,
    rename), and with foreign keys enforced dropping a table that other rows reference fails. So, as
    SQLite's own procedure for altering a table prescribes, enforcement is off while migrating (it can only
    be switched outside a transaction) and `PRAGMA foreign_key_check` must come back clean before commit.
    The transaction is begun explicitly: the sqlite3 driver would only begin one at the first INSERT or
    UPDATE, leaving earlier DDL committed if the migration then failed.
    """
    from alembic import command

    engine = create_sync_engine(url)
    sqlite = is_sqlite(sync_url(url))
    try:
        with engine.connect() as conn:
            if sqlite:
                conn.connection.dbapi_connection.isolation_level = None  # type: ignore[union-attr]
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()  # ends SQLAlchemy's autobegun transaction; SQLite began none for a PRAGMA
            with conn.begin():
                if sqlite:
                    conn.exec_driver_sql("BEGIN")
                cfg = alembic_config(url)
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows with broken foreign keys: {broken[:5]}")
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
    finally:
        engine.dispose()


def schema_is_current(url: str) -> bool:
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            if "alembic_version" not in inspect(conn).get_table_names():
                return False
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
    finally:
        engine.dispose()


def ensure_schema(url: str) -> None:
    if not schema_is_current(url):
        migrate(url)


class Database:
    """An async engine and session factory for one database, initialised on first use."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine_for(url)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str, *, migrate_schema: bool = True) -> Database:
        if migrate_schema:
            await asyncio.to_thread(ensure_schema, url)
        return cls(url)

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def close(self) -> None:
        await self.engine.dispose()
