"""Pull runs: the sync run each download belongs to, and its seed-000 sync report.

A pull run opens with the first download when none is open on the connection and stays open, collecting
every download and acknowledgement, until the PMS finishes it (its "Download Transactions" is done) or, if
the PMS never does, until a download finds it older than `RUN_MAX_AGE` and closes it first.

The report is the engine's (`run_store.store_totals`): what the run handed out, skipped or had
acknowledged, by category, plus everything of the run's window (the practice's yesterday and today) that
was already processed before. Handed out but never acknowledged counts as In Error: nobody confirmed it.
An acknowledgement of something already loaded is Already Processed; when it is older than the window
(so the engine's count would miss it) it is kept in the run's totals as it happens and added at the end.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine.run_store import FinishRequest, Totals, store_totals
from ledgerlink.engine.work import default_window_start
from ledgerlink.errors import Conflict, NotFound
from ledgerlink.practices import PULL_KIND
from ledgerlink.pull.connection import hold_connection
from ledgerlink.store.models import Connection, Practice, SyncRun, SyncRunTotal

PULL_TRIGGER = "pull"
RUNNING = "running"
DONE = "done"
RUN_MAX_AGE = timedelta(hours=12)
"""A pull run left open this long is closed by the next download: its PMS stopped without finishing it,
and one run a working day keeps the reports readable."""


async def open_run(session: AsyncSession, connection: Connection, practice: Practice) -> SyncRun:
    """The connection's open pull run, or a new one. The caller holds the connection (see `hold_connection`)."""
    run = await session.scalar(
        select(SyncRun)
        .where(
            SyncRun.connection_id == connection.id,
            SyncRun.trigger == PULL_TRIGGER,
            SyncRun.status == RUNNING,
        )
        .order_by(SyncRun.id.desc())
        .limit(1)
    )
    now = utcnow()
    if run is not None and run.started_at < now - RUN_MAX_AGE:
        await finish_run(session, run, note="closed by a later download: the PMS did not finish it")
        run = None
    if run is None:
        run = SyncRun(
            connection_id=connection.id,
            trigger=PULL_TRIGGER,
            status=RUNNING,
            since_date=default_window_start(practice.timezone),
            started_at=now,
        )
        session.add(run)
        await session.flush()
    return run


async def practice_run(
    session: AsyncSession, practice: Practice, run_id: int, *, hold: bool = False
) -> SyncRun:
    """A pull run of the practice; another practice's run, or one that is not a pull run, is not found.

    With `hold`, the run's connection is held for the rest of the transaction and the run read afresh.
    """
    connection_id = await session.scalar(
        select(SyncRun.connection_id)
        .join(Connection, Connection.id == SyncRun.connection_id)
        .where(
            SyncRun.id == run_id,
            SyncRun.trigger == PULL_TRIGGER,
            Connection.practice_id == practice.id,
            Connection.kind == PULL_KIND,
        )
    )
    if connection_id is None:
        raise NotFound(f"no pull run {run_id} in this practice", field="run_id")
    if hold:
        await hold_connection(session, connection_id)
    run = await session.get(SyncRun, run_id, populate_existing=True)
    assert run is not None
    return run


def require_open(run: SyncRun) -> None:
    if run.status != RUNNING:
        raise Conflict(
            f"pull run {run.id} is finished; download again to open a new run and acknowledge with its run_id",
            field="run_id",
        )


async def count_already_processed(session: AsyncSession, run: SyncRun, cents: int) -> None:
    """Count one acknowledgement of something loaded long ago (before the run's window) in the run's report."""
    key = ReportCategory.ALREADY_PROCESSED.value
    row = await session.get(SyncRunTotal, (run.id, key))
    if row is None:
        session.add(SyncRunTotal(run_id=run.id, category=key, count=1, total_cents=cents))
    else:
        row.count += 1
        row.total_cents += cents
    await session.flush()


async def finish_run(session: AsyncSession, run: SyncRun, *, note: str | None = None) -> SyncReport:
    """Close the run and store its report; finishing a finished run just returns its report."""
    if run.status != RUNNING:
        return await stored_report(session, run.id)
    totals = await _store_totals(session, run)
    await session.execute(
        update(SyncRun)
        .where(SyncRun.id == run.id)
        .values(status=DONE, finished_at=utcnow(), error=note)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(run)
    return _report(totals)


async def current_report(session: AsyncSession, run: SyncRun) -> SyncReport:
    """The run's report: the stored one once finished; while open, what it would be if finished now.

    For an open run the totals are built exactly as finishing builds them, in this session's transaction,
    which is then rolled back: looking at a report changes nothing.
    """
    if run.status != RUNNING:
        return await stored_report(session, run.id)
    try:
        return _report(await _store_totals(session, run))
    finally:
        await session.rollback()


async def stored_report(session: AsyncSession, run_id: int) -> SyncReport:
    rows = await session.execute(
        select(SyncRunTotal.category, SyncRunTotal.count, SyncRunTotal.total_cents).where(
            SyncRunTotal.run_id == run_id
        )
    )
    return SyncReport.from_totals((r[0], r[1], r[2]) for r in rows)


async def _store_totals(session: AsyncSession, run: SyncRun) -> Totals:
    """The engine's totals of the run, plus the Already Processed counted while it ran, stored together."""
    counted = list(
        await session.execute(
            select(SyncRunTotal.category, SyncRunTotal.count, SyncRunTotal.total_cents).where(
                SyncRunTotal.run_id == run.id
            )
        )
    )
    await session.execute(delete(SyncRunTotal).where(SyncRunTotal.run_id == run.id))
    window = run.since_date or default_window_start("UTC")
    totals = (await store_totals(session, [FinishRequest(run.id, run.connection_id, "", window)]))[run.id]
    for category, count, cents in counted:
        if category in totals:
            totals[category][0] += count
            totals[category][1] += cents
            await session.execute(
                update(SyncRunTotal)
                .where(SyncRunTotal.run_id == run.id, SyncRunTotal.category == category)
                .values(count=totals[category][0], total_cents=totals[category][1])
            )
        else:
            totals[category] = [count, cents]
            await session.execute(
                insert(SyncRunTotal).values(run_id=run.id, category=category, count=count, total_cents=cents)
            )
    return totals


def _report(totals: Totals) -> SyncReport:
    return SyncReport.from_totals((k, c, t) for k, (c, t) in totals.items())
