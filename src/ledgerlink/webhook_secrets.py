"""The signing secrets of a practice's inbound Stripe webhooks (`whsec_...`): added, rotated, listed.

Secrets are sealed with the installation's key (`SecretBox`) and never shown again. Several can be live:
Stripe's dashboard lets the old secret keep signing for a while after a roll, so a rotation keeps the old
secrets verifying until their `expires_at` (default: 24 hours later) instead of dropping them at once.
Every change is audited in the same transaction as the change.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.secrets import SecretBox
from ledgerlink.store.models import Practice, WebhookSecret

SOURCE = "stripe"
PREFIX = "whsec_"
DEFAULT_OVERLAP_HOURS = 24
DEFAULT_OVERLAP = timedelta(hours=DEFAULT_OVERLAP_HOURS)
MAX_OVERLAP_HOURS = 24 * 30
_MAX_LENGTH = 200


def clean_secret(text: str) -> str:
    """The secret as pasted, trimmed; refused unless it looks like a Stripe signing secret."""
    secret = text.strip()
    if not secret.startswith(PREFIX) or len(secret) <= len(PREFIX):
        raise InvalidInput(
            "this is not a Stripe webhook signing secret: it must start with whsec_ (copy it from the "
            "endpoint's page in Stripe's dashboard, 'Signing secret')",
            field="secret",
        )
    if len(secret) > _MAX_LENGTH or any(ch.isspace() for ch in secret):
        raise InvalidInput(
            f"the signing secret must be one word of at most {_MAX_LENGTH} characters", field="secret"
        )
    return secret


def overlap_of(hours: int) -> timedelta:
    if not 0 <= hours <= MAX_OVERLAP_HOURS:
        raise InvalidInput(
            f"the overlap must be 0 to {MAX_OVERLAP_HOURS} hours (the old secret verifies that long)",
            field="overlap_hours",
        )
    return timedelta(hours=hours)


async def live_secrets(session: AsyncSession, practice_id: int) -> list[WebhookSecret]:
    """The practice's secrets that still verify, newest first."""
    now = utcnow()
    rows = await session.scalars(
        select(WebhookSecret)
        .where(
            WebhookSecret.practice_id == practice_id,
            WebhookSecret.source == SOURCE,
            or_(WebhookSecret.expires_at.is_(None), WebhookSecret.expires_at > now),
        )
        .order_by(WebhookSecret.id.desc())
    )
    return list(rows)


async def list_secrets(session: AsyncSession, practice: Practice) -> list[WebhookSecret]:
    """All of the practice's Stripe secrets, expired ones included, newest first (the rows hold no plain
    secret; callers show id, created and expires only)."""
    rows = await session.scalars(
        select(WebhookSecret)
        .where(WebhookSecret.practice_id == practice.id, WebhookSecret.source == SOURCE)
        .order_by(WebhookSecret.id.desc())
    )
    return list(rows)


async def add_secret(
    session: AsyncSession, box: SecretBox, practice: Practice, secret: str, *, actor: str
) -> WebhookSecret:
    """Add a live secret beside the others (a second endpoint, or the first one)."""
    plain = clean_secret(secret)
    for live in await live_secrets(session, practice.id):
        if hmac.compare_digest(box.open(live.secret_sealed), plain):
            raise Conflict(f"this signing secret is already set (secret {live.id})", field="secret")
    row = WebhookSecret(practice_id=practice.id, source=SOURCE, secret_sealed=box.seal(plain))
    session.add(row)
    await session.flush()
    await record_audit(session, practice.id, actor, "webhook_secret.added", f"stripe secret {row.id}")
    return row


async def rotate_secret(
    session: AsyncSession,
    box: SecretBox,
    practice: Practice,
    secret: str,
    *,
    actor: str,
    overlap: timedelta = DEFAULT_OVERLAP,
) -> WebhookSecret:
    """Add `secret` and let every other live secret expire after `overlap` (an earlier expiry is kept)."""
    until = utcnow() + overlap
    older = await live_secrets(session, practice.id)
    row = await add_secret(session, box, practice, secret, actor=actor)
    expiring = []
    for old in older:
        if old.expires_at is None or old.expires_at > until:
            old.expires_at = until
        expiring.append(old.id)
    await record_audit(
        session,
        practice.id,
        actor,
        "webhook_secret.rotated",
        f"stripe secret {row.id}",
        {"expiring": expiring, "expires_at": until.isoformat()},
    )
    return row
