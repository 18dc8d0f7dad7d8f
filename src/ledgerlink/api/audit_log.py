"""The practice's audit log, newest first: who changed settings, keys, patients, retried or cleared what.

Read-only: the log is append-only, and only the caller's practice's entries are ever listed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy import select

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
    query = select(AuditEntry).where(AuditEntry.practice_id == caller.practice.id)
    first = _moment(since, "since", caller.practice.timezone)
    end = _moment(until, "until", caller.practice.timezone)
    if first is not None and end is not None and end <= first:
        raise ApiError(422, "invalid_request", "until must be after since", field="until")
    if first is not None:
        query = query.where(AuditEntry.at >= first)
    if end is not None:
        query = query.where(AuditEntry.at < end)
    if action:
        query = query.where(AuditEntry.action == action.strip())
    if before is not None:
        query = query.where(AuditEntry.id < before)
    async with database(request).sessions() as session:
        rows = list(await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    return Page[AuditEntryOut](
        items=[
            AuditEntryOut(id=e.id, at=e.at, actor=e.actor, action=e.action, target=e.target, detail=e.detail)
            for e in rows[:limit]
        ],
        next_cursor=next_cursor([e.id for e in rows], limit),
    )


def _moment(text: str | None, field: str, timezone: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ApiError(
            422,
            "invalid_request",
            f"{text!r} is not a time: use ISO 8601, e.g. 2026-12-01T09:00:00-06:00 or 2026-12-01",
            field=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=time_zone(timezone))
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, "invalid_request", f"{text!r} is out of range", field=field) from None
