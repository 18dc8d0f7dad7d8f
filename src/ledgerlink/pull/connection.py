"""Finding a practice's pull connection, and holding it while a download or an acknowledgement runs."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.errors import InvalidInput, NotFound
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.models import Connection, Practice


async def pull_connection(
    session: AsyncSession, practice: Practice, name: str | None = None, *, hold: bool = False
) -> Connection:
    """The practice's pull connection (the named one when it has several).

    With `hold`, the connection row is locked until the session's transaction ends (see `hold`).
    """
    query = select(Connection.id, Connection.name).where(
        Connection.practice_id == practice.id, Connection.kind == PULL_KIND
    )
    if name is not None:
        query = query.where(Connection.name == name.strip())
    found = list(await session.execute(query.order_by(Connection.id)))
    if not found:
        named = f" named {name.strip()!r}" if name is not None else ""
        raise NotFound(
            f"the practice has no pull connection{named}; an administrator adds one with "
            "`ledgerlink connection add --kind pull`",
            field="connection",
        )
    if len(found) > 1:
        names = ", ".join(row.name for row in found)
        raise InvalidInput(
            f"the practice has several pull connections ({names}); name one with ?connection=",
            field="connection",
        )
    connection_id = found[0].id
    if hold:
        await hold_connection(session, connection_id)
    connection = await session.get(Connection, connection_id, populate_existing=True)
    assert connection is not None
    return connection


async def hold_connection(session: AsyncSession, connection_id: int) -> None:
    """Lock the connection's row for the rest of the transaction, so that the downloads, acknowledgements
    and run changes of one connection happen one after another.

    An update that changes nothing takes the row lock on PostgreSQL and the database's write lock on
    SQLite. Run as the transaction's first write, it also gives SQLite a snapshot taken after the previous
    holder committed. Without it, two downloads at once could each open a run of their own and hand the
    same writebacks out twice under different runs.
    """
    await session.execute(
        update(Connection)
        .where(Connection.id == connection_id)
        .values(enrolled_through=Connection.enrolled_through)
        .execution_options(synchronize_session=False)
    )
