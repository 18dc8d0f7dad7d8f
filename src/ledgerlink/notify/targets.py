"""Where a practice's alert digest goes: e-mail addresses and webhook URLs (add, list, remove; audited).

A webhook target gets a signing secret generated here with `secrets`: it is shown once, to whoever adds
the target, and stored sealed with the installation's key (`SecretBox`), because ledgerlink must read it
again to sign. Addresses are checked when added, so a digest never fails for a typo that could have been
refused at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.notify.email import is_address
from ledgerlink.notify.webhooks import new_secret, shown_url
from ledgerlink.secrets import SecretBox
from ledgerlink.store.models import NotificationTarget, Practice

EMAIL = "email"
WEBHOOK = "webhook"
KINDS = (EMAIL, WEBHOOK)
MAX_ADDRESS = 500  # the column's size
MAX_TARGETS = 20  # per practice: every digest goes to each of them, one after another


@dataclass(frozen=True, slots=True)
class AddedTarget:
    target: NotificationTarget
    secret: str | None  # a webhook's signing secret, shown once; never stored in the clear


def check_email(address: str) -> str:
    address = address.strip()
    if len(address) > MAX_ADDRESS or not is_address(address):
        raise InvalidInput(
            f"{address[:100]!r} is not an e-mail address (one address such as office@example.com)",
            field="address",
        )
    return address


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host and no user:password (the signature authenticates us)."""
    url = url.strip()
    problem = "an absolute http:// or https:// URL such as https://hooks.example.com/ledgerlink"
    if len(url) > MAX_ADDRESS:
        raise InvalidInput(f"the URL is longer than {MAX_ADDRESS} characters", field="address")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidInput(f"{url[:100]!r} is not a URL; give {problem}", field="address") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(f"{url[:100]!r} is not {problem}", field="address")
    if parsed.userinfo:
        raise InvalidInput(
            "the URL carries a user name or password; leave them out (receivers check the signature)",
            field="address",
        )
    return url


def shown_address(target: NotificationTarget) -> str:
    """The address as lists and messages show it (a webhook URL without its query string)."""
    return shown_url(target.address) if target.kind == WEBHOOK else target.address


async def add_target(
    session: AsyncSession, practice: Practice, kind: str, address: str, *, box: SecretBox, actor: str
) -> AddedTarget:
    if kind == EMAIL:
        address = check_email(address)
    elif kind == WEBHOOK:
        address = check_url(address)
    else:
        raise InvalidInput(f"a target is 'email' or 'webhook', not {kind!r}", field="kind")
    existing = await session.scalar(
        select(NotificationTarget.id).where(
            NotificationTarget.practice_id == practice.id,
            NotificationTarget.kind == kind,
            NotificationTarget.address == address,
        )
    )
    if existing is not None:
        shown = shown_url(address) if kind == WEBHOOK else address
        raise Conflict(
            f"{practice.slug} already sends its digest to {shown} (target {existing})", field="address"
        )
    count = await session.scalar(
        select(func.count())
        .select_from(NotificationTarget)
        .where(NotificationTarget.practice_id == practice.id)
    )
    if (count or 0) >= MAX_TARGETS:
        raise Conflict(
            f"{practice.slug} has {MAX_TARGETS} notification targets already; remove one first",
            field="address",
        )
    secret = new_secret() if kind == WEBHOOK else None
    target = NotificationTarget(
        practice_id=practice.id,
        kind=kind,
        address=address,
        secret_sealed=box.seal(secret) if secret else None,
    )
    session.add(target)
    await session.flush()
    await record_audit(
        session,
        practice.id,
        actor,
        "notification_target.added",
        f"notification_target:{target.id}",
        {"kind": kind, "address": shown_address(target)},
    )
    return AddedTarget(target, secret)


async def list_targets(session: AsyncSession, practice_id: int) -> list[NotificationTarget]:
    return list(
        await session.scalars(
            select(NotificationTarget)
            .where(NotificationTarget.practice_id == practice_id)
            .order_by(NotificationTarget.id)
        )
    )


async def get_target(session: AsyncSession, practice_id: int, target_id: int) -> NotificationTarget:
    """The practice's target `target_id`; another practice's id is answered as one that does not exist."""
    target = await session.scalar(
        select(NotificationTarget).where(
            NotificationTarget.id == target_id, NotificationTarget.practice_id == practice_id
        )
    )
    if target is None:
        raise NotFound(f"no notification target {target_id} in this practice", field="target_id")
    return target


async def remove_target(session: AsyncSession, practice_id: int, target_id: int, *, actor: str) -> None:
    target = await get_target(session, practice_id, target_id)
    await record_audit(
        session,
        practice_id,
        actor,
        "notification_target.removed",
        f"notification_target:{target.id}",
        {"kind": target.kind, "address": shown_address(target)},
    )
    await session.delete(target)
