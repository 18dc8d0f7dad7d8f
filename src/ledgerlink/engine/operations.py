"""What staff do with writebacks: list them, Retry (after fixing the cause) and Clear (posted by hand).

These mirror the Merchant Transfers screen of seed 001, with one improvement: each id gets its own answer,
so a mistyped id never hides what happened to the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.domain.rules import SkipReason
from ledgerlink.domain.transactions import TransactionKind
from ledgerlink.patients.accounts import SEARCH_WORDS, patient_word
from ledgerlink.store.ingest_lock import announce_work
from ledgerlink.store.models import (
    Connection,
    Patient,
    PatientAccount,
    Transaction,
    Writeback,
    WritebackStatus,
)


@dataclass(frozen=True, slots=True)
class WritebackView:
    id: int
    status: str
    category: str | None
    processor_ref: str
    kind: str
    payment_type: str
    local_date: date
    gross_cents: int
    amount_cents: int
    patient_ref: str | None
    account_number: str | None
    error_code: str | None
    error_message: str | None
    pms_ref: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class ActionResult:
    writeback_id: int
    ok: bool
    message: str


@dataclass(frozen=True, slots=True)
class WritebackFilter:
    """What the reconciliation view narrows writebacks to; None (or empty) means any."""

    status: str | None = None
    since: date | None = None  # first practice-local date
    until: date | None = None  # last practice-local date
    payment_type: str | None = None
    search: str = ""  # words in the patient's name, patient id or account number, or the processor reference
    patient_id: int | None = None


@dataclass(frozen=True, slots=True)
class ReconciliationRow:
    """A writeback as the reconciliation page shows it: the API's view plus who and where."""

    view: WritebackView
    skip_reason: str | None
    patient_id: int | None
    first_name: str
    last_name: str
    connection: str
    updated_at: datetime


_ViewQuery = Select[Writeback, Transaction, Patient | None, str | None, str]


def _view_query(practice_id: int) -> _ViewQuery:
    return (
        select(Writeback, Transaction, Patient, PatientAccount.account_number, Connection.name)
        .join(Transaction, Transaction.id == Writeback.transaction_id)
        .join(Connection, Connection.id == Writeback.connection_id)
        .outerjoin(Patient, Patient.id == Transaction.patient_id)
        .outerjoin(
            PatientAccount,
            (PatientAccount.patient_id == Transaction.patient_id)
            & (PatientAccount.connection_id == Writeback.connection_id),
        )
        .where(Connection.practice_id == practice_id)
    )


def _view(wb: Writeback, txn: Transaction, patient: Patient | None, account: str | None) -> WritebackView:
    return WritebackView(
        id=wb.id,
        status=wb.status,
        category=wb.category,
        processor_ref=txn.processor_ref,
        kind=txn.kind,
        payment_type=txn.payment_type,
        local_date=txn.local_date,
        gross_cents=txn.gross_cents,
        amount_cents=wb.amount_cents,
        patient_ref=patient.patient_ref if patient else None,
        account_number=account,
        error_code=wb.error_code,
        error_message=wb.error_message,
        pms_ref=wb.pms_ref,
        attempts=wb.attempts,
    )


async def list_writebacks(
    session: AsyncSession,
    practice_id: int,
    *,
    status: str | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: int = 200,
) -> list[WritebackView]:
    query = _filtered(_view_query(practice_id), WritebackFilter(status=status, since=since, until=until))
    rows = await session.execute(query.order_by(Writeback.id).limit(limit))
    return [_view(wb, txn, patient, account) for wb, txn, patient, account, _ in rows]


def _filtered(query: _ViewQuery, filters: WritebackFilter) -> _ViewQuery:
    if filters.status:
        query = query.where(Writeback.status == filters.status)
    if filters.since:
        query = query.where(Transaction.local_date >= filters.since)
    if filters.until:
        query = query.where(Transaction.local_date <= filters.until)
    if filters.payment_type:
        query = query.where(Transaction.payment_type == filters.payment_type)
    if filters.patient_id is not None:
        query = query.where(Transaction.patient_id == filters.patient_id)
    for word in filters.search.split()[:SEARCH_WORDS]:
        query = query.where(
            or_(
                and_(Patient.id.is_not(None), patient_word(word)),
                Transaction.processor_ref.icontains(word, autoescape=True),
            )
        )
    return query


async def reconciliation_rows(
    session: AsyncSession,
    practice_id: int,
    filters: WritebackFilter,
    *,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[ReconciliationRow], int]:
    """One page of the practice's writebacks under `filters`, newest first, and how many there are in all."""
    query = _filtered(_view_query(practice_id), filters)
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.execute(
        query.order_by(Writeback.local_date.desc(), Writeback.id.desc()).offset(offset).limit(limit)
    )
    return [_row(*row) for row in rows], int(total or 0)


async def reconciliation_row(
    session: AsyncSession, practice_id: int, writeback_id: int
) -> ReconciliationRow | None:
    """One of the practice's writebacks; None for another practice's, exactly as for a missing one."""
    found = (await session.execute(_view_query(practice_id).where(Writeback.id == writeback_id))).first()
    return _row(*found) if found is not None else None


def _row(
    wb: Writeback, txn: Transaction, patient: Patient | None, account: str | None, connection: str
) -> ReconciliationRow:
    return ReconciliationRow(
        view=_view(wb, txn, patient, account),
        skip_reason=wb.skip_reason,
        patient_id=patient.id if patient else None,
        first_name=patient.first_name if patient else "",
        last_name=patient.last_name if patient else "",
        connection=connection,
        updated_at=wb.updated_at,
    )


async def owned_writeback_ids(session: AsyncSession, practice_id: int, ids: Sequence[int]) -> set[int]:
    """Which of `ids` are writebacks of the practice (another practice's are not, exactly like missing ones)."""
    if not ids:
        return set()
    rows = await session.scalars(
        select(Writeback.id)
        .join(Connection, Connection.id == Writeback.connection_id)
        .where(Connection.practice_id == practice_id, Writeback.id.in_(list(ids)))
    )
    return set(rows)


async def _owned(session: AsyncSession, practice_id: int, ids: Sequence[int]) -> dict[int, Writeback]:
    rows = await session.scalars(
        select(Writeback)
        .join(Connection, Connection.id == Writeback.connection_id)
        .where(Connection.practice_id == practice_id, Writeback.id.in_(list(ids)))
        .with_for_update()
    )
    return {wb.id: wb for wb in rows}


async def retry_writebacks(
    session: AsyncSession, practice_id: int, ids: Sequence[int], *, actor: str
) -> list[ActionResult]:
    """Put failed writebacks (or ones held for manual posting) back in the queue for the next sync."""
    found = await _owned(session, practice_id, ids)
    results = []
    now = utcnow()
    for wid in ids:
        wb = found.get(wid)
        if wb is None:
            results.append(ActionResult(wid, False, "no such writeback in this practice"))
            continue
        held = (
            wb.status == WritebackStatus.SKIPPED.value and wb.skip_reason == SkipReason.HELD_FOR_MANUAL.value
        )
        if wb.status != WritebackStatus.FAILED.value and not held:
            results.append(ActionResult(wid, False, f"is {wb.status}; only failed writebacks can be retried"))
            continue
        previous = wb.error_code
        wb.status = WritebackStatus.PENDING.value
        wb.error_code = None
        wb.error_message = None
        wb.next_attempt_at = None
        wb.updated_at = now
        await record_audit(
            session, practice_id, actor, "writeback.retry", f"writeback:{wid}", {"previous_error": previous}
        )
        results.append(ActionResult(wid, True, "queued for the next sync"))
    if any(result.ok for result in results):
        await announce_work(session, practice_id)
    return results


async def _count_hand_posted_reversal(session: AsyncSession, wb: Writeback) -> None:
    """A cleared reversal is on the ledger (posted by hand, or found there): its original's remaining
    amount shrinks by it, or a later void or refund of the same payment would reverse it a second time."""
    txn = await session.get(Transaction, wb.transaction_id)
    if txn is None or txn.original_id is None or not TransactionKind(txn.kind).reverses_original:
        return
    original = await session.scalar(
        select(Writeback)
        .where(Writeback.transaction_id == txn.original_id, Writeback.connection_id == wb.connection_id)
        .with_for_update()
    )
    if original is not None and original.status == WritebackStatus.POSTED.value:
        original.reversed_cents += wb.amount_cents


async def clear_writebacks(
    session: AsyncSession, practice_id: int, ids: Sequence[int], *, actor: str
) -> list[ActionResult]:
    """Mark failed writebacks as reviewed and posted by hand: ledgerlink will never write them."""
    found = await _owned(session, practice_id, ids)
    results = []
    now = utcnow()
    for wid in ids:
        wb = found.get(wid)
        if wb is None:
            results.append(ActionResult(wid, False, "no such writeback in this practice"))
            continue
        if wb.status not in (WritebackStatus.FAILED.value, WritebackStatus.SKIPPED.value):
            reason = (
                "it is already in the PMS"
                if wb.status == WritebackStatus.POSTED.value
                else f"it is {wb.status}"
            )
            results.append(ActionResult(wid, False, f"cannot be cleared: {reason}"))
            continue
        previous = wb.error_code or wb.skip_reason
        wb.status = WritebackStatus.CLEARED.value
        wb.updated_at = now
        await _count_hand_posted_reversal(session, wb)
        await record_audit(
            session, practice_id, actor, "writeback.clear", f"writeback:{wid}", {"previous": previous}
        )
        results.append(ActionResult(wid, True, "cleared: marked as posted by hand"))
    return results
