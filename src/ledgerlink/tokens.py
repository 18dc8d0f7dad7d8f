"""Secret keys: generated with `secrets`, shown once, stored as a SHA-256 hash, compared in constant time.

A key reads `<tag>_<prefix>_<secret>`: `ll` for staff API tokens, `llm` for merchant keys and `llc` for
clerk keys (see `ledgerlink.access_keys`). The prefix is public and unique: it finds the row without
scanning, and lets staff tell their keys apart in a list. The secret is 256 random bits, so a plain SHA-256
is enough to keep a stolen database from yielding usable keys (a slow password hash protects guessable
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
STAFF_TOKEN_TAG = "ll"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    plain: str  # shown to the person who created it, once; never stored


@dataclass(frozen=True, slots=True)
class Presented:
    """A presented key that has the right shape: its public prefix and the whole (trimmed) key."""

    prefix: str
    plain: str


def key_digest(plain: str) -> str:
    """What is stored instead of a key: the hex SHA-256 of the whole key."""
    return hashlib.sha256(plain.encode()).hexdigest()


def new_key(tag: str) -> tuple[str, str]:
    """A fresh `(prefix, plain key)` for keys tagged `tag`."""
    prefix = secrets.token_hex(PREFIX_BYTES)
    return prefix, f"{tag}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"


def parse_presented(presented: str, tag: str) -> Presented | None:
    """The prefix of `presented` if it looks like a key tagged `tag`, else None.

    Surrounding whitespace is dropped first: pasted keys often carry a space or a line break.
    """
    plain = presented.strip()
    parts = plain.split("_", 2)
    if len(parts) != 3 or parts[0] != tag or len(parts[1]) != 2 * PREFIX_BYTES or not parts[2]:
        return None
    return Presented(parts[1], plain)


def digest_matches(stored_digest: str, plain: str) -> bool:
    """Whether `plain` hashes to `stored_digest`, compared in constant time so timing reveals nothing."""
    return hmac.compare_digest(stored_digest, key_digest(plain))


async def issue_token(session: AsyncSession, practice: Practice, name: str, *, actor: str) -> IssuedToken:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput(
            "a token needs a name of 1 to 100 characters, such as 'payment platform'", field="name"
        )
    prefix, plain = new_key(STAFF_TOKEN_TAG)
    token = ApiToken(practice_id=practice.id, name=name, prefix=prefix, token_hash=key_digest(plain))
    session.add(token)
    await session.flush()
    await record_audit(
        session, practice.id, actor, "api_token.created", target=f"token {prefix}", detail={"name": name}
    )
    return IssuedToken(token, plain)


async def token_for(session: AsyncSession, presented: str) -> ApiToken | None:
    """The live token `presented` is, or None (unknown, malformed, wrong secret or revoked)."""
    key = parse_presented(presented, STAFF_TOKEN_TAG)
    if key is None:
        return None
    token = await session.scalar(select(ApiToken).where(ApiToken.prefix == key.prefix))
    if token is None or token.revoked_at is not None:
        return None
    if not digest_matches(token.token_hash, key.plain):
        return None
    return token


async def revoke_token(session: AsyncSession, token: ApiToken, *, actor: str) -> None:
    token.revoked_at = utcnow()
    await record_audit(session, token.practice_id, actor, "api_token.revoked", target=f"token {token.prefix}")
