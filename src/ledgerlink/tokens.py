"""Staff API tokens: generated with `secrets`, shown once, stored as a SHA-256 hash, compared in constant time.

A token reads `ll_<prefix>_<secret>`. The prefix is public and unique: it finds the row without scanning,
and lets staff tell their tokens apart in a list. The secret is 256 random bits, so a plain SHA-256 is
enough to keep a stolen database from yielding usable tokens (a slow password hash protects guessable
passwords; nothing about a random secret can be guessed).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.errors import InvalidInput
from ledgerlink.store.models import ApiToken, Practice

PREFIX_BYTES = 6  # 12 hex characters
SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    plain: str  # shown to the person who created it, once; never stored


def _digest(plain: str) -> str:
    return hashlib.sha256(plain.encode()).hexdigest()


async def issue_token(session: AsyncSession, practice: Practice, name: str, *, actor: str) -> IssuedToken:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(
            "a token needs a name of 1 to 100 characters, such as 'payment platform'", field="name"
        )
    prefix = secrets.token_hex(PREFIX_BYTES)
    plain = f"ll_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    token = ApiToken(practice_id=practice.id, name=name, prefix=prefix, token_hash=_digest(plain))
    session.add(token)
    await session.flush()
    await record_audit(
        session, practice.id, actor, "api_token.created", target=f"token {prefix}", detail={"name": name}
    )
    return IssuedToken(token, plain)


async def token_for(session: AsyncSession, presented: str) -> ApiToken | None:
    """The live token `presented` is, or None (unknown, malformed, wrong secret or revoked)."""
    plain = presented.strip()  # pasted tokens often carry a space or a line break
    parts = plain.split("_", 2)
    if len(parts) != 3 or parts[0] != "ll" or len(parts[1]) != 2 * PREFIX_BYTES:
        return None
    token = await session.scalar(select(ApiToken).where(ApiToken.prefix == parts[1]))
    if token is None or token.revoked_at is not None:
        return None
    if not hmac.compare_digest(token.token_hash, _digest(plain)):
        return None
    return token


async def revoke_token(session: AsyncSession, token: ApiToken, *, actor: str) -> None:
    token.revoked_at = utcnow()
    await record_audit(session, token.practice_id, actor, "api_token.revoked", target=f"token {token.prefix}")
