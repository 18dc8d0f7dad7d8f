"""Stripe's webhooks: `POST /v1/webhooks/stripe/{practice}`, and the staff routes for its signing secrets.

The webhook has no staff token: the `Stripe-Signature` header is the authentication, checked by the
`stripe` library against each live signing secret of the practice (several during a rotation). An unknown
practice, a practice without a live secret and a wrong signature get the same 400, so the endpoint does not
tell whether a practice exists. A valid signature older than the tolerance is `signature_stale`: a recorded
request replayed later is refused even though it is authentic.

A verified event is mapped (`ledgerlink.sources.stripe_events`) and stored through the JSON ingest path in
one database transaction together with the event id (`webhook_events`): a replayed event changes nothing,
and a charge already stored through another event is counted, not stored again. Event types that carry no
transactions answer 200 `{"ignored": true}` so that Stripe stops sending them. docs/stripe-webhooks.md
describes all of this for the people who set it up.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import stripe
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from ledgerlink.api.auth import Caller, database, secret_box, staff_caller
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.clock import utcnow
from ledgerlink.errors import InvalidInput
from ledgerlink.log import get_logger
from ledgerlink.secrets import SecretBox
from ledgerlink.sources.stripe_events import (
    KnownCharge,
    MappedTransaction,
    StripeEventError,
    charges_to_look_up,
    is_handled,
    transactions_for_event,
)
from ledgerlink.sources.transaction_import import RowError, ingest_objects
from ledgerlink.store.db import Database
from ledgerlink.store.models import Patient, Practice, Transaction, WebhookEvent, WebhookSecret
from ledgerlink.webhook_secrets import (
    DEFAULT_OVERLAP_HOURS,
    SOURCE,
    add_secret,
    list_secrets,
    live_secrets,
    overlap_of,
    rotate_secret,
)

log = get_logger(__name__)
router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

TOLERANCE_S = 300
"""How old a signature may be (Stripe's own default): older deliveries are refused as replays."""
MAX_BODY = 1 << 20
"""Stripe's events are a few kilobytes; anything near a megabyte is not one (read before authentication)."""
ATTEMPTS = 3  # a delivery that collided with a concurrent identical one re-reads what that one stored

_BAD_SIGNATURE = (
    "the Stripe-Signature header does not match a live signing secret of this endpoint; check the "
    "endpoint URL and the secret set with `ledgerlink stripe secret-add`"
)


class WebhookAnswer(BaseModel):
    received: bool = True
    imported: int = 0
    already_imported: int = 0
    replayed: bool = False
    ignored: bool = False


_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Stripe event, signed in the Stripe-Signature header (docs/stripe-webhooks.md).",
    "required": ["id", "type", "data"],
    "properties": {
        "id": {"type": "string", "description": "evt_..."},
        "type": {"type": "string", "description": "charge.succeeded, charge.refunded, ..."},
        "data": {"type": "object", "properties": {"object": {"type": "object"}}},
    },
}


@router.post(
    "/stripe/{practice}",
    response_model=WebhookAnswer,
    responses={
        400: {
            "model": ErrorEnvelope,
            "description": "signature missing, invalid or stale (also for an unknown practice), or not an "
            "event; nothing stored",
        },
        409: {"model": ErrorEnvelope, "description": "collided with a concurrent delivery; Stripe retries"},
        413: {"model": ErrorEnvelope, "description": "the body is too large to be a Stripe event"},
        422: {"model": ErrorEnvelope, "description": "the event cannot be mapped to transactions (field)"},
    },
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _EVENT_SCHEMA}}}
    },
    summary="Receive a Stripe webhook event for a practice (authenticated by its signature)",
)
async def stripe_webhook(
    request: Request,
    practice: Annotated[str, Path(max_length=64, description="The practice's id (slug)")],
    stripe_signature: Annotated[str | None, Header(max_length=4096)] = None,
) -> JSONResponse:
    if not stripe_signature or not stripe_signature.strip():
        raise ApiError(
            400, "signature_missing", "the Stripe-Signature header is missing", field="Stripe-Signature"
        )
    payload = await _body(request)
    db = database(request)
    owner = await _verified_practice(db, secret_box(request), practice, payload, stripe_signature)
    event = _event(payload)
    if not is_handled(event["type"]):
        return _answer(WebhookAnswer(ignored=True))
    for attempt in range(ATTEMPTS):
        try:
            async with db.engine.connect() as conn:
                answer = await _store(conn, owner, event)
                await conn.commit()
                return _answer(answer)
        except (IntegrityError, OperationalError):
            # The same event (or the same charge) was stored at the same moment; what it stored decides.
            if attempt == ATTEMPTS - 1:
                raise ApiError(
                    409, "conflict", "this event collided with another delivery; Stripe will send it again"
                ) from None
    raise AssertionError("unreachable")


async def _body(request: Request) -> str:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _too_large()
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_BODY:
            raise _too_large()
    try:
        return chunks.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "signature_invalid", _BAD_SIGNATURE, field="Stripe-Signature") from None


def _too_large() -> ApiError:
    return ApiError(413, "body_too_large", f"a Stripe event is at most {MAX_BODY} bytes here")


async def _verified_practice(db: Database, box: SecretBox, slug: str, payload: str, header: str) -> Practice:
    """The practice whose live secret signed `payload`, or the 400 that says why not."""
    async with db.sessions() as session:
        practice = await session.scalar(select(Practice).where(Practice.slug == slug))
        secrets = await live_secrets(session, practice.id) if practice is not None else []
    for row in secrets:
        secret = _opened(box, row)
        if secret is None:
            continue
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        try:  # authentic: now only its age can be wrong
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=TOLERANCE_S)
        except stripe.SignatureVerificationError:
            raise ApiError(
                400,
                "signature_stale",
                f"the signature is more than {TOLERANCE_S} seconds old: a replayed delivery, or this "
                "server's clock is wrong",
                field="Stripe-Signature",
            ) from None
        assert practice is not None
        return practice
    raise ApiError(400, "signature_invalid", _BAD_SIGNATURE, field="Stripe-Signature")


def _opened(box: SecretBox, row: WebhookSecret) -> str | None:
    try:
        return box.open(row.secret_sealed)
    except InvalidInput:
        log.warning("stripe_webhook.secret_unreadable", practice_id=row.practice_id, secret_id=row.id)
        return None


def _event(payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError:
        event = None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not event["id"].strip()
        or not isinstance(event.get("type"), str)
    ):
        raise ApiError(400, "invalid_event", "the body is not a Stripe event (an object with id and type)")
    if len(event["id"]) > 255 or len(event["type"]) > 100:
        raise ApiError(400, "invalid_event", "the event's id or type is too long to be Stripe's", field="id")
    return event


async def _store(conn: AsyncConnection, practice: Practice, event: dict[str, Any]) -> WebhookAnswer:
    """Map and store the event's transactions with its id, in the caller's transaction on `conn`."""
    seen = await conn.scalar(
        select(WebhookEvent.event_id).where(
            WebhookEvent.practice_id == practice.id,
            WebhookEvent.source == SOURCE,
            WebhookEvent.event_id == event["id"],
        )
    )
    if seen is not None:
        return WebhookAnswer(replayed=True)
    try:
        known = await _known_charges(conn, practice.id, charges_to_look_up(event))
        mapped = transactions_for_event(event, known)
    except StripeEventError as exc:
        raise ApiError(
            422, "invalid_event", f"{exc.field}: {exc.reason}; nothing was stored", field=exc.field
        ) from None
    answer = WebhookAnswer()
    if mapped:
        result = await ingest_objects(conn, practice, [m.fields for m in mapped], source=SOURCE)
        if not result.applied:
            await conn.rollback()
            raise _unmappable(mapped, result.errors)
        answer = WebhookAnswer(imported=result.imported, already_imported=result.already_imported)
    await conn.execute(
        insert(WebhookEvent),
        [
            {
                "practice_id": practice.id,
                "source": SOURCE,
                "event_id": event["id"],
                "event_type": event["type"],
                "received_at": utcnow(),
            }
        ],
    )
    return answer


async def _known_charges(
    conn: AsyncConnection, practice_id: int, charge_ids: list[str]
) -> dict[str, KnownCharge]:
    if not charge_ids:
        return {}
    rows = await conn.execute(
        select(Transaction.processor_ref, Patient.patient_ref, Transaction.payment_type)
        .join(Patient, Patient.id == Transaction.patient_id)
        .where(
            Transaction.practice_id == practice_id,
            Transaction.processor_ref.in_(charge_ids),
            Transaction.kind == "sale",
        )
    )
    return {ref: KnownCharge(patient, payment_type) for ref, patient, payment_type in rows}


def _unmappable(mapped: list[MappedTransaction], errors: list[RowError]) -> ApiError:
    details = [
        {
            "field": mapped[e.row].path_of(e.column) if e.row < len(mapped) else "data.object",
            "reason": e.reason,
        }
        for e in errors
    ]
    first = details[0]
    return ApiError(
        422,
        "invalid_event",
        f"{first['field']}: {first['reason']}; nothing was stored",
        field=first["field"],
        details=details,
    )


def _answer(answer: WebhookAnswer) -> JSONResponse:
    """Counts for a stored event; only the flag for a replayed or ignored one."""
    if answer.replayed or answer.ignored:
        shown = answer.model_dump(include={"received", "replayed", "ignored"}, exclude_defaults=True)
    else:
        shown = answer.model_dump(exclude={"replayed", "ignored"})
    return JSONResponse({"received": True, **shown}, status_code=200)


# --- staff: the practice's signing secrets ---------------------------------------------------------------


class SecretInfo(BaseModel):
    """A signing secret as staff see it: never its value."""

    id: int
    created_at: datetime
    expires_at: datetime | None
    live: bool


class SecretIn(BaseModel):
    secret: str = Field(max_length=500, description="The endpoint's signing secret from Stripe (whsec_...)")
    rotate: bool = Field(
        default=False, description="Replace the live secrets: they keep verifying for overlap_hours"
    )
    overlap_hours: int | None = Field(
        default=None, description="With rotate: how long the old secrets keep verifying (default 24)"
    )


def _info(row: WebhookSecret) -> SecretInfo:
    live = row.expires_at is None or row.expires_at > utcnow()
    return SecretInfo(id=row.id, created_at=row.created_at, expires_at=row.expires_at, live=live)


@router.get(
    "/stripe-secrets",
    response_model=list[SecretInfo],
    responses={401: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}},
    summary="List the practice's Stripe signing secrets (id and dates, never the secret)",
)
async def get_secrets(
    request: Request,
    caller: Annotated[Caller, Depends(staff_caller)],
    live_only: Annotated[bool, Query(description="Leave out the secrets that have expired")] = False,
) -> list[SecretInfo]:
    async with database(request).sessions() as session:
        rows = await list_secrets(session, caller.practice)
    shown = [_info(row) for row in rows]
    return [info for info in shown if info.live] if live_only else shown


@router.post(
    "/stripe-secrets",
    status_code=201,
    response_model=SecretInfo,
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        409: {"model": ErrorEnvelope, "description": "this secret is already set"},
        422: {"model": ErrorEnvelope, "description": "not a whsec_ secret, or a bad overlap"},
    },
    summary="Add a Stripe signing secret, or rotate to a new one",
)
async def post_secret(
    request: Request, body: SecretIn, caller: Annotated[Caller, Depends(staff_caller)]
) -> SecretInfo:
    if body.overlap_hours is not None and not body.rotate:
        raise ApiError(
            422,
            "invalid_request",
            "overlap_hours applies to a rotation only; send rotate: true",
            field="overlap_hours",
        )
    box = secret_box(request)
    async with database(request).sessions.begin() as session:
        if body.rotate:
            hours = DEFAULT_OVERLAP_HOURS if body.overlap_hours is None else body.overlap_hours
            overlap = overlap_of(hours)
            row = await rotate_secret(
                session, box, caller.practice, body.secret, actor=caller.actor, overlap=overlap
            )
        else:
            row = await add_secret(session, box, caller.practice, body.secret, actor=caller.actor)
        return _info(row)
