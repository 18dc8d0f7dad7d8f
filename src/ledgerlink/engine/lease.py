"""One writer per connection: a lease row on the connection, taken before a sync writes anything.

While a process holds a connection's lease, any writeback of that connection still marked in flight was
left by a writer that died, so its outcome is uncertain and must be looked up in the PMS before posting.
A lease is free when it has expired, or when its holder ran on this machine and its process is gone
(so a sync killed with SIGKILL can be re-run at once).
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.store.models import Connection

LEASE_SECONDS = 120


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _holder_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def acquire(session: AsyncSession, connection_id: int, owner: str) -> None:
    """Take the connection's lease or raise `SyncAlreadyRunning`. Commits nothing; the caller does."""
    now = utcnow()
    until = now + timedelta(seconds=LEASE_SECONDS)
    free = or_(
        Connection.sync_owner.is_(None), Connection.sync_lease_until < now, Connection.sync_owner == owner
    )
    result = await session.execute(
        update(Connection)
        .where(Connection.id == connection_id, free)
        .values(sync_owner=owner, sync_lease_until=until)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return
    holder = await session.get(Connection, connection_id, populate_existing=True)
    if holder is not None and holder.sync_owner and _holder_is_dead(holder.sync_owner):
        stale = await session.execute(
            update(Connection)
            .where(Connection.id == connection_id, Connection.sync_owner == holder.sync_owner)
            .values(sync_owner=owner, sync_lease_until=until)
            .execution_options(synchronize_session=False)
        )
        if stale.rowcount == 1:  # type: ignore[attr-defined]
            return
    who = holder.sync_owner if holder is not None else "another process"
    raise SyncAlreadyRunning(f"a sync of this connection is already running ({who}); try again when it ends")


async def renew(session: AsyncSession, connection_id: int, owner: str) -> bool:
    """Push the lease's end out again; False when `owner` no longer holds it (it expired and was taken)."""
    result = await session.execute(
        update(Connection)
        .where(Connection.id == connection_id, Connection.sync_owner == owner)
        .values(sync_lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS))
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def release(session: AsyncSession, connection_id: int, owner: str) -> None:
    await session.execute(
        update(Connection)
        .where(Connection.id == connection_id, Connection.sync_owner == owner)
        .values(sync_owner=None, sync_lease_until=None)
        .execution_options(synchronize_session=False)
    )
