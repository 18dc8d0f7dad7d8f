"""Sync reports, aggregated in SQL: one run's stored totals, or any date range over the writebacks."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.errors import NotFound
from ledgerlink.store.models import SyncRun, SyncRunTotal, Writeback, WritebackStatus


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

    Answered from `ix_writebacks_local_date` (connection, local date, category, amount) alone: the local
    date is kept on the writeback, so there is no join to transactions. Grouping by the bare column is
    cheaper than by its COALESCE (SQLite, 1M writebacks: 270 against 330 ms); NULL joins In Error here.
    """
    w = Writeback
    rows = await session.execute(
        select(w.category, func.count(), func.coalesce(func.sum(w.amount_cents), 0))
        .where(w.connection_id == connection_id, w.local_date >= since, w.local_date <= until)
        .group_by(w.category)
    )
    return SyncReport.from_totals((r[0] or ReportCategory.IN_ERROR.value, r[1], r[2]) for r in rows)


async def latest_run(session: AsyncSession, connection_id: int) -> SyncRun | None:
    return await session.scalar(
        select(SyncRun)
        .where(SyncRun.connection_id == connection_id, SyncRun.dry_run.is_(False))
        .order_by(SyncRun.id.desc())
        .limit(1)
    )


TERMINAL = tuple(s.value for s in WritebackStatus if s.is_terminal)
