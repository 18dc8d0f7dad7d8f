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
from collections.abc import Sequence
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.store.models import Connection

LEASE_SECONDS = 120
_C = cast(Table, Connection.__table__)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_is_dead(owner: str) -> bool:
    """True when `owner` ran on this machine and its process is gone."""
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
    if holder is not None and holder.sync_owner and holder_is_dead(holder.sync_owner):
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


async def acquire_many(session: AsyncSession, claims: Sequence[tuple[int, str]]) -> dict[int, str]:
    """Take the leases of many connections at once, each `(connection_id, owner)`; commits nothing.

    Returns each connection's holder after the attempt (absent: no such connection). Where the holder is
    not the asking owner, the caller falls back to `acquire`, which frees a dead holder's lease or raises.
    """
    if not claims:
        return {}
    now = utcnow()
    free = or_(_C.c.sync_owner.is_(None), _C.c.sync_lease_until < now, _C.c.sync_owner == bindparam("owner"))
    connection = await session.connection()
    await connection.execute(
        update(_C)
        .where(_C.c.id == bindparam("cid"), free)
        .values(sync_owner=bindparam("owner"), sync_lease_until=now + timedelta(seconds=LEASE_SECONDS)),
        [{"cid": cid, "owner": owner} for cid, owner in claims],
    )
    return await holders(session, [cid for cid, _ in claims])


async def renew_many(session: AsyncSession, claims: Sequence[tuple[int, str]]) -> set[int]:
    """Renew many leases; returns the connections whose lease the given owner no longer holds."""
    if not claims:
        return set()
    connection = await session.connection()
    await connection.execute(
        update(_C)
        .where(_C.c.id == bindparam("cid"), _C.c.sync_owner == bindparam("owner"))
        .values(sync_lease_until=utcnow() + timedelta(seconds=LEASE_SECONDS)),
        [{"cid": cid, "owner": owner} for cid, owner in claims],
    )
    held = await holders(session, [cid for cid, _ in claims])
    return {cid for cid, owner in claims if held.get(cid) != owner}


async def release_many(session: AsyncSession, claims: Sequence[tuple[int, str]]) -> None:
    if not claims:
        return
    connection = await session.connection()
    await connection.execute(
        update(_C)
        .where(_C.c.id == bindparam("cid"), _C.c.sync_owner == bindparam("owner"))
        .values(sync_owner=None, sync_lease_until=None),
        [{"cid": cid, "owner": owner} for cid, owner in claims],
    )


async def holders(session: AsyncSession, connection_ids: Sequence[int]) -> dict[int, str]:
    connection = await session.connection()
    rows = await connection.execute(select(_C.c.id, _C.c.sync_owner).where(_C.c.id.in_(connection_ids)))
    return {cid: owner or "" for cid, owner in rows}
