"""A patient's PMS account number on a connection: the fix staff make for Invalid Patient ID.

Finding the practice's patients, their account numbers, the failed writebacks a fix unblocks, and the PMS's
own patients suggested as the right one (by name and date of birth) live here too, for the API and the
dashboard alike. Names and birth dates are compared, never logged.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.connectors.base import PmsConnector, PmsPatient, same_name
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.store.models import (
    Connection,
    Patient,
    PatientAccount,
    Transaction,
    Writeback,
    WritebackStatus,
)

MAX_ACCOUNT_NUMBER = 100
SEARCH_WORDS = 5  # words of a search that count; more only slow the query down
Q = TypeVar("Q", bound=Select[Any])


async def set_account_number(
    session: AsyncSession, connection: Connection, patient_ref: str, account_number: str, *, actor: str
) -> Patient:
    """Set (or replace) the patient's account number on `connection`. Refuses a number another patient has."""
    number = account_number.strip()
    if not number:
        raise InvalidInput("the account number is empty", field="account_number")
    if len(number) > MAX_ACCOUNT_NUMBER:
        raise InvalidInput(
            f"the account number is longer than {MAX_ACCOUNT_NUMBER} characters", field="account_number"
        )
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


@dataclass(frozen=True, slots=True)
class AccountNumber:
    connection_id: int
    connection: str
    account_number: str


async def practice_patient(
    session: AsyncSession, practice_id: int, patient_id: int, *, for_update: bool = False
) -> Patient | None:
    """The practice's patient with this id; None for another practice's, exactly as for a missing one."""
    query = select(Patient).where(Patient.id == patient_id, Patient.practice_id == practice_id)
    found: Patient | None = await session.scalar(query.with_for_update() if for_update else query)
    return found


def patient_word(word: str) -> ColumnElement[bool]:
    """`word` appears in the patient's first or last name, patient id, or one of their account numbers."""
    in_account = (
        exists()
        .where(
            PatientAccount.patient_id == Patient.id,
            PatientAccount.account_number.icontains(word, autoescape=True),
        )
        .correlate(Patient)  # only patients: a query that joins patient_accounts itself keeps them here
    )
    return or_(
        Patient.first_name.icontains(word, autoescape=True),
        Patient.last_name.icontains(word, autoescape=True),
        Patient.patient_ref.icontains(word, autoescape=True),
        in_account,
    )


def matching(query: Q, search: str) -> Q:
    """`query` (over patients) narrowed to those in which every word of `search` appears."""
    for word in search.split()[:SEARCH_WORDS]:
        query = query.where(patient_word(word))
    return query


async def account_numbers(
    session: AsyncSession, patient_ids: Sequence[int]
) -> dict[int, list[AccountNumber]]:
    """Each patient's account numbers, by connection id order."""
    if not patient_ids:
        return {}
    rows = await session.execute(
        select(PatientAccount.patient_id, Connection.id, Connection.name, PatientAccount.account_number)
        .join(Connection, Connection.id == PatientAccount.connection_id)
        .where(PatientAccount.patient_id.in_(list(patient_ids)))
        .order_by(PatientAccount.patient_id, Connection.id)
    )
    found: dict[int, list[AccountNumber]] = {}
    for patient_id, connection_id, name, number in rows:
        found.setdefault(patient_id, []).append(AccountNumber(connection_id, name, number))
    return found


async def account_number_of(session: AsyncSession, patient_id: int, connection_id: int) -> str | None:
    number: str | None = await session.scalar(
        select(PatientAccount.account_number).where(
            PatientAccount.patient_id == patient_id, PatientAccount.connection_id == connection_id
        )
    )
    return number


async def failed_writebacks(
    session: AsyncSession,
    patient_id: int,
    *,
    connection_id: int | None = None,
    code: LoadErrorCode | None = None,
) -> list[int]:
    """The patient's failed writebacks (on one connection, with one load error code, when given)."""
    query = (
        select(Writeback.id)
        .join(
            Transaction,
            and_(Transaction.id == Writeback.transaction_id, Transaction.patient_id == patient_id),
        )
        .where(Writeback.status == WritebackStatus.FAILED.value)
        .order_by(Writeback.id)
    )
    if connection_id is not None:
        query = query.where(Writeback.connection_id == connection_id)
    if code is not None:
        query = query.where(Writeback.error_code == code.value)
    return list(await session.scalars(query))


async def awaiting_retry(session: AsyncSession, patient_id: int, connection_id: int) -> list[int]:
    """The patient's writebacks on the connection that failed for want of a valid account number."""
    return await failed_writebacks(
        session, patient_id, connection_id=connection_id, code=LoadErrorCode.INVALID_PATIENT_ID
    )


class MatchQuality(enum.IntEnum):
    """How well a PMS patient matches ours; higher is better."""

    LAST_NAME_AND_BIRTH_DATE = 1  # the first name differs (a nickname, a typo)
    NAME_ONLY = 2  # the birth date differs or is unknown on one side
    NAME_AND_BIRTH_DATE = 3

    @property
    def words(self) -> str:
        return _QUALITY_WORDS[self]


_QUALITY_WORDS = {
    MatchQuality.NAME_AND_BIRTH_DATE: "Name and date of birth match",
    MatchQuality.NAME_ONLY: "Name matches, date of birth does not",
    MatchQuality.LAST_NAME_AND_BIRTH_DATE: "Last name and date of birth match, first name differs",
}


@dataclass(frozen=True, slots=True)
class Suggestion:
    pms: PmsPatient
    quality: MatchQuality
    taken_by: str | None  # the patient id (ours) that already has this account number, if another's


def match_quality(patient: Patient, pms: PmsPatient) -> MatchQuality:
    same_birth = patient.birth_date is not None and patient.birth_date == pms.birth_date
    if not same_name(patient.first_name, pms.first_name):
        return MatchQuality.LAST_NAME_AND_BIRTH_DATE
    return MatchQuality.NAME_AND_BIRTH_DATE if same_birth else MatchQuality.NAME_ONLY


async def suggest_accounts(
    session: AsyncSession, connector: PmsConnector, connection: Connection, patient: Patient
) -> list[Suggestion]:
    """The PMS's patients that may be `patient` (`PmsConnector.search_patients`), best match first, each
    saying whether another of the practice's patients already has that account number."""
    found = await connector.search_patients(patient.last_name, patient.first_name, patient.birth_date)
    if not found:
        return []
    rows = await session.execute(
        select(PatientAccount.account_number, Patient.patient_ref)
        .join(Patient, Patient.id == PatientAccount.patient_id)
        .where(
            PatientAccount.connection_id == connection.id,
            PatientAccount.account_number.in_([p.account_number for p in found]),
            PatientAccount.patient_id != patient.id,
        )
    )
    holders = {number: ref for number, ref in rows}
    suggestions = [Suggestion(p, match_quality(patient, p), holders.get(p.account_number)) for p in found]
    return sorted(suggestions, key=lambda s: (-s.quality, s.taken_by is not None, s.pms.account_number))


async def find_patients(
    session: AsyncSession,
    practice_id: int,
    search: str = "",
    *,
    with_failures: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Patient], int]:
    """A page of the practice's patients by name (`search` words as in `matching`; `with_failures`: only
    those with a failed writeback), and how many there are in all."""
    query = select(Patient).where(Patient.practice_id == practice_id)
    if search.strip():
        query = matching(query, search)
    if with_failures:
        query = query.where(
            exists().where(
                Transaction.patient_id == Patient.id,
                Writeback.transaction_id == Transaction.id,
                Writeback.status == WritebackStatus.FAILED.value,
            )
        )
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    patients = await session.scalars(
        query.order_by(Patient.last_name, Patient.first_name, Patient.id).offset(offset).limit(limit)
    )
    return list(patients), int(total or 0)


async def failure_counts(session: AsyncSession, patient_ids: Sequence[int]) -> dict[int, int]:
    """How many failed writebacks each patient has (patients without any are left out)."""
    if not patient_ids:
        return {}
    rows = await session.execute(
        select(Transaction.patient_id, func.count())
        .join(Writeback, Writeback.transaction_id == Transaction.id)
        .where(
            Transaction.patient_id.in_(list(patient_ids)), Writeback.status == WritebackStatus.FAILED.value
        )
        .group_by(Transaction.patient_id)
    )
    return {patient_id: count for patient_id, count in rows.tuples() if patient_id is not None}
