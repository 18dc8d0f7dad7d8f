"""Signed outbound webhooks: a JSON POST whose signature a receiver checks with its target's secret.

The scheme is Stripe's, which many receivers already know how to check:

    Ledgerlink-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the secret>
    Ledgerlink-Event-Id: evt_...   (one per delivery; the same on each retry of it, so receivers can dedupe)

Each try is signed afresh with the current time, so a retry sent a minute later is not refused as stale.
A delivery is tried up to three times with growing pauses (a receiver's `Retry-After` is honoured, up to
30 s) when the receiver is unreachable, too slow, or answers 408, 425, 429 or 5xx; any other answer than
2xx is final and reported. Redirects are not followed: a signed body goes only where staff sent it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
from typing import Any

import httpx

from ledgerlink import __version__
from ledgerlink.clock import utcnow
from ledgerlink.notify.notice import DeliveryFailed

SIGNATURE_HEADER = "Ledgerlink-Signature"
EVENT_ID_HEADER = "Ledgerlink-Event-Id"
EVENT_TYPE_HEADER = "Ledgerlink-Event-Type"
SECRET_PREFIX = "llwh_"
DEFAULT_TOLERANCE_S = 300
ATTEMPTS = 3
BACKOFF_S = 1.0  # pause before the 2nd try; doubled before the 3rd
MAX_RETRY_AFTER_S = 30.0
_RETRYABLE = frozenset({408, 425, 429})


def new_secret() -> str:
    """A signing secret: 256 random bits, shown to staff once and stored sealed."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(16)


def encode_body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The `Ledgerlink-Signature` value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes | str,
    tolerance: int = DEFAULT_TOLERANCE_S,
    *,
    now: int | None = None,
) -> bool:
    """True when `header` (the `Ledgerlink-Signature` value) signs `body` with `secret` and its time is
    within `tolerance` seconds of `now` (default: the current time).

    For receivers to copy: it needs only the standard library. Check the body exactly as received (the raw
    bytes, before any JSON parsing): re-serialised JSON is not the same bytes. Several `v1=` entries may be
    present; one matching is enough.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = int(utcnow().timestamp()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False  # stale (a replay) or from a clock far off
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def shown_url(url: str) -> str:
    """The URL without its query string, for messages and logs (a query may carry a receiver's token)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    return str(parsed.copy_with(query=None, fragment=None))


async def send_webhook(
    http: httpx.AsyncClient,
    url: str,
    secret: str,
    payload: dict[str, Any],
    *,
    event_id: str,
    timeout_s: float,
    attempts: int = ATTEMPTS,
) -> None:
    """POST `payload` (signed) to `url`; returns when a try is answered 2xx, else raises `DeliveryFailed`."""
    body = encode_body(payload)
    where = shown_url(url)
    reason = "was not tried"
    for attempt in range(1, attempts + 1):
        timestamp = int(utcnow().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"ledgerlink/{__version__}",
            SIGNATURE_HEADER: sign(secret, body, timestamp),
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: str(payload.get("type", "")),
        }
        pause = BACKOFF_S * 2 ** (attempt - 1)
        try:
            response = await http.post(
                url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False
            )
        except httpx.TimeoutException:
            reason = f"did not answer within {timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reason = f"is unreachable ({exc or type(exc).__name__})"
        else:
            status = response.status_code
            if 200 <= status < 300:
                return
            reason = f"answered {status} {response.reason_phrase}".rstrip()
            if 300 <= status < 400:
                raise DeliveryFailed(f"{where} {reason}: redirects are not followed, give the final URL")
            if status not in _RETRYABLE and status < 500:
                raise DeliveryFailed(f"{where} {reason}")
            pause = _retry_after(response, pause)
        if attempt < attempts:
            await asyncio.sleep(pause)
    raise DeliveryFailed(f"{where} {reason} ({attempts} tries)")


def _retry_after(response: httpx.Response, default: float) -> float:
    """The receiver's `Retry-After` in seconds (capped), or `default`; an HTTP date is not worth parsing
    for pauses this short."""
    value = response.headers.get("retry-after", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else default
