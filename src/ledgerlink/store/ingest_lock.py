"""Why enrolment can trust a high-water mark on PostgreSQL: writers of transactions and enrolment exclude
each other with one advisory lock.

A sync enrols the transactions with ids above the connection's `enrolled_through` up to the highest id it
sees, and remembers that id. On PostgreSQL ids come from a sequence and transactions commit in any order:
an import could take id 10, another id 11 and commit first; a sync enrolling then would see 11, move the
mark to 11, and id 10, committed a moment later, would never be written back. So every transaction that
stores transactions holds this lock shared (writers do not wait for each other), and enrolment takes it
exclusively before reading the highest id. When enrolment holds it, every writer that took an id earlier
has ended, and a later writer's ids come after. Enrolment waits for the lock a moment only
(`ENROLMENT_WAIT_MS`): long enough for the short writes of the HTTP API (at 200 requests a second some
write is nearly always in progress, and an instant writeback must not miss its transaction), not for a
long CSV import: then it enrols nothing that time, and the next sync picks up everything.

Writers also announce their practice to the workers (`NOTIFY`, delivered when the transaction commits),
so an instant writeback starts at once instead of at the next poll: see ledgerlink/worker.

SQLite needs none of this: a transaction that writes holds the database's one write lock until it ends,
and enrolment runs in a transaction that has already written.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

LOCK_KEY = 0x6C6C_656E_726F_6C6C  # "llenroll": one key for the whole installation
ENROLMENT_WAIT_MS = 250
_LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
WORK_CHANNEL = "ledgerlink_work"  # payload: the practice id whose transactions or writebacks changed


async def _postgres(conn: AsyncConnection | AsyncSession) -> AsyncConnection | None:
    connection = await conn.connection() if isinstance(conn, AsyncSession) else conn
    return connection if connection.dialect.name == "postgresql" else None


async def hold_for_writing(conn: AsyncConnection | AsyncSession, practice_id: int) -> None:
    """Called at the start of a transaction that stores transactions of `practice_id`; released when it
    ends. The workers hear of the practice when the transaction commits."""
    if (pg := await _postgres(conn)) is not None:
        await pg.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": LOCK_KEY})
        await announce_work(pg, practice_id)


async def announce_work(conn: AsyncConnection | AsyncSession, practice_id: int) -> None:
    """Wake the workers for `practice_id` when the caller's transaction commits (nothing on SQLite,
    where workers poll)."""
    if (pg := await _postgres(conn)) is not None:
        await pg.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": WORK_CHANNEL, "payload": str(practice_id)},
        )


async def try_hold_for_enrolment(conn: AsyncConnection | AsyncSession) -> bool:
    """True when no transaction is storing transactions now (and none can start until this one ends).

    Waits at most `ENROLMENT_WAIT_MS` for writers in progress; the wait runs in a savepoint so that a
    timeout leaves the caller's transaction usable.
    """
    if (pg := await _postgres(conn)) is None:
        return True
    savepoint = await pg.begin_nested()
    try:
        await pg.execute(text(f"SET LOCAL lock_timeout = '{ENROLMENT_WAIT_MS}ms'"))
        await pg.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        await pg.execute(text("SET LOCAL lock_timeout = DEFAULT"))
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        await savepoint.rollback()
        return False
    await savepoint.commit()
    return True
