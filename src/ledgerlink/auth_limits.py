"""Failed key attempts, counted per scope in the database so every API process sees the same count.

A scope is what an attacker would hold constant: the practice id they present, and their client address.
`MAX_FAILURES` failures of one scope within `WINDOW` block that scope for `BLOCK`: every request in it is
answered 429, even with the right key, until the block ends. Counting is one atomic upsert
(`INSERT ... ON CONFLICT DO UPDATE`, on SQLite and PostgreSQL alike), so concurrent failures from several
processes never lose a count.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.store.models import AuthFailure, UTCDateTime

MAX_FAILURES = 10
WINDOW = timedelta(minutes=15)
BLOCK = timedelta(minutes=15)
_SCOPE_LENGTH = 200


def practice_scope(presented_practice_id: str) -> str:
    return f"practice:{presented_practice_id}"[:_SCOPE_LENGTH]


def address_scope(address: str) -> str:
    return f"address:{address}"[:_SCOPE_LENGTH]


async def blocked_until(session: AsyncSession, scopes: Sequence[str], now: datetime) -> datetime | None:
    """The latest end of a block on any of `scopes` still running at `now`, or None."""
    ends = await session.scalars(
        select(AuthFailure.blocked_until).where(
            AuthFailure.scope.in_(scopes), AuthFailure.blocked_until > now
        )
    )
    return max((end for end in ends if end is not None), default=None)


async def record_failure(session: AsyncSession, scopes: Sequence[str], now: datetime) -> None:
    """Count one failed attempt against each scope; the `MAX_FAILURES`-th in a window starts a block."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    at = literal(now, UTCDateTime())
    window_over = AuthFailure.window_started_at <= literal(now - WINDOW, UTCDateTime())
    for scope in dict.fromkeys(scopes):
        blocks = MAX_FAILURES <= 1
        statement = insert(AuthFailure).values(
            scope=scope, failures=1, window_started_at=now, blocked_until=now + BLOCK if blocks else None
        )
        # In ON CONFLICT DO UPDATE every column named on the right-hand side is the row's old value.
        statement = statement.on_conflict_do_update(
            index_elements=[AuthFailure.scope],
            set_={
                "failures": case((window_over, 1), else_=AuthFailure.failures + 1),
                "window_started_at": case((window_over, at), else_=AuthFailure.window_started_at),
                "blocked_until": case(
                    (window_over, statement.excluded.blocked_until),
                    (
                        and_(AuthFailure.failures + 1 >= MAX_FAILURES, AuthFailure.blocked_until.is_(None)),
                        literal(now + BLOCK, UTCDateTime()),
                    ),
                    else_=AuthFailure.blocked_until,
                ),
            },
        )
        await session.execute(statement)


async def forget_failures(session: AsyncSession, scope: str) -> None:
    """Clear one scope's count (after its holder proved the key); other scopes keep theirs."""
    # Look first: a DELETE takes SQLite's write lock even when it matches nothing, and most calls do.
    if await session.scalar(select(AuthFailure.scope).where(AuthFailure.scope == scope)) is not None:
        await session.execute(delete(AuthFailure).where(AuthFailure.scope == scope))
