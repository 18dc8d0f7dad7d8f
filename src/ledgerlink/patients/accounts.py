"""A patient's PMS account number on a connection: the fix staff make for Invalid Patient ID."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.store.models import Connection, Patient, PatientAccount


async def set_account_number(
    session: AsyncSession, connection: Connection, patient_ref: str, account_number: str, *, actor: str
) -> Patient:
    """Set (or replace) the patient's account number on `connection`. Refuses a number another patient has."""
    number = account_number.strip()
    if not number:
        raise InvalidInput("the account number is empty", field="account_number")
    patient = await session.scalar(
        select(Patient).where(
            Patient.practice_id == connection.practice_id, Patient.patient_ref == patient_ref
        )
    )
    if patient is None:
        raise NotFound(f"no patient {patient_ref!r} in this practice", field="patient")
    taken = await session.scalar(
        select(Patient.patient_ref)
        .join(PatientAccount, PatientAccount.patient_id == Patient.id)
        .where(
            PatientAccount.connection_id == connection.id,
            PatientAccount.account_number == number,
            PatientAccount.patient_id != patient.id,
        )
    )
    if taken is not None:
        raise Conflict(
            f"account number {number!r} already belongs to patient {taken!r}", field="account_number"
        )
    account = await session.scalar(
        select(PatientAccount).where(
            PatientAccount.patient_id == patient.id, PatientAccount.connection_id == connection.id
        )
    )
    previous = account.account_number if account else None
    if account is None:
        session.add(PatientAccount(patient_id=patient.id, connection_id=connection.id, account_number=number))
    else:
        account.account_number = number
        account.updated_at = utcnow()
    await record_audit(
        session,
        connection.practice_id,
        actor,
        "patient.account_number",
        f"patient:{patient_ref}",
        {"connection": connection.name, "previous": previous, "new": number},
    )
    return patient
