"""Small builders for rows that tests need (the import paths have their own tests)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ledgerlink.opendental.money import decimal_to_cents
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Patient, PatientAccount, Practice, Transaction


async def add_patient(
    db: Database,
    practice: Practice,
    connection: Connection | None,
    ref: str,
    account_number: str | None = None,
) -> Patient:
    async with db.sessions.begin() as session:
        patient = Patient(practice_id=practice.id, patient_ref=ref, first_name="Test", last_name=ref.title())
        session.add(patient)
        await session.flush()
        if connection is not None and account_number is not None:
            session.add(
                PatientAccount(
                    patient_id=patient.id, connection_id=connection.id, account_number=account_number
                )
            )
    return patient


async def add_transaction(
    db: Database,
    practice: Practice,
    ref: str,
    *,
    kind: str = "sale",
    payment_type: str = "terminal",
    gross: int = 10000,
    fee: int = 300,
    patient: Patient | None = None,
    original: str | None = None,
    at: datetime | None = None,
) -> Transaction:
    occurred = at or datetime.now(UTC)
    async with db.sessions.begin() as session:
        original_id = None
        if original is not None:
            original_id = await session.scalar(
                select(Transaction.id).where(
                    Transaction.practice_id == practice.id, Transaction.processor_ref == original
                )
            )
        txn = Transaction(
            practice_id=practice.id,
            processor_ref=ref,
            kind=kind,
            payment_type=payment_type,
            gross_cents=gross,
            fee_cents=fee,
            net_cents=gross - fee,
            occurred_at=occurred,
            local_date=occurred.astimezone(ZoneInfo(practice.timezone)).date(),
            patient_id=patient.id if patient else None,
            original_id=original_id,
            original_ref=original,
        )
        session.add(txn)
    return txn


def sandbox_patient(
    office: OpenDentalOffice, last: str = "Doe", chart: str = "", birth: date | None = None
) -> str:
    """Add a patient to the sandbox PMS and return its PatNum as an account number."""
    return str(office.add_patient(last, "Pat", chart_number=chart, birthdate=birth))


def paid_cents(office: OpenDentalOffice, pat_num: int) -> int:
    """What the patient's account has been credited in the PMS (the sum of the splits to them), in cents."""
    return decimal_to_cents(office.paid_total(pat_num))


REVERSES = re.compile(r"\(reverses PayNum (\d+)\)")


def reversed_pay_num(note: str) -> int:
    """The PayNum a sandbox reversal names in its note (Open Dental has no column linking a negative payment
    to the one it reverses); 0 when the note names none."""
    found = REVERSES.findall(note)
    assert len(found) <= 1, f"a note naming several originals: {note!r}"
    return int(found[0]) if found else 0
