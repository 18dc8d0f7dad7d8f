"""The practice's audit log, newest first: who changed settings, keys, patients, retried or cleared what.

Read-only: the log is append-only, and only the caller's practice's entries are ever listed. The query
(`AuditFilter`, `audit_entries`, `parse_moment`) is shared with the dashboard's Audit log page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.pagination import Cursor, Limit, Page, decode_cursor, next_cursor
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.clock import time_zone
from ledgerlink.store.models import AuditEntry

router = APIRouter(
    prefix="/v1",
    tags=["audit"],
    responses={
        401: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope, "description": "a parameter is not valid (named in `field`)"},
    },
)

_WHEN = "ISO 8601 time; without an offset, the practice's time zone; a date alone is its midnight"


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


@router.get("/audit", response_model=Page[AuditEntryOut], summary="The audit log, newest first")
async def get_audit_log(
    request: Request,
    caller: StaffCaller,
    since: Annotated[str | None, Query(max_length=40, description=f"from this time on; {_WHEN}")] = None,
    until: Annotated[str | None, Query(max_length=40, description=f"before this time; {_WHEN}")] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="only this action, e.g. connection.update")
    ] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[AuditEntryOut]:
    before = decode_cursor(cursor)
    timezone = caller.practice.timezone
    first, end = _moment(since, "since", timezone), _moment(until, "until", timezone)
    if first is not None and end is not None and end <= first:
        raise ApiError(422, "invalid_request", "until must be after since", field="until")
    wanted = AuditFilter(since=first, until=end, action=action.strip() if action else None)
    async with database(request).sessions() as session:
        rows = await audit_entries(session, caller.practice.id, wanted, limit + 1, before)
    return Page[AuditEntryOut](
        items=[
            AuditEntryOut(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, detail=e.detail)
            for e in rows[:limit]
        ],
        next_cursor=next_cursor([e.id for e in rows], limit),
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries to list: at or after `since`, before `until`, of one action, by one actor."""

    since: datetime | None = None
    until: datetime | None = None
    action: str | None = None
    actor: str | None = None


def audit_query(practice_id: int, wanted: AuditFilter, before: int | None = None) -> Select[AuditEntry]:
    """The practice's entries that `wanted` selects, newest first, older than entry `before` when given."""
    query = select(AuditEntry).where(AuditEntry.practice_id == practice_id)
    if wanted.since is not None:
        query = query.where(AuditEntry.at >= wanted.since)
    if wanted.until is not None:
        query = query.where(AuditEntry.at < wanted.until)
    if wanted.action:
        query = query.where(AuditEntry.action == wanted.action)
    if wanted.actor:
        query = query.where(AuditEntry.actor == wanted.actor)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    return query.order_by(AuditEntry.id.desc())


async def audit_entries(
    session: AsyncSession, practice_id: int, wanted: AuditFilter, limit: int, before: int | None = None
) -> list[AuditEntry]:
    return list(await session.scalars(audit_query(practice_id, wanted, before).limit(limit)))


def parse_moment(text: str, timezone: str) -> datetime:
    """An ISO 8601 time in UTC; without an offset it is on the practice's wall clock (a date alone is its
    midnight). ValueError, saying how to write it, when it is not a time."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-01T09:00:00-06:00 or 2026-12-01"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=time_zone(timezone))
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{text!r} is out of range") from None


def _moment(text: str | None, field: str, timezone: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_moment(text, timezone)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc), field=field) from None
