"""Dashboard sessions, kept in the database so that any number of `ledgerlink serve` processes share them
and signing out (or a password change) ends a session everywhere at once.

The browser holds a random token in an HttpOnly, SameSite=Lax cookie; the table holds its SHA-256. Each
session has its own CSRF token, which every form posts back (see `ledgerlink.web.staff`). A session ends
after `IDLE` without a request, or `LIFETIME` after sign-in, whichever comes first.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.store.models import Practice, User, WebSession

COOKIE = "ll_session"
IDLE = timedelta(hours=2)
LIFETIME = timedelta(hours=12)
# last_seen_at is written at most this often, so reading pages does not turn into a write per request.
_TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class SignedIn:
    web_session: WebSession
    user: User
    practice: Practice


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(session: AsyncSession, user: User) -> str:
    """A new session for `user`; returns the token for the cookie (the only copy)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        WebSession(
            token_hash=_digest(token),
            practice_id=user.practice_id,
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + LIFETIME,
        )
    )
    await session.flush()
    return token


async def find_session(session: AsyncSession, token: str) -> SignedIn | None:
    """The live session `token` names with its user and practice, or None (unknown, expired, idle too
    long, or its user deactivated). Expired rows are deleted as they are found."""
    if not token:
        return None
    row = (
        await session.execute(
            select(WebSession, User, Practice)
            .join(User, User.id == WebSession.user_id)
            .join(Practice, Practice.id == WebSession.practice_id)
            .where(WebSession.token_hash == _digest(token), User.practice_id == WebSession.practice_id)
        )
    ).first()
    if row is None:
        return None
    web_session, user, practice = row
    now = utcnow()
    if now >= web_session.expires_at or now - web_session.last_seen_at >= IDLE or not user.active:
        await session.delete(web_session)
        return None
    if now - web_session.last_seen_at >= _TOUCH_EVERY:
        web_session.last_seen_at = now
    return SignedIn(web_session, user, practice)


async def end_session(session: AsyncSession, token: str) -> None:
    if token:
        await session.execute(delete(WebSession).where(WebSession.token_hash == _digest(token)))
