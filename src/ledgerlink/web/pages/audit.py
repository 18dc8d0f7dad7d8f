"""Dashboard page: the Audit log. Who changed settings, keys, users and patients, retried or cleared what,
newest first, filtered by the practice's local dates, by who did it and by what was done.

The query is the HTTP API's (`api.audit_log.audit_entries`), always scoped to the signed-in user's
practice. Details are shown as readable pairs; anything named like a secret is never shown, though the
services do not audit secrets in the first place.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import distinct, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from ledgerlink.api.audit_log import AuditFilter, audit_entries, parse_moment
from ledgerlink.api.auth import database
from ledgerlink.store.models import AuditEntry
from ledgerlink.web.rendering import render
from ledgerlink.web.staff import Auditor

router = APIRouter(include_in_schema=False)

ENTRIES_PER_PAGE = 50
_CHOICES = 300  # actors and actions offered in the filters

ACTION_NAMES = {
    "practice.create": "Practice created",
    "practice.update": "Practice settings changed",
    "connection.add": "PMS connection added",
    "connection.update": "PMS connection changed",
    "user.created": "User added",
    "user.updated": "User changed",
    "user.password_set": "Password set",
    "user.signed_in": "Signed in",
    "user.signed_out": "Signed out",
    "api_token.created": "API token created",
    "api_token.revoked": "API token revoked",
    "clerk_key.issued": "Clerk key issued",
    "clerk_key.rotated": "Clerk key rotated",
    "clerk_key.revoked": "Clerk key revoked",
    "merchant_key.issued": "Merchant key issued",
    "merchant_key.rotated": "Merchant key rotated",
    "merchant_key.revoked": "Merchant key revoked",
    "webhook_secret.added": "Webhook secret added",
    "webhook_secret.rotated": "Webhook secret rotated",
    "notification_target.added": "Alert recipient added",
    "notification_target.removed": "Alert recipient removed",
    "patient.update": "Patient changed",
    "patient.account_number": "Account number set",
    "patient.account_number.remove": "Account number removed",
    "patients.import.upload": "Patient file uploaded",
    "patients.import": "Patient import finished",
    "writeback.retry": "Payment retried",
    "writeback.clear": "Payment cleared (posted by hand)",
    "pull.download": "Transactions downloaded by the PMS",
    "pull.acknowledge": "Downloaded transactions confirmed",
    "pull.run_finished": "PMS download finished",
    "alert.delivered_to_pms": "Alert delivered to the PMS",
}
DETAIL_NAMES = {
    "previous_error": "Previous error",
    "pms_ref": "PMS reference",
    "skip_inactive": "Skip inactive",
    "overlap_seconds": "Overlap (seconds)",
    "rows": "Rows",
    "bytes": "Bytes",
}
# Keys whose values are never shown, whatever a service put under them.
_SECRET_KEY = re.compile(r"secret|password|passwd|token|key|hash|credential|signature|cookie", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"^(ll_|whsec_|sk_|rk_)\S{8,}")
HIDDEN = "(hidden)"

Day = Annotated[str | None, Query(max_length=40)]
Choice = Annotated[str | None, Query(max_length=200)]
Before = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


def action_name(action: str) -> str:
    """What an action did, in words ("practice.update" is "Practice settings changed")."""
    known = ACTION_NAMES.get(action)
    if known:
        return known
    words = action.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def target_text(target: str) -> str:
    """What an action was done to, in words: "patient_import:2" is "patient import 2"."""
    kind, colon, name = target.partition(":")
    if not colon or " " in kind:
        return target
    return f"{kind.replace('_', ' ')} {name}"


def detail_pairs(detail: dict[str, Any]) -> list[tuple[str, str]]:
    """An entry's detail as (label, value) lines, secrets hidden."""
    return [(_label(key), _shown(key, value)) for key, value in detail.items()]


def _label(key: str) -> str:
    if key in DETAIL_NAMES:
        return DETAIL_NAMES[key]
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _shown(key: str, value: Any) -> str:
    if _SECRET_KEY.search(key):
        return HIDDEN
    if isinstance(value, dict):
        if set(value) == {"previous", "new"}:
            return f"{_shown(key, value['previous'])} → {_shown(key, value['new'])}"
        return "; ".join(f"{_label(k).lower()}: {_shown(k, v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_shown(key, item) for item in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    if _SECRET_VALUE.match(text):
        return HIDDEN
    return text if text else "(empty)"


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    staff: Auditor,
    start: Day = None,
    end: Day = None,
    actor: Choice = None,
    action: Choice = None,
    before: Before = None,
) -> Response:
    practice = staff.practice
    errors: dict[str, str] = {}
    first_day = _day(start, "start", errors)
    last_day = _day(end, "end", errors)
    if first_day and last_day and last_day < first_day:
        errors["end"] = "The last day must be on or after the first day."
    wanted = AuditFilter(
        since=parse_moment(first_day.isoformat(), practice.timezone) if first_day and not errors else None,
        until=(
            parse_moment((last_day + timedelta(days=1)).isoformat(), practice.timezone)
            if last_day and not errors
            else None
        ),
        action=action or None,
        actor=actor or None,
    )
    async with database(request).sessions() as session:
        entries = (
            [] if errors else await audit_entries(session, practice.id, wanted, ENTRIES_PER_PAGE + 1, before)
        )
        actors = await _distinct(session, practice.id, AuditEntry.actor)
        actions = await _distinct(session, practice.id, AuditEntry.action)
    filters = {"start": start or "", "end": end or "", "actor": actor or "", "action": action or ""}
    chosen = {name: value for name, value in filters.items() if value}
    older = None
    if len(entries) > ENTRIES_PER_PAGE:
        older = "/audit?" + urlencode({**chosen, "before": entries[-2].id})
    entries = entries[:ENTRIES_PER_PAGE]
    return render(
        request,
        "audit.html",
        staff,
        status=400 if errors else 200,
        errors=errors,
        filters=filters,
        filtered=any(filters.values()),
        actor_options=[("", "Anyone"), *((a, a) for a in actors)],
        action_options=[
            ("", "Any action"),
            *sorted(((a, action_name(a)) for a in actions), key=lambda pair: pair[1]),
        ],
        rows=[
            {
                "entry": e,
                "what": action_name(e.action),
                "target": target_text(e.target),
                "details": detail_pairs(e.detail or {}),
            }
            for e in entries
        ],
        older=older,
        newest=("/audit?" + urlencode(chosen) if chosen else "/audit") if before else None,
    )


def _day(text: str | None, field: str, errors: dict[str, str]) -> date | None:
    if not text:
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        errors[field] = "Enter a date as YYYY-MM-DD, e.g. 2026-12-01."
        return None
    # Far ends of the calendar cannot be turned into instants in every time zone (year 1 east of UTC,
    # the day after 9999-12-31): no audit entry lies there anyway.
    if not 1900 <= day.year <= 2999:
        errors[field] = "Enter a date between the years 1900 and 2999."
        return None
    return day


async def _distinct(session: AsyncSession, practice_id: int, column: InstrumentedAttribute[str]) -> list[str]:
    found = await session.scalars(
        select(distinct(column)).where(AuditEntry.practice_id == practice_id).order_by(column).limit(_CHOICES)
    )
    return [str(value) for value in found]
