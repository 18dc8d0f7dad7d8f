"""Notification targets for staff: where the practice's alert digest goes (docs/alerts.md).

A webhook target's signing secret is in the answer that creates it, and never again. Everything is scoped
to the caller's practice: another practice's target id is answered like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from ledgerlink.api.auth import Caller, database, secret_box, staff_caller
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.clock import utcnow
from ledgerlink.notify.content import dashboard_link, ping_notice
from ledgerlink.notify.delivery import deliver, http_client
from ledgerlink.notify.targets import add_target, get_target, list_targets, remove_target, shown_address
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import get_settings
from ledgerlink.store.models import NotificationTarget

router = APIRouter(
    prefix="/v1",
    tags=["notifications"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope, "description": "a parameter or a field is not valid"},
    },
)

StaffCaller = Annotated[Caller, Depends(staff_caller)]
Box = Annotated[SecretBox, Depends(secret_box)]
TargetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the target's id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no such target in this practice"}
}


class TargetIn(BaseModel):
    kind: Literal["email", "webhook"]
    address: str = Field(
        min_length=1,
        max_length=500,
        description="an e-mail address (office@example.com), or for a webhook an http(s) URL",
    )


class TargetOut(BaseModel):
    id: int
    kind: str
    address: str = Field(description="a webhook URL is shown without its query string")
    active: bool
    created_at: datetime

    @classmethod
    def of(cls, target: NotificationTarget) -> TargetOut:
        return cls(
            id=target.id,
            kind=target.kind,
            address=shown_address(target),
            active=target.active,
            created_at=target.created_at,
        )


class TargetCreated(TargetOut):
    secret: str | None = Field(
        description="a webhook's signing secret (verify Ledgerlink-Signature with it): shown only now"
    )


class TestResult(BaseModel):
    target_id: int
    delivered: bool
    detail: str


@router.get("/notification-targets", response_model=list[TargetOut], summary="Where the alert digest goes")
async def get_targets(
    request: Request,
    caller: StaffCaller,
    kind: Annotated[
        Literal["email", "webhook"] | None, Query(description="only targets of this kind")
    ] = None,
) -> list[TargetOut]:
    async with database(request).sessions() as session:
        targets = await list_targets(session, caller.practice.id)
    return [TargetOut.of(t) for t in targets if kind is None or t.kind == kind]


@router.post(
    "/notification-targets",
    response_model=TargetCreated,
    status_code=201,
    summary="Add an e-mail or webhook target",
    responses={409: {"model": ErrorEnvelope, "description": "already a target, or too many targets"}},
)
async def post_target(request: Request, caller: StaffCaller, box: Box, body: TargetIn) -> TargetCreated:
    async with database(request).sessions.begin() as session:
        added = await add_target(
            session, caller.practice, body.kind, body.address, box=box, actor=caller.actor
        )
    return TargetCreated(**TargetOut.of(added.target).model_dump(), secret=added.secret)


@router.delete(
    "/notification-targets/{target_id}",
    status_code=204,
    response_class=Response,
    summary="Remove a target",
    responses=NOT_FOUND,
)
async def delete_target(request: Request, caller: StaffCaller, target_id: TargetId) -> Response:
    async with database(request).sessions.begin() as session:
        await remove_target(session, caller.practice.id, target_id, actor=caller.actor)
    return Response(status_code=204)


@router.post(
    "/notification-targets/{target_id}/test",
    response_model=TestResult,
    summary="Send a test message to a target",
    responses={
        **NOT_FOUND,
        502: {"model": ErrorEnvelope, "description": "the target did not take it; the message says why"},
    },
)
async def post_test(request: Request, caller: StaffCaller, box: Box, target_id: TargetId) -> TestResult:
    settings = get_settings()
    async with database(request).sessions() as session:
        target = await get_target(session, caller.practice.id, target_id)
    notice = ping_notice(
        caller.practice.slug, caller.practice.name, dashboard_link(settings.dashboard_url), utcnow()
    )
    async with http_client(None, settings) as http:
        delivery = await deliver(target, notice, settings=settings, box=box, http=http)
    if not delivery.ok:
        raise ApiError(502, "delivery_failed", f"the test message did not arrive: {delivery.detail}")
    return TestResult(target_id=target.id, delivered=True, detail=delivery.detail)
