"""One sender per practice digest at a time, so two workers never mail the same alert twice.

On PostgreSQL each practice's digest is claimed with a session-level advisory lock, tried without waiting:
a worker that finds it taken skips the practice this round. The lock is held on a connection of its own
that stays outside any transaction, and no row lock is held while a digest is being sent. Row locks
(`SELECT ... FOR UPDATE SKIP LOCKED` on the alerts) would have to be kept in an open transaction across
SMTP and HTTP calls of many seconds, and a sync marking one of those alerts delivered to the PMS would
wait behind them. The alerts are read after the lock is taken and marked sent before it is released, so
the next holder sees them sent. A process that dies mid-send loses its connection, and with it the lock:
its alerts were not marked and go out again in the next digest (at least once, never lost).

SQLite serves one machine, so an exclusive `flock` on a file beside the database does the same for the
whole round (a second process skips the round). Where `fcntl` does not exist (Windows), SQLite digests
are not guarded against a second process.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ledgerlink.store.db import Database

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAMESPACE = (
    0x6C6C_6469  # "lldi": the first key of the two-key advisory lock; the practice id is the second
)


@asynccontextmanager
async def digest_round(db: Database) -> AsyncIterator[bool]:
    """True when this process may send digests now (always, on PostgreSQL: practices are claimed one by one)."""
    path = make_url(db.url).database if db.is_sqlite else None
    if not path or path == ":memory:" or fcntl is None:
        yield True
        return
    # os.open: a local file's open does not block the loop in any way that matters, and an fd is all flock needs
    fd = os.open(path + ".digest-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True  # the lock ends with the descriptor, also when the process dies
    finally:
        os.close(fd)


@asynccontextmanager
async def practice_claim(db: Database, practice_id: int) -> AsyncIterator[bool]:
    """True when this process holds the practice's digest until the block ends; False: another one does."""
    if db.is_sqlite:
        yield True
        return
    key = {"ns": LOCK_NAMESPACE, "practice": _int4(practice_id)}
    async with db.engine.connect() as conn:
        held = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:ns, :practice)"), key))
        await conn.commit()  # a session lock outlives the transaction; the connection idles outside one
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            try:
                await conn.execute(text("SELECT pg_advisory_unlock(:ns, :practice)"), key)
                await conn.commit()
            except BaseException:
                await conn.invalidate()  # closing the session releases its locks; never pool a held lock
                raise


def _int4(value: int) -> int:
    """A practice id as the signed 32-bit key PostgreSQL's two-key lock takes (ids beyond 2**32 share keys,
    which only makes two practices skip each other for a moment)."""
    low = value & 0xFFFF_FFFF
    return low - 2**32 if low >= 2**31 else low
