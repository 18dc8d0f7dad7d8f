"""What staff do with writebacks: list them, Retry (after fixing the cause) and Clear (posted by hand).

These mirror the Merchant Transfers screen of seed 001, with one improvement: each id gets its own answer,
so a mistyped id never hides what happened to the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.domain.rules import SkipReason
from ledgerlink.domain.transactions import TransactionKind
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


def _view_query(practice_id: int) -> Select[Writeback, Transaction, str, str]:
    return (
        select(Writeback, Transaction, Patient.patient_ref, PatientAccount.account_number)
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


async def list_writebacks(
    session: AsyncSession,
    practice_id: int,
    *,
    status: str | None = None,
    since: date | None = None,
    until: date | None = None,
    limit: int = 200,
) -> list[WritebackView]:
    query = _view_query(practice_id)
    if status:
        query = query.where(Writeback.status == status)
    if since:
        query = query.where(Transaction.local_date >= since)
    if until:
        query = query.where(Transaction.local_date <= until)
    rows = await session.execute(query.order_by(Writeback.id).limit(limit))
    return [
        WritebackView(
            id=wb.id,
            status=wb.status,
            category=wb.category,
            processor_ref=txn.processor_ref,
            kind=txn.kind,
            payment_type=txn.payment_type,
            local_date=txn.local_date,
            gross_cents=txn.gross_cents,
            amount_cents=wb.amount_cents,
            patient_ref=patient_ref,
            account_number=account,
            error_code=wb.error_code,
            error_message=wb.error_message,
            pms_ref=wb.pms_ref,
            attempts=wb.attempts,
        )
        for wb, txn, patient_ref, account in rows
    ]


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
