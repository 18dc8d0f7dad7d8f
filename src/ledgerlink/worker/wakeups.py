"""What wakes a worker: the practices writers announce (PostgreSQL `LISTEN`), or the poll timer.

Writers of transactions `NOTIFY` their practice id on commit (store/ingest_lock.py), so on PostgreSQL an
instant writeback starts within milliseconds of the ingest answer. Notifications are a shortcut, not the
source of truth: they are lost while the listening connection is down, so after every (re)connection and
on every poll the worker scans for all due work. SQLite has no notifications; there the poll is short.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
from sqlalchemy.engine import make_url

from ledgerlink.log import get_logger
from ledgerlink.store.ingest_lock import WORK_CHANNEL

log = get_logger(__name__)

RECONNECT_DELAY_S = 1.0


class Wakeups:
    """The practices announced since the worker last looked; `None` in the set's place means "scan all"."""

    def __init__(self) -> None:
        self._practices: set[int] = set()
        self._everything = True  # the first look is a full scan
        self._event = asyncio.Event()
        self._event.set()

    def announce(self, practice_id: int | None) -> None:
        """`None`: something may have been missed; look at every connection."""
        if practice_id is None:
            self._everything = True
        else:
            self._practices.add(practice_id)
        self._event.set()

    async def wait(self, seconds: float) -> set[int] | None:
        """The announced practices (None: all) once something is announced or `seconds` pass."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
        self._event.clear()
        practices, everything = self._practices, self._everything or not self._practices
        self._practices, self._everything = set(), False
        return None if everything else practices


def listen_conninfo(database_url: str) -> str:
    """A libpq connection string for psycopg from the SQLAlchemy URL (`postgresql+psycopg://...`)."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def listen(database_url: str, wakeups: Wakeups) -> None:
    """Announce each notified practice until cancelled; reconnect (and ask for a full scan) when the
    connection drops."""
    conninfo = listen_conninfo(database_url)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {WORK_CHANNEL}")
                log.info("worker.listening", channel=WORK_CHANNEL)
                wakeups.announce(None)  # anything committed before LISTEN took effect
                async for notice in conn.notifies():
                    wakeups.announce(int(notice.payload) if notice.payload.isdigit() else None)
        except psycopg.Error as exc:
            log.warning("worker.listen_lost", error=type(exc).__name__)
            wakeups.announce(None)
            await asyncio.sleep(RECONNECT_DELAY_S)
