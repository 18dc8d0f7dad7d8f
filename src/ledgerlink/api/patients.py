"""The practice's patients: find them, correct contact data and status, and fix PMS account numbers.

Fixing an account number is how staff resolve an Invalid Patient ID failure; the answer says which of the
patient's failed writebacks on that connection now await a Retry (`POST /v1/writebacks/retry`).

Names and birth dates are data for the staff who see these answers: they are never logged, and the audit
log records which fields changed, not their values. Searching is by query parameter, so a search term can
reach a proxy's log; the pagination cursor carries only a row id.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.api.connections import owned_connection
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.pagination import Cursor, Limit, Page, decode_cursor, next_cursor
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.patients.accounts import (
    MatchQuality,
    account_number_of,
    account_numbers,
    awaiting_retry,
    matching,
    practice_patient,
    set_account_number,
)
from ledgerlink.patients.suggestions import SuggestionsUnavailable, pms_suggestions
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.models import (
    Patient,
    PatientAccount,
)

router = APIRouter(
    prefix="/v1",
    tags=["patients"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        422: {
            "model": ErrorEnvelope,
            "description": "a parameter or a field is not valid (named in `field`)",
        },
    },
)

PatientId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ConnectionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no such patient (or connection)"}
}
EMAIL = r"^$|^[^@\s]+@[^@\s]+$"
PHONE = r"^[0-9+() .\-/x]*$"


class AccountOut(BaseModel):
    connection_id: int
    connection: str
    account_number: str


class PatientOut(BaseModel):
    id: int
    patient_ref: str = Field(description="the payment platform's patient id")
    first_name: str
    last_name: str
    birth_date: date | None
    email: str
    phone: str
    active: bool
    accounts: list[AccountOut] = Field(description="the PMS account number per connection")
    created_at: datetime
    updated_at: datetime


class PatientChange(BaseModel):
    """Only the fields sent are changed; an empty email or phone removes it."""

    model_config = ConfigDict(extra="forbid")

    email: Annotated[str, Field(max_length=200, pattern=EMAIL)] | None = None
    phone: Annotated[str, Field(max_length=50, pattern=PHONE)] | None = None
    active: StrictBool | None = None


class AccountNumberIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_number: Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]


class AccountNumberSet(BaseModel):
    patient_id: int
    connection_id: int
    account_number: str
    previous_account_number: str | None
    awaiting_retry: int = Field(
        description="how many of the patient's writebacks on this connection failed with Invalid Patient "
        "ID: Retry them (POST /v1/writebacks/retry) now that the number is fixed"
    )
    awaiting_retry_ids: list[int] = Field(description="their ids, for the Retry")


class SuggestionOut(BaseModel):
    account_number: str = Field(description="the PMS's account number for this patient: PUT it to fix ours")
    pms_id: str = Field(description="the patient's id in the PMS (Open Dental's PatNum)")
    first_name: str
    last_name: str
    birth_date: date | None
    match_quality: str = Field(
        description="how well it matches, best first: "
        + ", ".join(q.name.lower() for q in sorted(MatchQuality, reverse=True)),
        json_schema_extra={"enum": [q.name.lower() for q in MatchQuality]},
    )
    match: str = Field(description="the match quality in words")
    taken_by: str | None = Field(
        description="the patient id (patient_ref) of another of the practice's patients that already has "
        "this account number; null when none"
    )


class SuggestionsOut(BaseModel):
    patient_id: int
    connection_id: int
    account_number: str | None = Field(description="the patient's account number on the connection now")
    suggestions: list[SuggestionOut] = Field(description="the PMS's candidates, best match first")


@router.get("/patients", response_model=Page[PatientOut], summary="Find patients (paginated)")
async def get_patients(
    request: Request,
    caller: StaffCaller,
    search: Annotated[
        str | None,
        Query(max_length=200, description="words found in the name, patient id or an account number"),
    ] = None,
    active: Annotated[bool | None, Query(description="only active (true) or inactive (false)")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PatientOut]:
    after = decode_cursor(cursor)
    query = select(Patient).where(Patient.practice_id == caller.practice.id)
    if active is not None:
        query = query.where(Patient.active.is_(active))
    if search:
        query = matching(query, search)
    if after is not None:
        query = query.where(Patient.id > after)
    async with database(request).sessions() as session:
        patients = list(await session.scalars(query.order_by(Patient.id).limit(limit + 1)))
        page = patients[:limit]
        accounts = await _accounts(session, [p.id for p in page])
    return Page[PatientOut](
        items=[_patient_out(p, accounts.get(p.id, [])) for p in page],
        next_cursor=next_cursor([p.id for p in patients], limit),
    )


@router.get("/patients/{patient_id}", response_model=PatientOut, responses=_NOT_FOUND, summary="A patient")
async def get_patient(request: Request, caller: StaffCaller, patient_id: PatientId) -> PatientOut:
    async with database(request).sessions() as session:
        patient = await _owned_patient(session, caller.practice.id, patient_id)
        accounts = await _accounts(session, [patient.id])
    return _patient_out(patient, accounts.get(patient.id, []))


@router.get(
    "/patients/{patient_id}/suggestions",
    response_model=SuggestionsOut,
    responses={
        **_NOT_FOUND,
        409: {
            "model": ErrorEnvelope,
            "description": "`pull_connection`: the PMS downloads its payments and cannot be asked; "
            "`connection_settings`: the connection's settings do not let ledgerlink reach its PMS",
        },
        503: {
            "model": ErrorEnvelope,
            "description": "`pms_unavailable`: the PMS did not answer or refused the search; try again later",
        },
    },
    summary="The PMS's patients that may be this one (by name and date of birth), to fix the account number",
)
async def get_suggestions(
    request: Request,
    caller: StaffCaller,
    patient_id: PatientId,
    connection_id: Annotated[int, Query(ge=1, le=2**63 - 1, description="the connection whose PMS is asked")],
) -> SuggestionsOut:
    async with database(request).sessions() as session:
        patient = await _owned_patient(session, caller.practice.id, patient_id)
        connection = await owned_connection(session, caller.practice.id, connection_id)
        if connection.kind == PULL_KIND:
            raise ApiError(
                409,
                "pull_connection",
                f"{connection.name} is a pull connection: its PMS downloads payments and cannot be asked "
                "for patients",
                field="connection_id",
            )
        current = await account_number_of(session, patient.id, connection.id)
        try:
            found = await pms_suggestions(session, connection, patient, request.app.state.data_dir)
        except SuggestionsUnavailable as exc:
            if exc.settings_problem:
                raise ApiError(409, "connection_settings", exc.message, field="connection_id") from None
            raise ApiError(503, "pms_unavailable", exc.message, field="connection_id") from None
    return SuggestionsOut(
        patient_id=patient.id,
        connection_id=connection.id,
        account_number=current,
        suggestions=[
            SuggestionOut(
                account_number=s.pms.account_number,
                pms_id=s.pms.pms_id,
                first_name=s.pms.first_name,
                last_name=s.pms.last_name,
                birth_date=s.pms.birth_date,
                match_quality=s.quality.name.lower(),
                match=s.quality.words,
                taken_by=s.taken_by,
            )
            for s in found
        ],
    )


@router.patch(
    "/patients/{patient_id}",
    response_model=PatientOut,
    responses=_NOT_FOUND,
    summary="Change a patient's email, phone or active status",
)
async def patch_patient(
    request: Request, caller: StaffCaller, patient_id: PatientId, body: PatientChange
) -> PatientOut:
    sent = body.model_fields_set
    for field in ("email", "phone", "active"):
        if field in sent and getattr(body, field) is None:
            raise ApiError(422, "invalid_request", f"{field} cannot be null", field=field)
    async with database(request).sessions.begin() as session:
        patient = await _owned_patient(session, caller.practice.id, patient_id, for_update=True)
        changed: dict[str, Any] = {}
        for field in ("email", "phone"):
            value = getattr(body, field)
            if value is not None and value.strip() != getattr(patient, field):
                setattr(patient, field, value.strip())
                changed[field] = "changed"  # contact data stays out of the audit log
        if body.active is not None and body.active != patient.active:
            changed["active"] = {"previous": patient.active, "new": body.active}
            patient.active = body.active
        if changed:
            patient.updated_at = utcnow()
            await record_audit(
                session,
                caller.practice.id,
                caller.actor,
                "patient.update",
                f"patient:{patient.patient_ref}",
                changed,
            )
        accounts = await _accounts(session, [patient.id])
        return _patient_out(patient, accounts.get(patient.id, []))


@router.put(
    "/patients/{patient_id}/accounts/{connection_id}",
    response_model=AccountNumberSet,
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorEnvelope, "description": "another patient has that account number"},
    },
    summary="Set the patient's PMS account number on a connection",
)
async def put_account_number(
    request: Request,
    caller: StaffCaller,
    patient_id: PatientId,
    connection_id: ConnectionId,
    body: AccountNumberIn,
) -> AccountNumberSet:
    try:
        async with database(request).sessions.begin() as session:
            patient = await _owned_patient(session, caller.practice.id, patient_id)
            connection = await owned_connection(session, caller.practice.id, connection_id)
            previous = await account_number_of(session, patient.id, connection.id)
            await set_account_number(
                session, connection, patient.patient_ref, body.account_number, actor=caller.actor
            )
            waiting = await awaiting_retry(session, patient.id, connection.id)
    except IntegrityError:  # the same patient's number set by two requests at once
        raise ApiError(
            409,
            "conflict",
            "the account number was changed at the same moment; send it again",
            field="account_number",
        ) from None
    return AccountNumberSet(
        patient_id=patient_id,
        connection_id=connection_id,
        account_number=body.account_number.strip(),
        previous_account_number=previous,
        awaiting_retry=len(waiting),
        awaiting_retry_ids=waiting,
    )


@router.delete(
    "/patients/{patient_id}/accounts/{connection_id}",
    status_code=204,
    response_class=Response,
    responses={404: {"model": ErrorEnvelope, "description": "no such patient, connection or account number"}},
    summary="Remove the patient's PMS account number on a connection",
)
async def delete_account_number(
    request: Request, caller: StaffCaller, patient_id: PatientId, connection_id: ConnectionId
) -> Response:
    async with database(request).sessions.begin() as session:
        patient = await _owned_patient(session, caller.practice.id, patient_id)
        connection = await owned_connection(session, caller.practice.id, connection_id)
        previous = await account_number_of(session, patient.id, connection.id)
        if previous is None:
            raise ApiError(
                404,
                "not_found",
                f"patient {patient_id} has no account number on connection {connection_id}",
                field="connection_id",
            )
        await session.execute(
            delete(PatientAccount).where(
                PatientAccount.patient_id == patient.id, PatientAccount.connection_id == connection.id
            )
        )
        await record_audit(
            session,
            caller.practice.id,
            caller.actor,
            "patient.account_number.remove",
            f"patient:{patient.patient_ref}",
            {"connection": connection.name, "previous": previous},
        )
    return Response(status_code=204)


async def _owned_patient(
    session: AsyncSession, practice_id: int, patient_id: int, *, for_update: bool = False
) -> Patient:
    """The caller's patient; another practice's is answered like one that does not exist."""
    patient = await practice_patient(session, practice_id, patient_id, for_update=for_update)
    if patient is None:
        raise ApiError(404, "not_found", f"no patient {patient_id}", field="patient_id")
    return patient


async def _accounts(session: AsyncSession, patient_ids: list[int]) -> dict[int, list[AccountOut]]:
    found = await account_numbers(session, patient_ids)
    return {
        patient_id: [
            AccountOut(
                connection_id=a.connection_id, connection=a.connection, account_number=a.account_number
            )
            for a in accounts
        ]
        for patient_id, accounts in found.items()
    }


def _patient_out(patient: Patient, accounts: list[AccountOut]) -> PatientOut:
    return PatientOut(
        id=patient.id,
        patient_ref=patient.patient_ref,
        first_name=patient.first_name,
        last_name=patient.last_name,
        birth_date=patient.birth_date,
        email=patient.email,
        phone=patient.phone,
        active=patient.active,
        accounts=accounts,
        created_at=patient.created_at,
        updated_at=patient.updated_at,
    )
