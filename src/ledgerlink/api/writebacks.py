"""Writebacks for staff: list and filter (Load Status, Load Error), Retry, Clear.

Everything is scoped to the caller's practice. An id of another practice is answered exactly like an id
that does not exist (a 404, or "no such writeback" in a batch result), never with its data.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, StrictInt

from ledgerlink.api.auth import Caller, database, staff_caller
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.engine.operations import (
    WritebackView,
    clear_writebacks,
    list_writebacks,
    retry_writebacks,
)
from ledgerlink.store.models import WritebackStatus

router = APIRouter(
    prefix="/v1",
    tags=["writebacks"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope, "description": "a parameter or a field is not valid"},
    },
)
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"

StaffCaller = Annotated[Caller, Depends(staff_caller)]


RowId = Annotated[StrictInt, Field(ge=1, le=2**63 - 1)]  # a database id; anything else (true, "7") is 422


class Ids(BaseModel):
    ids: list[RowId] = Field(min_length=1, max_length=1000)


class ActionOut(BaseModel):
    id: int
    ok: bool
    message: str


@router.get(
    "/writebacks", response_model=list[WritebackView], summary="Writebacks, with Load Status and Load Error"
)
async def get_writebacks(
    request: Request,
    caller: StaffCaller,
    status: Annotated[WritebackStatus | None, Query(description="only this status")] = None,
    since: Annotated[str | None, Query(pattern=ISO_DATE, description="first practice-local date")] = None,
    until: Annotated[str | None, Query(pattern=ISO_DATE, description="last practice-local date")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[WritebackView]:
    async with database(request).sessions() as session:
        views = await list_writebacks(
            session,
            caller.practice.id,
            status=status.value if status else None,
            since=parse_date(since, "since"),
            until=parse_date(until, "until"),
            limit=limit,
        )
    return views


@router.post("/writebacks/retry", response_model=list[ActionOut], summary="Retry failed writebacks")
async def post_retry(request: Request, caller: StaffCaller, body: Ids) -> list[ActionOut]:
    async with database(request).sessions.begin() as session:
        results = await retry_writebacks(session, caller.practice.id, body.ids, actor=caller.actor)
    return [ActionOut(id=r.writeback_id, ok=r.ok, message=r.message) for r in results]


@router.post("/writebacks/clear", response_model=list[ActionOut], summary="Clear writebacks posted by hand")
async def post_clear(request: Request, caller: StaffCaller, body: Ids) -> list[ActionOut]:
    async with database(request).sessions.begin() as session:
        results = await clear_writebacks(session, caller.practice.id, body.ids, actor=caller.actor)
    return [ActionOut(id=r.writeback_id, ok=r.ok, message=r.message) for r in results]


def parse_date(text: str | None, field: str) -> date | None:
    """A YYYY-MM-DD date. Only that: pydantic would also take a number as a Unix timestamp."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(422, "invalid_request", f"{text!r} is not a date (YYYY-MM-DD)", field=field) from None
