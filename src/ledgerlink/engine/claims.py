"""The queries that bring due writebacks in and decide them: enrolment, claiming, and resolving each
refund's original before the writeback rules decide what to write."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, Select, and_, bindparam, func, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory
from ledgerlink.domain.rules import (
    Decision,
    Defer,
    Fail,
    OriginalPosting,
    OriginalState,
    PostPayment,
    PostReversal,
    Skip,
    WritebackRules,
    decide,
)
from ledgerlink.domain.transactions import PaymentType, Transaction, TransactionKind
from ledgerlink.engine.work import (
    CLEARED,
    FAILED,
    IN_FLIGHT,
    PENDING,
    POSTED,
    SKIPPED,
    Item,
)
from ledgerlink.store.models import Alert, PatientAccount
from ledgerlink.store.models import Transaction as TransactionRow
from ledgerlink.store.models import Writeback as WritebackRow


async def new_alerts(
    session: AsyncSession, alerts: list[tuple[Item, LoadErrorCode, str]]
) -> list[tuple[Item, LoadErrorCode, str]]:
    """The alerts not raised before: a writeback retried and failing again for the same reason would
    otherwise leave the office a second task for one problem."""
    if not alerts:
        return alerts
    ids = [item.writeback_id for item, _, _ in alerts]
    rows = await session.execute(select(Alert.writeback_id, Alert.code).where(Alert.writeback_id.in_(ids)))
    raised = {(writeback_id, code) for writeback_id, code in rows}
    return [(item, code, m) for item, code, m in alerts if (item.writeback_id, code.value) not in raised]


DUE_STATUSES = (PENDING, IN_FLIGHT)


def due_filter(connection_id: Any, now: Any, statuses: Sequence[str] = DUE_STATUSES) -> Any:
    """Due writebacks of a connection; `connection_id` and `now` are values or bound parameters."""
    status = WritebackRow.status == statuses[0] if len(statuses) == 1 else WritebackRow.status.in_(statuses)
    return and_(
        WritebackRow.connection_id == connection_id,
        status,
        or_(WritebackRow.next_attempt_at.is_(None), WritebackRow.next_attempt_at <= now),
    )


async def count_due(session: AsyncSession, connection_id: int, now: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(WritebackRow).where(due_filter(connection_id, now))
        )
        or 0
    )


async def claim(session: AsyncSession, connection_id: int, after_id: int, limit: int) -> list[Item]:
    """The next `limit` due writebacks of one connection after `after_id`, in id order."""
    return (await claim_many(session, [(connection_id, after_id)], limit))[connection_id]


CLAIMS_PER_STATEMENT = 32
"""Connections claimed by one statement (two `UNION ALL` terms each; SQLite allows 500). Compiling a
statement costs about 5 ms a term, once per process and size; larger statements gain little after that."""


async def claim_many(
    session: AsyncSession, cursors: Sequence[tuple[int, int]], limit: int
) -> dict[int, list[Item]]:
    """For each `(connection_id, after_id)`, the next `limit` due writebacks after `after_id`, in id order.

    One term per connection and due status, each limited on its own, joined by `UNION ALL` into one
    statement for many connections: with `status IN (...)` the due index cannot hand rows over in id order,
    so SQLite (and PostgreSQL before 17) would join and sort every remaining due row on each claim, which
    makes a long backlog quadratic. Per status, the index walks in id order and stops after `limit` rows.
    """
    now = utcnow()
    claimed: dict[int, list[Item]] = {connection_id: [] for connection_id, _ in cursors}
    connection = await session.connection()  # Core rows: the ORM adds nothing to plain columns but cost
    for start in range(0, len(cursors), CLAIMS_PER_STATEMENT):
        chunk = cursors[start : start + CLAIMS_PER_STATEMENT]
        size = _claim_size(len(chunk))
        params: dict[str, Any] = {"now": now, "lim": limit}
        for k in range(size):
            connection_id, after_id = chunk[k] if k < len(chunk) else (0, 0)  # padding: no connection 0
            params[f"c{k}"] = connection_id
            params[f"a{k}"] = after_id
        for row in await connection.execute(_claim_statement(size), params):
            claimed[row[18]].append(_item(row))
    for items in claimed.values():
        items.sort(key=lambda item: item.writeback_id)
        del items[limit:]
    return claimed


def _claim_size(n: int) -> int:
    """`n` rounded up to a power of two: a handful of statement shapes serve every batch size."""
    size = 1
    while size < n:
        size *= 2
    return min(size, CLAIMS_PER_STATEMENT)


@functools.cache
def _claim_statement(size: int) -> Any:
    """The claim for `size` connections, built once per size. Building a statement of hundreds of terms
    and deriving its cache key cost more than running it; a statement object keeps its key once derived."""
    terms = [select(_due_query(k, status).subquery()) for k in range(size) for status in DUE_STATUSES]
    return terms[0] if len(terms) == 1 else union_all(*terms)


def _due_query(k: int, status: str) -> Select[*tuple[Any, ...]]:
    """Term `k`: the due writebacks of one status of connection `:c{k}` after id `:a{k}`."""
    t = TransactionRow
    w = WritebackRow
    return (
        select(
            w.id,
            w.status,
            w.uncertain,
            w.attempts,
            t.id.label("transaction_id"),
            t.kind,
            t.payment_type,
            t.gross_cents,
            t.fee_cents.label("transaction_fee_cents"),
            t.net_cents,
            t.occurred_at,
            t.processor_ref,
            t.original_id,
            t.original_ref,
            PatientAccount.account_number,
            w.amount_cents,
            w.fee_cents,
            w.posting_date,
            w.connection_id,
        )
        .join(t, t.id == w.transaction_id)
        .outerjoin(
            PatientAccount,
            and_(PatientAccount.patient_id == t.patient_id, PatientAccount.connection_id == w.connection_id),
        )
        .where(
            due_filter(bindparam(f"c{k}"), bindparam("now", type_=w.next_attempt_at.type), (status,)),
            w.id > bindparam(f"a{k}"),
        )
        .order_by(w.id)
        .limit(bindparam("lim", type_=Integer))
    )


def _item(row: Any) -> Item:
    txn = Transaction(
        id=row[4],
        kind=TransactionKind(row[5]),
        payment_type=PaymentType(row[6]),
        gross_cents=row[7],
        fee_cents=row[8],
        net_cents=row[9],
        occurred_at=row[10],
        processor_ref=row[11],
        original_id=row[12],
    )
    account = row[14].strip() if row[14] else None
    return Item(
        row[0], row[1], bool(row[2]), row[3], txn, account or None, row[13], (row[15], row[16], row[17])
    )


async def decide_batch(
    session: AsyncSession, connection_id: int, rules: WritebackRules, items: list[Item]
) -> None:
    """Attach a decision to each item, resolving originals of refunds, voids and chargebacks."""
    await _resolve_late_originals(session, items)
    original_ids = {item.txn.original_id for item in items if item.txn.original_id is not None}
    originals: dict[int, tuple[Any, ...]] = {}
    if original_ids:
        rows = await session.execute(
            select(
                WritebackRow.transaction_id,
                WritebackRow.id,
                WritebackRow.status,
                WritebackRow.uncertain,
                WritebackRow.pms_ref,
                WritebackRow.amount_cents,
                WritebackRow.reversed_cents,
                WritebackRow.fee_cents,
                PatientAccount.account_number,
            )
            .join(TransactionRow, TransactionRow.id == WritebackRow.transaction_id)
            .outerjoin(
                PatientAccount,
                and_(
                    PatientAccount.patient_id == TransactionRow.patient_id,
                    PatientAccount.connection_id == WritebackRow.connection_id,
                ),
            )
            .where(WritebackRow.connection_id == connection_id, WritebackRow.transaction_id.in_(original_ids))
        )
        originals = {row[0]: tuple(row) for row in rows}
    unconfirmed = await _unconfirmed_reversals(session, connection_id, original_ids)

    cancelled: set[int] = set()
    reversing: set[int] = set()
    # Voids first, so a sale voided before posting is cancelled before this very batch could post it.
    ordered = sorted(items, key=lambda i: i.txn.kind is not TransactionKind.VOID)
    for item in ordered:
        if item.writeback_id in cancelled:
            continue
        original = None
        if item.txn.kind.reverses_original:
            row = originals.get(item.txn.original_id or -1)
            original = _original_posting(item, row)
            item.original_account = (row[8] or "").strip() if row is not None else ""
            if original.writeback_id is not None and original.writeback_id in reversing:
                item.decision = Defer("another reversal of the same payment is in this batch")
                continue
            if unconfirmed.get(item.txn.original_id or -1, set()) - {item.writeback_id}:
                # Its amount is not yet counted as reversed: deciding now could reverse the payment twice.
                item.decision = Defer(
                    "an earlier reversal of the same payment awaits confirmation from the PMS"
                )
                continue
        decision = decide(item.txn, rules, account_number=item.account_number, original=original)
        if item.maybe_written:
            decision = _as_attempted(item, decision)
        if isinstance(decision, PostReversal):
            reversing.add(decision.original_writeback_id)
        if isinstance(decision, Skip) and decision.cancels_original_writeback_id is not None:
            cancelled.add(decision.cancels_original_writeback_id)
        item.decision = decision
    for item in items:
        if item.writeback_id in cancelled:
            item.decision = Defer("cancelled by a void in this batch")  # recorded with the void's outcome


async def _unconfirmed_reversals(
    session: AsyncSession, connection_id: int, original_ids: set[int]
) -> dict[int, set[int]]:
    """Reversals whose last attempt may have reached the PMS, by the transaction id of their original.

    Two small queries on purpose: the reversals of these originals (index on `original_id`), then their
    writebacks on this connection (unique index on `transaction_id`). Joined in one statement, SQLite
    walks the connection's pending writebacks instead, which is the whole backlog early in a long run.
    """
    if not original_ids:
        return {}
    reversal_of: dict[int, int] = {}
    for txn_id, original_id in await session.execute(
        select(TransactionRow.id, TransactionRow.original_id).where(
            TransactionRow.original_id.in_(original_ids)
        )
    ):
        if original_id is not None:
            reversal_of[txn_id] = original_id
    rows = await session.execute(
        select(WritebackRow.transaction_id, WritebackRow.id).where(
            WritebackRow.transaction_id.in_(list(reversal_of)),
            WritebackRow.connection_id == connection_id,
            or_(
                WritebackRow.status == IN_FLIGHT,
                and_(WritebackRow.status.in_((PENDING, FAILED)), WritebackRow.uncertain.is_(True)),
            ),
        )
    )
    found: dict[int, set[int]] = {}
    for txn_id, writeback_id in rows:
        found.setdefault(reversal_of[txn_id], set()).add(writeback_id)
    return found


def _as_attempted(item: Item, decision: Decision) -> Decision:
    """The decision for a writeback whose last attempt may be in the PMS: exactly what was attempted.

    The lookup that comes first matches what was written, and a repeat must be the same entry; amounts and
    dates decided afresh could differ (settings changed, another reversal was posted since).
    """
    amount, fee, posting_date = item.intent
    if isinstance(decision, PostPayment | PostReversal) and posting_date is not None and amount > 0:
        return dataclasses.replace(decision, amount_cents=amount, fee_cents=fee, posting_date=posting_date)
    if isinstance(decision, Fail | Skip):
        why = decision.message if isinstance(decision, Fail) else decision.reason.description
        return Fail(
            LoadErrorCode.MAY_BE_IN_PMS,
            f"an earlier attempt may be in the PMS, and it cannot be written again as it was: {why}",
            ReportCategory.IN_ERROR,
            amount or decision.amount_cents,
        )
    return decision


async def _resolve_late_originals(session: AsyncSession, items: list[Item]) -> None:
    """A refund imported before its original: link it now if the original has arrived since."""
    missing = {
        item.original_ref: item for item in items if item.txn.original_id is None and item.original_ref
    }
    if not missing:
        return
    practice_id = await session.scalar(
        select(TransactionRow.practice_id).where(TransactionRow.id == items[0].txn.id)
    )
    rows = await session.execute(
        select(TransactionRow.processor_ref, TransactionRow.id).where(
            TransactionRow.practice_id == practice_id, TransactionRow.processor_ref.in_(list(missing))
        )
    )
    for ref, original_id in rows:
        for item in items:
            if item.original_ref == ref and item.txn.original_id is None:
                item.txn = dataclasses.replace(item.txn, original_id=original_id)
                await session.execute(
                    update(TransactionRow)
                    .where(TransactionRow.id == item.txn.id)
                    .values(original_id=original_id)
                )


def _original_posting(item: Item, row: tuple[Any, ...] | None) -> OriginalPosting:
    if row is None:
        return OriginalPosting(OriginalState.UNKNOWN)
    _, wid, status, uncertain, pms_ref, amount, reversed_cents, fee, _account = row
    if status == POSTED:
        state = OriginalState.POSTED
    elif status in (SKIPPED, CLEARED):
        state = OriginalState.HANDLED_ELSEWHERE
    elif status == FAILED:
        state = OriginalState.NOT_YET_POSTED
    elif status == PENDING and not uncertain and item.txn.kind is TransactionKind.VOID:
        state = OriginalState.NOT_YET_POSTED  # a void cancels a sale that has not been written yet
    else:
        state = OriginalState.IN_FLIGHT
    return OriginalPosting(state, wid, pms_ref, amount, reversed_cents, fee_cents=fee)
