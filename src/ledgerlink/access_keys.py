"""Merchant keys (a practice's PMS integration) and clerk keys (one user of it): issue, rotate, verify.

A merchant key reads `llm_<prefix>_<secret>`, a clerk key `llc_<prefix>_<secret>` (generated, hashed and
compared like staff tokens, see `ledgerlink.tokens`). The PMS presents its practice's public id with the
merchant key; the public id is made with the practice's first key. Issuing a key while others are live is a
rotation: the old keys keep working for an overlap period (default 24 hours; zero ends them at once), so a
PMS can switch keys without a gap.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink import clock
from ledgerlink.audit import record_audit
from ledgerlink.errors import InvalidInput, NotFound
from ledgerlink.store.models import AccessKey, Practice, User
from ledgerlink.tokens import digest_matches, key_digest, new_key, parse_presented

MERCHANT = "merchant"
CLERK = "clerk"
TAGS = {MERCHANT: "llm", CLERK: "llc"}
DEFAULT_OVERLAP = timedelta(hours=24)
MAX_OVERLAP = timedelta(days=30)
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
PUBLIC_ID_CHARS = 10


@dataclass(frozen=True, slots=True)
class IssuedKey:
    public_id: str  # the practice's public id, presented in X-Practice-Id
    plain: str  # shown once to whoever issued it; never stored
    prefix: str
    rotated: tuple[str, ...] = ()  # prefixes of the keys that now expire after the overlap
    old_keys_expire_at: datetime | None = None  # when the last of them stops working


def check_overlap(overlap: timedelta | None) -> timedelta:
    overlap = DEFAULT_OVERLAP if overlap is None else overlap
    if overlap < timedelta(0) or overlap > MAX_OVERLAP:
        raise InvalidInput("the overlap of old and new keys is 0 to 720 hours", field="overlap_hours")
    return overlap


def is_live(key: AccessKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


async def _public_id(session: AsyncSession, practice: Practice) -> str:
    while practice.public_id is None:
        candidate = "P" + "".join(secrets.choice(_BASE32) for _ in range(PUBLIC_ID_CHARS))
        if await session.scalar(select(Practice.id).where(Practice.public_id == candidate)) is None:
            practice.public_id = candidate
            await session.flush()
    return practice.public_id


async def live_keys(
    session: AsyncSession, practice_id: int, kind: str, user_id: int | None = None
) -> list[AccessKey]:
    now = clock.utcnow()
    query = select(AccessKey).where(
        AccessKey.practice_id == practice_id,
        AccessKey.kind == kind,
        AccessKey.revoked_at.is_(None),
        or_(AccessKey.expires_at.is_(None), AccessKey.expires_at > now),
    )
    if user_id is not None:
        query = query.where(AccessKey.user_id == user_id)
    return list(await session.scalars(query.order_by(AccessKey.created_at, AccessKey.id)))


async def list_keys(session: AsyncSession, practice: Practice, kind: str = MERCHANT) -> list[AccessKey]:
    """Every key of `kind` the practice ever had, newest first (the listing shows prefixes, never keys)."""
    query = select(AccessKey).where(AccessKey.practice_id == practice.id, AccessKey.kind == kind)
    return list(await session.scalars(query.order_by(AccessKey.created_at.desc(), AccessKey.id.desc())))


async def _issue(
    session: AsyncSession,
    practice: Practice,
    kind: str,
    user: User | None,
    *,
    actor: str,
    overlap: timedelta | None,
) -> IssuedKey:
    overlap = check_overlap(overlap)
    public_id = await _public_id(session, practice)
    now = clock.utcnow()
    old = await live_keys(session, practice.id, kind, user.id if user is not None else None)
    for key in old:
        key.expires_at = min(key.expires_at or now + overlap, now + overlap)
    prefix, plain = new_key(TAGS[kind])
    session.add(
        AccessKey(
            practice_id=practice.id,
            user_id=user.id if user is not None else None,
            kind=kind,
            prefix=prefix,
            key_hash=key_digest(plain),
            created_at=now,
        )
    )
    await session.flush()
    rotated = tuple(key.prefix for key in old)
    target = f"clerk key {prefix} of user {user.username}" if user is not None else f"merchant key {prefix}"
    await record_audit(
        session,
        practice.id,
        actor,
        f"{kind}_key.rotated" if rotated else f"{kind}_key.issued",
        target=target,
        detail={"expiring": list(rotated), "overlap_seconds": int(overlap.total_seconds())}
        if rotated
        else {},
    )
    last_expiry = max((key.expires_at for key in old if key.expires_at is not None), default=None)
    return IssuedKey(public_id, plain, prefix, rotated, last_expiry)


async def issue_merchant_key(
    session: AsyncSession, practice: Practice, *, actor: str, overlap: timedelta | None = None
) -> IssuedKey:
    """A new merchant key for the practice's PMS; live older ones expire after `overlap` (default 24 h)."""
    return await _issue(session, practice, MERCHANT, None, actor=actor, overlap=overlap)


async def issue_clerk_key(
    session: AsyncSession, user: User, *, actor: str, overlap: timedelta | None = None
) -> IssuedKey:
    """A new clerk key for `user`; the user's live older ones expire after `overlap` (default 24 h)."""
    practice = await session.get(Practice, user.practice_id)
    if practice is None:
        raise NotFound("the user's practice no longer exists")
    return await _issue(session, practice, CLERK, user, actor=actor, overlap=overlap)


async def revoke_key(session: AsyncSession, practice: Practice, prefix: str, *, actor: str) -> AccessKey:
    """End the practice's key `prefix` now (a leaked key must not wait for an overlap)."""
    key = await session.scalar(
        select(AccessKey).where(AccessKey.practice_id == practice.id, AccessKey.prefix == prefix.strip())
    )
    if key is None:
        raise NotFound(
            f"practice {practice.slug!r} has no key with prefix {prefix.strip()!r}", field="prefix"
        )
    if key.revoked_at is None:
        key.revoked_at = clock.utcnow()
        await record_audit(
            session, practice.id, actor, f"{key.kind}_key.revoked", target=f"{key.kind} key {prefix}"
        )
    return key


async def verify_key(
    session: AsyncSession, practice: Practice, kind: str, presented: str
) -> AccessKey | None:
    """The practice's live key of `kind` that `presented` is, or None for anything else.

    Unknown prefix, another practice's key, a wrong secret, an expired or revoked key: all are None, so a
    caller cannot answer in a way that tells them apart.
    """
    key_text = parse_presented(presented, TAGS[kind])
    if key_text is None:
        return None
    key = await session.scalar(select(AccessKey).where(AccessKey.prefix == key_text.prefix))
    if key is None or key.kind != kind or key.practice_id != practice.id:
        return None
    if not digest_matches(key.key_hash, key_text.plain) or not is_live(key, clock.utcnow()):
        return None
    return key
