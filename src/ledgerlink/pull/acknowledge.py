"""Acknowledging: what the PMS did with each entry it downloaded, recorded all at once.

Each result names a writeback the PMS downloaded. `loaded` records it posted with the PMS's reference
(a reversal also counts against its original, so a later refund cannot reverse more than is left);
`failed` records the load error the PMS gives (one of `LoadErrorCode`) and raises an alert, as a failed
sync write does. Anything already in the ledger (posted, or cleared by staff) answers `already_processed`
and keeps its first reference: an acknowledgement sent twice changes nothing. Ids of other practices, or
of other connections, answer `not_found` exactly like ids that do not exist.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import failure_category
from ledgerlink.domain.rules import category_of
from ledgerlink.domain.transactions import PaymentType, Transaction, TransactionKind
from ledgerlink.engine.work import CLEARED, FAILED, IN_FLIGHT, POSTED, Item
from ledgerlink.pull.download import raise_alerts
from ledgerlink.pull.runs import count_already_processed, practice_run, require_open
from ledgerlink.store.models import PatientAccount, Practice, SyncRun, Writeback
from ledgerlink.store.models import Transaction as TransactionRow


class AckStatus(enum.StrEnum):
    LOADED = "loaded"
    FAILED = "failed"
    ALREADY_PROCESSED = "already_processed"
    NOT_FOUND = "not_found"
    NOT_DOWNLOADED = "not_downloaded"


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    writeback_id: int
    loaded: bool
    pms_ref: str | None = None  # required when loaded
    error_code: LoadErrorCode | None = None  # required when failed
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class AckResult:
    writeback_id: int
    status: AckStatus
    message: str
    pms_ref: str | None = None  # for loaded and already processed: the reference ledgerlink keeps


async def acknowledge(
    session: AsyncSession,
    practice: Practice,
    run_id: int,
    acks: Sequence[Acknowledgement],
    *,
    actor: str,
) -> list[AckResult]:
    """Record the PMS's results for writebacks it downloaded, in the caller's transaction, in order.

    The run must be the practice's open pull run (NotFound, Conflict). One answer per acknowledgement.
    """
    run = await practice_run(session, practice, run_id, hold=True)
    require_open(run)
    ids = {ack.writeback_id for ack in acks}
    rows = await session.execute(
        select(Writeback, TransactionRow)
        .join(TransactionRow, TransactionRow.id == Writeback.transaction_id)
        .where(Writeback.id.in_(ids), Writeback.connection_id == run.connection_id)
    )
    found = {wb.id: (wb, txn) for wb, txn in rows}
    results: list[AckResult] = []
    alerts: list[tuple[Item, LoadErrorCode, str]] = []
    for ack in acks:
        if ack.writeback_id not in found:
            results.append(
                AckResult(ack.writeback_id, AckStatus.NOT_FOUND, "no such download in this practice")
            )
            continue
        wb, txn = found[ack.writeback_id]
        results.append(await _apply(session, run, wb, txn, ack, alerts))
    await raise_alerts(session, practice.id, run.connection_id, alerts)
    await record_audit(
        session,
        practice.id,
        actor,
        "pull.acknowledge",
        f"run:{run.id}",
        {
            "results": [
                {"id": r.writeback_id, "status": r.status.value, "pms_ref": r.pms_ref} for r in results
            ]
        },
    )
    return results


async def _apply(
    session: AsyncSession,
    run: SyncRun,
    wb: Writeback,
    txn: TransactionRow,
    ack: Acknowledgement,
    alerts: list[tuple[Item, LoadErrorCode, str]],
) -> AckResult:
    now = utcnow()
    if wb.status in (POSTED, CLEARED):
        if run.since_date is None or wb.local_date < run.since_date:
            # The report's window misses it: count it here, or the run would not show the repeat.
            await count_already_processed(session, run, wb.amount_cents)
        how = f"posted as {wb.pms_ref}" if wb.status == POSTED else "cleared: posted by hand"
        return AckResult(
            wb.id, AckStatus.ALREADY_PROCESSED, f"already processed ({how}); nothing changed", wb.pms_ref
        )
    if (
        wb.status == FAILED
        and not ack.loaded
        and ack.error_code is not None
        and wb.error_code == ack.error_code.value
    ):
        return AckResult(wb.id, AckStatus.FAILED, "failure already recorded; nothing changed")
    if wb.status != IN_FLIGHT:
        return AckResult(
            wb.id,
            AckStatus.NOT_DOWNLOADED,
            f"is {wb.status}, not awaiting an acknowledgement: only downloaded entries can be acknowledged",
        )
    domain_txn = _domain_transaction(txn)
    wb.last_run_id = run.id
    wb.updated_at = now
    wb.next_attempt_at = None
    if ack.loaded:
        assert ack.pms_ref is not None
        wb.status = POSTED
        wb.pms_ref = ack.pms_ref
        wb.category = category_of(domain_txn).value
        wb.error_code = None
        wb.error_message = None
        wb.uncertain = False
        if domain_txn.kind.reverses_original and txn.original_id is not None:
            await _count_reversal(session, wb, txn.original_id)
        return AckResult(wb.id, AckStatus.LOADED, "posted", wb.pms_ref)
    assert ack.error_code is not None
    message = ack.error_message.strip() or ack.error_code.explanation
    wb.status = FAILED
    wb.category = failure_category(ack.error_code).value
    wb.error_code = ack.error_code.value
    wb.error_message = message
    wb.uncertain = False
    account = await session.scalar(
        select(PatientAccount.account_number).where(
            PatientAccount.patient_id == txn.patient_id, PatientAccount.connection_id == wb.connection_id
        )
    )
    item = Item(wb.id, wb.status, False, wb.attempts, domain_txn, account, txn.original_ref)
    alerts.append((item, ack.error_code, f"the PMS could not load it: {message}"))
    return AckResult(wb.id, AckStatus.FAILED, "recorded as failed; staff Retry it once the cause is fixed")


async def _count_reversal(session: AsyncSession, reversal: Writeback, original_txn_id: int) -> None:
    """A loaded reversal takes its amount off what is left of the original payment in the PMS."""
    original = await session.scalar(
        select(Writeback).where(
            Writeback.transaction_id == original_txn_id, Writeback.connection_id == reversal.connection_id
        )
    )
    if original is not None:
        original.reversed_cents += reversal.amount_cents


def _domain_transaction(row: TransactionRow) -> Transaction:
    return Transaction(
        id=row.id,
        kind=TransactionKind(row.kind),
        payment_type=PaymentType(row.payment_type),
        gross_cents=row.gross_cents,
        fee_cents=row.fee_cents,
        net_cents=row.net_cents,
        occurred_at=row.occurred_at,
        processor_ref=row.processor_ref,
        original_id=row.original_id,
    )
