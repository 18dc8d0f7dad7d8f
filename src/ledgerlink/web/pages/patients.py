"""Patients: find a patient, see their PMS account number per connection and fix it in place, pick the
PMS's own patient from suggested matches, and retry the patient's failed payments in one click.

This is where an Invalid Patient ID is resolved (SPEC section 3). The account number goes through the same
service as `PUT /v1/patients/{id}/accounts/{connection}` (`set_account_number`: same rules, same audit
entry); suggestions come from the PMS itself (`PmsConnector.search_patients`, by name and date of birth).
Names and birth dates are compared and shown, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.connection_settings import find_connection, practice_connections
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.engine.operations import WritebackFilter, reconciliation_rows, retry_writebacks
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.patients.accounts import (
    Suggestion,
    account_numbers,
    awaiting_retry,
    failed_writebacks,
    failure_counts,
    find_patients,
    practice_patient,
    set_account_number,
)
from ledgerlink.patients.suggestions import SuggestionsUnavailable, pms_suggestions
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.models import Connection, Patient
from ledgerlink.users import RETRY_CLEAR
from ledgerlink.web.pages.reconcile import describe
from ledgerlink.web.params import page_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Fixer, Staff, Viewer, checked_form

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
PatientId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ConnectionId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/patients", response_class=HTMLResponse)
async def patients_page(request: Request, staff: Viewer) -> HTMLResponse:
    query = request.query_params
    search = query.get("q", "").strip()[:200]
    with_failures = query.get("failed") == "1"
    page = page_number(query.get("page"))
    async with database(request).sessions() as session:
        patients, total = await find_patients(
            session,
            staff.practice.id,
            search,
            with_failures=with_failures,
            offset=(page - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        ids = [p.id for p in patients]
        accounts = await account_numbers(session, ids)
        failures = await failure_counts(session, ids)
    base = {"q": search} if search else {}
    if with_failures:
        base["failed"] = "1"
    return render(
        request,
        "patients.html",
        staff,
        patients=patients,
        accounts=accounts,
        failures=failures,
        search=search,
        with_failures=with_failures,
        total=total,
        page=page,
        pages=max(1, ceil(total / PAGE_SIZE)),
        first=(page - 1) * PAGE_SIZE + 1,
        base=base,
    )


@dataclass(frozen=True, slots=True)
class ConnectionAccount:
    connection: Connection
    account_number: str | None
    invalid_id_failures: int  # failed writebacks waiting for this number to be fixed
    suggestions: list[Suggestion]
    suggestions_problem: str  # why the PMS could not be asked, or ""


async def _suggestions(
    request: Request, session: AsyncSession, connection: Connection, patient: Patient
) -> tuple[list[Suggestion], str]:
    """The PMS's patients that may be this one; or none and why the PMS could not be asked."""
    if connection.kind == PULL_KIND:
        return [], ""  # the PMS downloads from ledgerlink: there is nothing to ask it
    try:
        return await pms_suggestions(session, connection, patient, request.app.state.data_dir), ""
    except SuggestionsUnavailable as exc:
        return [], exc.message


async def _patient_page(
    request: Request,
    staff: Staff,
    patient_id: int,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    entered: dict[int, str] | None = None,
) -> HTMLResponse:
    async with database(request).sessions() as session:
        patient = await practice_patient(session, staff.practice.id, patient_id)
        if patient is None:
            raise HTTPException(404)
        numbers = {
            a.connection_id: a.account_number
            for a in (await account_numbers(session, [patient.id])).get(patient.id, [])
        }
        rows, _ = await reconciliation_rows(
            session, staff.practice.id, WritebackFilter(status="failed", patient_id=patient.id), limit=200
        )
        accounts = []
        for connection in await practice_connections(session, staff.practice.id):
            waiting = await awaiting_retry(session, patient.id, connection.id)
            suggestions: list[Suggestion] = []
            problem = ""
            if waiting:
                suggestions, problem = await _suggestions(request, session, connection, patient)
            accounts.append(
                ConnectionAccount(connection, numbers.get(connection.id), len(waiting), suggestions, problem)
            )
    return render(
        request,
        "patients_detail.html",
        staff,
        status=status,
        errors=errors or {},
        patient=patient,
        accounts=accounts,
        entered=entered or {},
        failed=[describe(row) for row in rows],
        fixer=staff.can(RETRY_CLEAR),
        invalid_patient_id=LoadErrorCode.INVALID_PATIENT_ID.value,
    )


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(request: Request, staff: Viewer, patient_id: PatientId) -> HTMLResponse:
    return await _patient_page(request, staff, patient_id)


@router.post("/patients/{patient_id}/accounts/{connection_id}", response_model=None)
async def set_account(
    request: Request, staff: Fixer, patient_id: PatientId, connection_id: ConnectionId
) -> Response | RedirectResponse:
    """Set the patient's account number on a connection (typed in, or a suggestion's)."""
    form = await checked_form(request, staff)
    number = str(form.get("account_number") or "")
    field = f"account_{connection_id}"
    problem = name = ""
    waiting: list[int] = []
    try:
        async with database(request).sessions.begin() as session:
            patient = await practice_patient(session, staff.practice.id, patient_id)
            connection = await find_connection(session, staff.practice.id, connection_id)
            if patient is None or connection is None:
                raise HTTPException(404)
            await set_account_number(session, connection, patient.patient_ref, number, actor=staff.actor)
            waiting = await awaiting_retry(session, patient.id, connection.id)
            name = connection.name
    except InvalidInput as exc:
        problem = (
            "Enter the account number (the patient's number in the PMS)."
            if not number.strip()
            else _sentence(exc.message)
        )
    except Conflict as exc:
        problem = _sentence(exc.message) + ". Check the number, or fix the other patient's first."
    except IntegrityError:
        problem = "The account number was changed at the same moment by someone else. Send it again."
    if problem:
        return await _patient_page(
            request,
            staff,
            patient_id,
            status=400,
            errors={field: problem},
            entered={connection_id: number},
        )
    notice = f"Account number on {name} set to {number.strip()}."
    if waiting:
        notice += (
            f" {len(waiting)} failed {'payment' if len(waiting) == 1 else 'payments'} can now be retried: "
            "press Retry below, or tick Retry on Reconciliation."
        )
    return redirect(f"/patients/{patient_id}", notice)


@router.post("/patients/{patient_id}/retry", response_model=None)
async def retry_patient(request: Request, staff: Fixer, patient_id: PatientId) -> RedirectResponse:
    """Retry every failed writeback of the patient, then follow them on Reconciliation."""
    await checked_form(request, staff)
    async with database(request).sessions.begin() as session:
        patient = await practice_patient(session, staff.practice.id, patient_id)
        if patient is None:
            raise HTTPException(404)
        ids = await failed_writebacks(session, patient.id)
        results = await retry_writebacks(session, staff.practice.id, ids, actor=staff.actor) if ids else []
        ref = patient.patient_ref
    queued = sum(r.ok for r in results)
    if not queued:
        return redirect(f"/patients/{patient_id}", "This patient has no failed payments to retry.")
    return redirect(
        f"/reconcile?{urlencode({'q': ref})}",
        f"{queued} failed {'payment' if queued == 1 else 'payments'} of {ref} queued for retry.",
    )


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]
