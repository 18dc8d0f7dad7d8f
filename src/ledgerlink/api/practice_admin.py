"""The caller's own practice: read it and change its name, time zone, locale (how the dashboard writes money
and dates) and patient capacity, through `practices.update_practice` like the dashboard's settings page.

There is no practice id in these paths: a token belongs to one practice and only ever sees that one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.errors import InvalidInput
from ledgerlink.practices import update_practice
from ledgerlink.store.models import Practice

router = APIRouter(
    prefix="/v1",
    tags=["practice"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
    },
)


class PracticeOut(BaseModel):
    slug: str
    name: str
    timezone: str
    locale: str = Field(description="how the dashboard writes money and dates, e.g. en_US")
    patient_capacity: int | None
    public_id: str | None = Field(description="the practice id a PMS presents with its merchant key")
    created_at: datetime


class PracticeChange(BaseModel):
    """Only the fields sent are changed; `patient_capacity: null` removes the limit."""

    model_config = ConfigDict(extra="forbid", strict=True)  # no 1.0 or true taken for a capacity of 1

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")] | None = None
    timezone: Annotated[str, Field(min_length=1, max_length=64, examples=["America/Chicago"])] | None = None
    locale: Annotated[str, Field(min_length=2, max_length=16, examples=["en_US", "fr_CA"])] | None = None
    patient_capacity: Annotated[int, Field(ge=1, le=10_000_000)] | None = None


def practice_out(practice: Practice) -> PracticeOut:
    return PracticeOut(
        slug=practice.slug,
        name=practice.name,
        timezone=practice.timezone,
        locale=practice.locale,
        patient_capacity=practice.patient_capacity,
        public_id=practice.public_id,
        created_at=practice.created_at,
    )


@router.get("/practice", response_model=PracticeOut, summary="The caller's practice")
async def get_practice(request: Request, caller: StaffCaller) -> PracticeOut:
    async with database(request).sessions() as session:
        practice = await session.get(Practice, caller.practice.id)
    assert practice is not None  # the caller was authenticated against it in this request
    return practice_out(practice)


@router.patch(
    "/practice",
    response_model=PracticeOut,
    responses={422: {"model": ErrorEnvelope, "description": "a field is not valid (named in `field`)"}},
    summary="Change the practice's name, time zone, locale or patient capacity",
)
async def patch_practice(request: Request, caller: StaffCaller, body: PracticeChange) -> PracticeOut:
    sent = body.model_fields_set
    for field in ("name", "timezone", "locale"):
        if field in sent and getattr(body, field) is None:
            raise ApiError(422, "invalid_request", f"the practice needs a {field}", field=field)
    async with database(request).sessions.begin() as session:
        practice = await session.get(Practice, caller.practice.id, with_for_update=True)
        assert practice is not None
        try:
            await update_practice(
                session, practice, {field: getattr(body, field) for field in sent}, actor=caller.actor
            )
        except InvalidInput as exc:
            raise ApiError(422, "invalid_request", exc.message, field=exc.field) from None
        return practice_out(practice)
