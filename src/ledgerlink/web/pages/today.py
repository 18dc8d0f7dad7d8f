"""Today, the page staff land on: per PMS connection the last sync's report, what failed and what waits for a
person, and a Sync now button that runs a sync in this server process while the page shows its progress.

Sync now starts `run_sync` as an asyncio task of the server (like a patient import), holding the
connection's lease like any sync: when a worker or another sync already holds it, the user is told a sync is
already running. The run's id is known once the run has started: while the run holds the lease, the
connection's lease owner is the owner this page gave it, so the connection's running run is this one; once it
has ended, the task's outcome names it. Progress (done of total) lives in the process that runs the sync;
any other process shows the same run as running without a count, from the database.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from starlette.datastructures import State

from ledgerlink.api.auth import database
from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.connectors.registry import open_connector
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import SyncReport
from ledgerlink.domain.rules import SkipReason
from ledgerlink.engine import lease
from ledgerlink.engine.reports import (
    Attention,
    AttentionGroup,
    AttentionItem,
    latest_run,
    needing_attention,
    practice_run,
    run_report,
)
from ledgerlink.engine.sync import SyncOutcome, SyncProgress, run_sync
from ledgerlink.errors import LedgerlinkError, SyncAlreadyRunning
from ledgerlink.log import get_logger
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, SyncRun
from ledgerlink.web.pages.reports import (
    RUN_STATUS_WORDS,
    TRIGGER_WORDS,
    owned_connection,
    practice_connections,
    report_context,
)
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Syncer, Viewer, checked_form

log = get_logger(__name__)
router = APIRouter(include_in_schema=False)

START_TIMEOUT_S = 30.0  # how long Sync now waits for the run to be recorded before showing the page
END_WAIT_S = 5.0  # how long it waits for a run that has already ended to hand back its id
STOP_GRACE_S = 10.0  # how long a shutdown lets a sync finish the slice of writes in hand
SHOWN_ITEMS = 50  # failed and waiting writebacks listed per kind (the counts and totals cover them all)

CODE_TITLES = {
    LoadErrorCode.INVALID_PATIENT_ID.value: "Invalid Patient ID",
    LoadErrorCode.ORIGINAL_NOT_FOUND.value: "Original payment not found",
    LoadErrorCode.ORIGINAL_NOT_POSTED.value: "Original payment not posted",
    LoadErrorCode.REFUND_EXCEEDS_ORIGINAL.value: "Refunds exceed the payment",
    LoadErrorCode.PMS_REJECTED.value: "Refused by the PMS",
    LoadErrorCode.PMS_UNREACHABLE.value: "The PMS did not answer",
    LoadErrorCode.PMS_CONFIGURATION.value: "Connection set up wrongly",
    LoadErrorCode.MAY_BE_IN_PMS.value: "May already be in the PMS",
    LoadErrorCode.HELD_FOR_STAFF.value: "Left to staff by the PMS",
    SkipReason.HELD_FOR_MANUAL.value: "Held for manual posting",
}


def code_title(code: str) -> str:
    return CODE_TITLES.get(code, code.replace("_", " ").capitalize())


def code_explanation(code: str) -> str:
    """What a load error (or a hold) means for the front desk, and what to do about it."""
    if code in LoadErrorCode.__members__.values():
        return LoadErrorCode(code).explanation
    if code == SkipReason.HELD_FOR_MANUAL.value:
        return (
            "The connection's rules leave this payment type to staff. Post it in the PMS by hand, then "
            "Clear it on the Reconciliation page."
        )
    return ""


# --- the syncs this process runs -------------------------------------------------------------------------


@dataclass
class SyncTracker:
    """One Sync now in this process: its lease owner, and how far it is."""

    connection_id: int
    owner: str
    done: int = 0
    total: int = 0
    run_id: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: end after the slice in hand

    def update(self, step: SyncProgress) -> None:
        self.done, self.total = step.done, step.total
        self.started.set()


def _state(app: FastAPI) -> State:
    state: State = app.state
    if getattr(state, "sync_tasks", None) is None:
        state.sync_tasks = {}  # task -> its tracker
        state.sync_progress = {}
    return state


def _keep(app: FastAPI, task: asyncio.Task[SyncOutcome], tracker: SyncTracker) -> None:
    """Hold the task until it ends (the event loop keeps only a weak reference), then forget its progress."""
    state = _state(app)
    state.sync_tasks[task] = tracker

    def ended(done: asyncio.Task[SyncOutcome]) -> None:
        state.sync_tasks.pop(done, None)
        if tracker.run_id is not None:
            state.sync_progress.pop(tracker.run_id, None)
        error = None if done.cancelled() else done.exception()
        if error is not None and not isinstance(error, LedgerlinkError):
            log.error(
                "dashboard_sync.failed", connection_id=tracker.connection_id, error=type(error).__name__
            )

    task.add_done_callback(ended)


async def stop_syncs(app: FastAPI, grace_s: float = STOP_GRACE_S) -> None:
    """For the server's shutdown, before the database closes: ask the syncs this process runs to stop after
    the slice of writes in hand (each records what it wrote and frees its lease), then cancel any still
    running after `grace_s` (a cancelled run records itself failed; its in-flight writes are looked up in
    the PMS by the next run)."""
    running: dict[asyncio.Task[SyncOutcome], SyncTracker] = getattr(app.state, "sync_tasks", None) or {}
    tasks = list(running)
    for task in tasks:
        running[task].stop.set()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run(db: Database, connection: Connection, data_dir: Any, tracker: SyncTracker) -> SyncOutcome:
    connector = open_connector(connection.kind, connection.settings, data_dir)
    try:
        return await run_sync(
            db, connection.id, connector, progress=tracker.update, owner=tracker.owner, stop=tracker.stop
        )
    finally:
        await connector.close()


async def _started_run(db: Database, task: asyncio.Task[SyncOutcome], tracker: SyncTracker) -> int | None:
    """The id of the run the task started; raises what stopped it from starting (SyncAlreadyRunning...).
    None when it is still starting after `START_TIMEOUT_S`, or ended without saying."""
    waiter = asyncio.ensure_future(tracker.started.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if not tracker.started.is_set():
        return task.result().run_id if task.done() else None
    async with db.sessions() as session:
        running = await session.scalar(
            select(SyncRun.id)
            .join(Connection, Connection.id == SyncRun.connection_id)
            .where(
                Connection.id == tracker.connection_id,
                Connection.sync_owner == tracker.owner,
                SyncRun.status == "running",
            )
            .order_by(SyncRun.id.desc())
            .limit(1)
        )
    if running is not None:
        return int(running)
    # The lease is no longer this run's: it has ended, and its outcome names it.
    await asyncio.wait({task}, timeout=END_WAIT_S)
    if task.done() and not task.cancelled() and task.exception() is None:
        return task.result().run_id
    return None


# --- pages -----------------------------------------------------------------------------------------------


@dataclass
class ConnectionToday:
    connection: Connection
    latest: SyncRun | None  # the newest run, whatever its status
    reported: SyncRun | None  # the newest finished run, whose report is shown
    report: SyncReport | None
    groups: list[AttentionGroup]
    items: list[AttentionItem]

    @property
    def can_sync(self) -> bool:
        return self.connection.kind != PULL_KIND

    def summary(self, attention: Attention) -> tuple[int, int]:
        chosen = [g for g in self.groups if g.attention is attention]
        return sum(g.count for g in chosen), sum(g.total_cents for g in chosen)

    def waiting_groups(self) -> list[AttentionGroup]:
        return [g for g in self.groups if g.attention is not Attention.FAILED]

    def failed_groups(self) -> list[AttentionGroup]:
        return [g for g in self.groups if g.attention is Attention.FAILED]


def progress_context(request: Request, run: SyncRun, lease_held: bool) -> dict[str, Any]:
    """What `today_progress.html` needs for a running run."""
    tracker = getattr(request.app.state, "sync_progress", {}).get(run.id)
    return {
        "run": run,
        "tracker": tracker,
        # A run still marked running whose lease has lapsed belongs to a process that died: stop polling.
        "alive": tracker is not None or lease_held,
    }


def _lease_held(connection: Connection) -> bool:
    until = connection.sync_lease_until
    return connection.sync_owner is not None and until is not None and until > utcnow()


@router.get("/today", response_class=HTMLResponse)
async def today_page(request: Request, staff: Viewer) -> HTMLResponse:
    cards: list[ConnectionToday] = []
    async with database(request).sessions() as session:
        for connection in await practice_connections(session, staff.practice.id):
            latest = await latest_run(session, connection.id)
            reported = latest if latest is not None and latest.status == "done" else None
            if latest is not None and reported is None:
                reported = await latest_run(session, connection.id, status="done")
            report = await run_report(session, reported.id) if reported is not None else None
            groups, items = await needing_attention(session, connection.id, SHOWN_ITEMS)
            cards.append(ConnectionToday(connection, latest, reported, report, groups, items))
    return render(
        request,
        "today.html",
        staff,
        cards=cards,
        report_context=report_context,
        progress_context=lambda run, connection: progress_context(request, run, _lease_held(connection)),
        Attention=Attention,
        code_title=code_title,
        code_explanation=code_explanation,
        trigger_words=TRIGGER_WORDS,
        status_words=RUN_STATUS_WORDS,
    )


@router.get("/today/sync/{run_id}/progress", response_class=HTMLResponse)
async def sync_progress(
    request: Request, staff: Viewer, run_id: int = Path(ge=1, le=2**63 - 1)
) -> HTMLResponse:
    """The live progress of a run as a fragment for `data-refresh-url`; once it has ended, its report."""
    async with database(request).sessions() as session:
        run = await practice_run(session, staff.practice.id, run_id)
        if run is None:
            raise HTTPException(404, "no such sync run in this practice")
        connection = await session.get(Connection, run.connection_id)
        assert connection is not None
        report = await run_report(session, run.id) if run.status == "done" else None
    context = progress_context(request, run, _lease_held(connection))
    if report is not None:
        context.update(report_context(report))
    return render(
        request,
        "today_progress.html",
        staff,
        connection=connection,
        status_words=RUN_STATUS_WORDS,
        **context,
    )


@router.post("/today/sync", response_model=None)
async def sync_now(request: Request, staff: Syncer) -> Response:
    form = await checked_form(request, staff)
    db = database(request)
    async with db.sessions() as session:
        connection = owned_connection(
            await practice_connections(session, staff.practice.id), str(form.get("connection") or "")
        )
        session.expunge(connection)  # handed to the background task, which outlives this session
    if connection.kind == PULL_KIND:
        return redirect(
            "/today", f"{connection.name} is a pull connection: the PMS downloads its payments itself."
        )
    tracker = SyncTracker(connection.id, lease.new_owner_id())
    task = asyncio.create_task(
        _run(db, connection, request.app.state.data_dir, tracker), name=f"dashboard sync {connection.id}"
    )
    _keep(request.app, task, tracker)
    try:
        run_id = await _started_run(db, task, tracker)
    except SyncAlreadyRunning:
        return redirect(
            "/today",
            f"A sync is already running on {connection.name}; its report appears here when it ends.",
        )
    except LedgerlinkError as exc:
        return redirect("/today", f"The sync of {connection.name} could not start: {exc}")
    if run_id is not None and not task.done():
        tracker.run_id = run_id
        _state(request.app).sync_progress[run_id] = tracker
    async with db.sessions.begin() as session:
        await record_audit(
            session,
            staff.practice.id,
            staff.actor,
            "sync.start",
            f"connection:{connection.id}",
            {"run": run_id},
        )
    started = f"Sync run {run_id} started" if run_id else "A sync started"
    return redirect("/today", f"{started} on {connection.name}.")
