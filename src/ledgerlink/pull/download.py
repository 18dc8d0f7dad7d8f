"""Downloading: what a pull connection's PMS should load now, decided by the engine's rules.

A download enrols the transactions new to the connection, claims its due writebacks after the cursor, and
lets the engine decide each one (`claims.decide_batch`, the same code a sync runs). Then, in the one
transaction the download is:

- a skip (type turned off, before the start date, declined, voided before posting...) is recorded as
  skipped under the run, counted in its report and not handed out;
- a failure (no account number: Invalid Patient ID; a refund of a payment never posted...) is recorded as
  failed with an alert, like a sync records it, and not handed out;
- a payment or a reversal is marked in flight with the amount, fee and date decided, and handed out. It
  stays in flight until the PMS acknowledges it; until then every download from a cursor before it hands
  it out again, with the same amounts (`redelivered`), so a PMS that lost a page gets it back by
  starting over;
- a deferral (a reversal whose original is handed out but not yet acknowledged) waits for a later
  download.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import cents_to_decimal
from ledgerlink.domain.report import ReportCategory, failure_category
from ledgerlink.domain.rules import Fail, PostPayment, PostReversal, Skip
from ledgerlink.engine.claims import claim, decide_batch, new_alerts
from ledgerlink.engine.run_store import enroll_many
from ledgerlink.engine.work import FAILED, IN_FLIGHT, PENDING, SKIPPED, WB, Item
from ledgerlink.practices import rules_for
from ledgerlink.pull.connection import pull_connection
from ledgerlink.pull.runs import open_run
from ledgerlink.store.models import Alert, Practice
from ledgerlink.store.models import Transaction as TransactionRow

_ALERTS = cast(Table, Alert.__table__)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_BATCHES = 20
"""Claims one download makes at most while every item it finds is skipped or failed (a backlog of
declines, say), so that a page is rarely empty while more is due, and a request's work stays bounded."""


@dataclass(frozen=True, slots=True)
class PullItem:
    """One ledger entry for the PMS to load. Amounts are positive; a reversal is a negative entry."""

    id: int  # the writeback id: the cursor unit, and the key the PMS keeps to never load it twice
    processor_ref: str
    kind: str
    payment_type: str
    entry: str  # "payment" or "reversal"
    amount_cents: int
    amount: Decimal
    fee_cents: int  # a separate fee entry (gross plus fee, or a void taking the fee entry back); else 0
    fee: Decimal
    currency: str
    posting_date: date
    account_number: str | None
    original_pms_ref: str | None  # reversals: the PMS reference of the payment being reversed
    original_account_number: str | None  # reversals: the account that payment was posted to
    card_brand: str
    card_last4: str
    redelivered: bool  # handed out before without an acknowledgement: check for it before loading


@dataclass(frozen=True, slots=True)
class DownloadPage:
    run_id: int
    items: list[PullItem]
    next_cursor: int
    has_more: bool


async def download(
    session: AsyncSession,
    practice: Practice,
    *,
    cursor: int = 0,
    limit: int = DEFAULT_LIMIT,
    connection_name: str | None = None,
    actor: str,
) -> DownloadPage:
    """The next writebacks of the practice's pull connection to load, after `cursor`.

    Run it in a transaction of its own (`sessions.begin()`): the connection is held until it commits.
    `next_cursor` is the last writeback looked at (handed out or not); `has_more` says whether anything
    due comes after it.
    """
    limit = max(1, min(limit, MAX_LIMIT))
    connection = await pull_connection(session, practice, connection_name, hold=True)
    run = await open_run(session, connection, practice)
    await enroll_many(session, [connection.id])
    rules = rules_for(connection, practice)
    handed_out: list[Item] = []
    after = cursor
    has_more = False
    for _ in range(MAX_BATCHES):
        items = await claim(session, connection.id, after, limit + 1)
        has_more = len(items) > limit
        items = items[:limit]
        if not items:
            break
        await decide_batch(session, connection.id, rules, items)
        handed_out.extend(await _settle(session, practice.id, connection.id, run.id, items))
        after = items[-1].writeback_id
        if handed_out or not has_more:
            break
    if handed_out:
        await record_audit(
            session,
            practice.id,
            actor,
            "pull.download",
            f"run:{run.id}",
            {"ids": [item.writeback_id for item in handed_out]},
        )
    return DownloadPage(run.id, await _pull_items(session, handed_out), after, has_more)


async def _settle(
    session: AsyncSession, practice_id: int, connection_id: int, run_id: int, items: list[Item]
) -> list[Item]:
    """Record the skips and failures of a decided batch and mark what is handed out; returns the latter."""
    now = utcnow()
    outcomes: list[dict[str, Any]] = []
    deliveries: list[dict[str, Any]] = []
    alerts: list[tuple[Item, LoadErrorCode, str]] = []
    handed_out: list[Item] = []

    def outcome(wid: int, status: str, category: str, amount: int, **fields: Any) -> None:
        values = {"code": None, "message": None, "skip": None, "uncertain": False} | fields
        outcomes.append(
            {"wid": wid, "status": status, "category": category, "amount": amount, "run": run_id} | values
        )

    for item in items:
        decision = item.decision
        if isinstance(decision, Skip):
            outcome(
                item.writeback_id,
                SKIPPED,
                decision.category.value,
                decision.amount_cents,
                skip=decision.reason.value,
            )
            if decision.cancels_original_writeback_id is not None:
                outcome(
                    decision.cancels_original_writeback_id,
                    SKIPPED,
                    ReportCategory.CANCELLED_BY_VOID.value,
                    decision.amount_cents,
                    skip=decision.reason.value,
                )
        elif isinstance(decision, Fail):
            category = failure_category(decision.code)
            outcome(
                item.writeback_id,
                FAILED,
                category.value,
                decision.amount_cents,
                code=decision.code.value,
                message=decision.message,
                uncertain=item.maybe_written,
            )
            alerts.append((item, decision.code, decision.message))
        elif isinstance(decision, PostPayment | PostReversal):
            deliveries.append(
                {
                    "wid": item.writeback_id,
                    "amount": decision.amount_cents,
                    "fee": decision.fee_cents,
                    "posting_date": decision.posting_date,
                    "tries": 1 if item.status == PENDING else 0,
                    "run": run_id,
                }
            )
            handed_out.append(item)
    connection = await session.connection()
    if outcomes:
        await connection.execute(
            update(WB)
            .where(WB.c.id == bindparam("wid"))
            .values(
                status=bindparam("status"),
                category=bindparam("category"),
                amount_cents=bindparam("amount"),
                skip_reason=bindparam("skip"),
                error_code=bindparam("code"),
                error_message=bindparam("message"),
                uncertain=bindparam("uncertain"),
                next_attempt_at=None,
                last_run_id=bindparam("run"),
                updated_at=now,
            ),
            outcomes,
        )
    if deliveries:
        # No category yet: until the PMS acknowledges it, a run's report counts it as In Error.
        await connection.execute(
            update(WB)
            .where(WB.c.id == bindparam("wid"))
            .values(
                status=IN_FLIGHT,
                category=None,
                amount_cents=bindparam("amount"),
                fee_cents=bindparam("fee"),
                posting_date=bindparam("posting_date", type_=WB.c.posting_date.type),
                attempts=WB.c.attempts + bindparam("tries"),
                error_code=None,
                error_message=None,
                next_attempt_at=None,
                last_run_id=bindparam("run"),
                updated_at=now,
            ),
            deliveries,
        )
    await raise_alerts(session, practice_id, connection_id, alerts)
    return handed_out


async def raise_alerts(
    session: AsyncSession,
    practice_id: int,
    connection_id: int,
    alerts: list[tuple[Item, LoadErrorCode, str]],
) -> None:
    """Alerts for the office, worded as a sync words them; one already raised for the same writeback and
    code is not raised again (`claims.new_alerts`)."""
    fresh = await new_alerts(session, alerts)
    if fresh:
        connection = await session.connection()
        await connection.execute(
            insert(_ALERTS),
            [
                {
                    "practice_id": practice_id,
                    "connection_id": connection_id,
                    "writeback_id": item.writeback_id,
                    "code": code.value,
                    "message": f"{item.txn.kind.value} {item.txn.processor_ref}: {message}",
                    "delivered_to_pms": False,
                    "created_at": utcnow(),
                }
                for item, code, message in fresh
            ],
        )


async def _pull_items(session: AsyncSession, items: list[Item]) -> list[PullItem]:
    if not items:
        return []
    extra = {
        row.id: row
        for row in await session.execute(
            select(
                TransactionRow.id,
                TransactionRow.currency,
                TransactionRow.card_brand,
                TransactionRow.card_last4,
            ).where(TransactionRow.id.in_([item.txn.id for item in items]))
        )
    }
    pulled = []
    for item in items:
        decision = item.decision
        assert isinstance(decision, PostPayment | PostReversal)
        reversal = isinstance(decision, PostReversal)
        txn = extra[item.txn.id]
        pulled.append(
            PullItem(
                id=item.writeback_id,
                processor_ref=item.txn.processor_ref,
                kind=item.txn.kind.value,
                payment_type=item.txn.payment_type.value,
                entry="reversal" if reversal else "payment",
                amount_cents=decision.amount_cents,
                amount=cents_to_decimal(decision.amount_cents),
                fee_cents=decision.fee_cents,
                fee=cents_to_decimal(decision.fee_cents),
                currency=txn.currency,
                posting_date=decision.posting_date,
                account_number=item.account_number,
                original_pms_ref=decision.original_pms_ref if isinstance(decision, PostReversal) else None,
                original_account_number=(item.original_account or None) if reversal else None,
                card_brand=txn.card_brand,
                card_last4=txn.card_last4,
                redelivered=item.maybe_written,
            )
        )
    return pulled
