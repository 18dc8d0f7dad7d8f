"""Today, the page staff land on: per PMS connection the last sync's report, what failed and what waits for a
person, and a Sync now button that runs a sync in this server process while the page shows its progress.

Sync now goes through `ledgerlink.engine.sync_now`, like `POST /v1/connections/{id}/sync`: the sync runs as
an asyncio task of the server holding the connection's lease like any sync, so when a worker or another sync
already holds it, the user is told a sync is already running. Progress (done of total) lives in the process
that runs the sync; any other process shows the same run as running without a count, from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, Response

from ledgerlink.api.auth import database
from ledgerlink.connection_settings import find_connection, practice_connections
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import SyncReport
from ledgerlink.domain.rules import SkipReason
from ledgerlink.engine.reports import (
    Attention,
    AttentionGroup,
    AttentionItem,
    latest_run,
    needing_attention,
    practice_run,
    run_report,
)
from ledgerlink.engine.sync_now import PullConnection, lease_held, progress_of, start_sync
from ledgerlink.errors import LedgerlinkError, SyncAlreadyRunning
from ledgerlink.log import get_logger
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.models import Connection, SyncRun
from ledgerlink.web.pages.reports import (
    RUN_STATUS_WORDS,
    TRIGGER_WORDS,
    report_context,
)
from ledgerlink.web.params import whole_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Syncer, Viewer, checked_form

log = get_logger(__name__)
router = APIRouter(include_in_schema=False)

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


def progress_context(request: Request, run: SyncRun, held: bool) -> dict[str, Any]:
    """What `today_progress.html` needs for a running run."""
    tracker = progress_of(request.app.state, run.id)
    return {
        "run": run,
        "tracker": tracker,
        # A run still marked running whose lease has lapsed belongs to a process that died: stop polling.
        "alive": tracker is not None or held,
    }


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
        progress_context=lambda run, connection: progress_context(request, run, lease_held(connection)),
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
    context = progress_context(request, run, lease_held(connection))
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
    connection_id = whole_number(str(form.get("connection") or ""))
    async with db.sessions() as session:
        connection = await find_connection(session, staff.practice.id, connection_id or 0)
        if connection is None:  # another practice's, exactly like a missing one
            raise HTTPException(404)
        session.expunge(connection)  # handed to the background task, which outlives this session
    try:
        started = await start_sync(request.app.state, db, connection, actor=staff.actor)
    except PullConnection:
        return redirect(
            "/today", f"{connection.name} is a pull connection: the PMS downloads its payments itself."
        )
    except SyncAlreadyRunning:
        return redirect(
            "/today",
            f"A sync is already running on {connection.name}; its report appears here when it ends.",
        )
    except LedgerlinkError as exc:
        return redirect("/today", f"The sync of {connection.name} could not start: {exc.message}")
    except Exception as exc:  # a database error while starting: a notice, not a 500 (type only: no data)
        log.error("sync_now.start_failed", connection_id=connection.id, error=type(exc).__name__)
        return redirect(
            "/today", f"The sync of {connection.name} could not start ({type(exc).__name__}). Try again."
        )
    run_id = started.run_id
    begun = f"Sync run {run_id} started" if run_id else "A sync started"
    return redirect("/today", f"{begun} on {connection.name}.")
