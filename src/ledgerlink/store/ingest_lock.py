"""Why enrolment can trust a high-water mark on PostgreSQL: writers of transactions and enrolment exclude
each other with one advisory lock.

A sync enrols the transactions with ids above the connection's `enrolled_through` up to the highest id it
sees, and remembers that id. On PostgreSQL ids come from a sequence and transactions commit in any order:
an import could take id 10, another id 11 and commit first; a sync enrolling then would see 11, move the
mark to 11, and id 10, committed a moment later, would never be written back. So every transaction that
stores transactions holds this lock shared (writers do not wait for each other), and enrolment takes it
exclusively before reading the highest id. When enrolment holds it, every writer that took an id earlier
has ended, and a later writer's ids come after. Enrolment only tries the lock: while an import is running
it enrols nothing that time, and the next sync picks up everything.

SQLite needs none of this: a transaction that writes holds the database's one write lock until it ends,
and enrolment runs in a transaction that has already written.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

LOCK_KEY = 0x6C6C_656E_726F_6C6C  # "llenroll": one key for the whole installation


async def _postgres(conn: AsyncConnection | AsyncSession) -> AsyncConnection | None:
    connection = await conn.connection() if isinstance(conn, AsyncSession) else conn
    return connection if connection.dialect.name == "postgresql" else None


async def hold_for_writing(conn: AsyncConnection | AsyncSession) -> None:
    """Called at the start of a transaction that stores transactions; released when it ends."""
    if (pg := await _postgres(conn)) is not None:
        await pg.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": LOCK_KEY})


async def try_hold_for_enrolment(conn: AsyncConnection | AsyncSession) -> bool:
    """True when no transaction is storing transactions now (and none can start until this one ends)."""
    if (pg := await _postgres(conn)) is None:
        return True
    return bool(await pg.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}))
