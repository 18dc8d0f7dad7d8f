"""Dashboard passwords: argon2id hashes (argon2-cffi's defaults), never the password itself.

A user without a password cannot sign in to the dashboard; clerk keys and API tokens are separate
credentials. Setting a password is audited (without the password) and ends the user's other sessions,
so a password changed because it leaked locks out whoever had it.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.errors import InvalidInput
from ledgerlink.store.models import User, WebSession

MIN_LENGTH = 10
MAX_LENGTH = 200
_hasher = PasswordHasher()


@functools.cache
def _decoy() -> str:
    """Verified against when the user does not exist, so that a wrong username takes as long as a wrong
    password. Made on first use, not at import: every CLI command imports this module."""
    return _hasher.hash("ledgerlink decoy password")


def check_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_LENGTH} characters", field="password")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"a password has at most {MAX_LENGTH} characters", field="password")
    if not password.strip():
        raise InvalidInput("a password cannot be only spaces", field="password")
    return password


def hash_password(password: str) -> str:
    return _hasher.hash(check_password(password))


def password_matches(stored_hash: str | None, password: str) -> bool:
    """Whether `password` is the one `stored_hash` was made from; always costs one argon2 verification."""
    try:
        return _hasher.verify(stored_hash or _decoy(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def set_password(session: AsyncSession, user: User, password: str, *, actor: str) -> None:
    # Hashed in a thread: argon2 is deliberately slow, and the event loop serves everyone else meanwhile.
    user.password_hash = await asyncio.to_thread(hash_password, password)
    await session.execute(delete(WebSession).where(WebSession.user_id == user.id))
    await record_audit(session, user.practice_id, actor, "user.password_set", target=f"user {user.username}")
