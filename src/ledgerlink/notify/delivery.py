"""Handing one notice to one target, whatever its kind; a failure is a result to report, not an exception.

A webhook delivery gets its own event id here, used by every try of it (receivers dedupe on it); the next
digest is a new delivery with a new id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ledgerlink.errors import InvalidInput
from ledgerlink.notify.email import send_email
from ledgerlink.notify.notice import DeliveryFailed, Notice
from ledgerlink.notify.targets import EMAIL, WEBHOOK, shown_address
from ledgerlink.notify.webhooks import new_event_id, send_webhook
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import Settings
from ledgerlink.store.models import NotificationTarget


@dataclass(frozen=True, slots=True)
class Delivery:
    target_id: int
    kind: str
    address: str  # as shown to staff (a webhook URL without its query string)
    ok: bool
    detail: str  # "delivered", or why not


@asynccontextmanager
async def http_client(http: httpx.AsyncClient | None, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The caller's client, or one of our own for the duration (closed afterwards)."""
    if http is not None:
        yield http
        return
    async with httpx.AsyncClient(timeout=settings.webhook_timeout_seconds) as own:
        yield own


async def deliver(
    target: NotificationTarget, notice: Notice, *, settings: Settings, box: SecretBox, http: httpx.AsyncClient
) -> Delivery:
    try:
        if target.kind == EMAIL:
            await send_email(settings, target.address, notice)
        elif target.kind == WEBHOOK:
            await send_webhook(
                http,
                target.address,
                _secret(target, box),
                {"id": (event_id := new_event_id()), **notice.payload},
                event_id=event_id,
                timeout_s=settings.webhook_timeout_seconds,
            )
        else:
            raise DeliveryFailed(f"unknown target kind {target.kind!r}")
    except DeliveryFailed as exc:
        return Delivery(target.id, target.kind, shown_address(target), False, exc.reason)
    return Delivery(target.id, target.kind, shown_address(target), True, "delivered")


def _secret(target: NotificationTarget, box: SecretBox) -> str:
    if not target.secret_sealed:
        raise DeliveryFailed("the webhook target has no signing secret; remove it and add it again")
    try:
        return box.open(target.secret_sealed)
    except InvalidInput as exc:
        raise DeliveryFailed(exc.message) from None
