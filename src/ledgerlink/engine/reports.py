"""Sync reports, aggregated in SQL: one run's stored totals, or any date range over the writebacks."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.errors import NotFound
from ledgerlink.store.models import SyncRun, SyncRunTotal, Transaction, Writeback, WritebackStatus


async def run_report(session: AsyncSession, run_id: int) -> SyncReport:
    if await session.get(SyncRun, run_id) is None:
        raise NotFound(f"no sync run {run_id}; see `ledgerlink runs`", field="run")
    rows = await session.execute(
        select(SyncRunTotal.category, SyncRunTotal.count, SyncRunTotal.total_cents).where(
            SyncRunTotal.run_id == run_id
        )
    )
    return SyncReport.from_totals((r[0], r[1], r[2]) for r in rows)


async def range_report(session: AsyncSession, connection_id: int, since: date, until: date) -> SyncReport:
    """Where every transaction dated `since`..`until` (practice-local dates) stands now, by category.

    Writebacks still waiting for a first attempt are counted under In Error only once they have failed;
    untouched pending ones have no category yet and are reported as In Error ("not yet written").
    """
    w = Writeback
    category = func.coalesce(w.category, ReportCategory.IN_ERROR.value)
    rows = await session.execute(
        select(category, func.count(), func.coalesce(func.sum(w.amount_cents), 0))
        .join(Transaction, Transaction.id == w.transaction_id)
        .where(
            w.connection_id == connection_id, Transaction.local_date >= since, Transaction.local_date <= until
        )
        .group_by(category)
    )
    return SyncReport.from_totals((r[0], r[1], r[2]) for r in rows)


async def latest_run(session: AsyncSession, connection_id: int) -> SyncRun | None:
    return await session.scalar(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id, SyncRun.dry_run.is_(False))
        .order_by(SyncRun.id.desc())
        .limit(1)
    )


TERMINAL = tuple(s.value for s in WritebackStatus if s.is_terminal)
