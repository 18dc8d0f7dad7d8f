"""The Sync report page: the report of seed 000 for a sync run or for a range of days, printable and as CSV.

`GET /reports` shows one report: the run named by `run`, or the days `from`..`to` (practice-local dates, one
alone is a single day) of the chosen `connection`, or by default the latest run of the practice's first
connection. `GET /reports.csv` takes the same parameters and answers the same numbers as a spreadsheet.
Every run and connection is looked up within the signed-in practice: another practice's id is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.clock import utcnow
from ledgerlink.connection_settings import practice_connections
from ledgerlink.domain.report import SyncReport
from ledgerlink.engine.reports import (
    grand_total,
    latest_run,
    practice_run,
    practice_runs,
    range_report,
    report_csv,
    run_report,
)
from ledgerlink.store.models import Connection, SyncRun
from ledgerlink.web.params import whole_number
from ledgerlink.web.rendering import render
from ledgerlink.web.staff import Staff, Viewer

router = APIRouter(include_in_schema=False)

RECENT_RUNS = 20
TRIGGER_WORDS = {
    "on_demand": "On demand",
    "instant": "Instant",
    "daily": "Daily",
    "pull": "PMS download",
}
RUN_STATUS_WORDS = {"running": "Running", "done": "Finished", "failed": "Stopped with an error"}


@dataclass
class ReportChoice:
    """What the page shows, worked out from the query string."""

    connections: list[Connection]
    connection: Connection | None = None
    run: SyncRun | None = None
    since: date | None = None
    until: date | None = None
    report: SyncReport | None = None
    form: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def query(self) -> str:
        """The parameters that name this report, for its CSV link."""
        if self.run is not None:
            return urlencode({"run": self.run.id})
        if self.since is not None and self.until is not None and self.connection is not None:
            return urlencode(
                {
                    "from": self.since.isoformat(),
                    "to": self.until.isoformat(),
                    "connection": self.connection.id,
                }
            )
        return ""


def _not_found() -> HTTPException:
    return HTTPException(404, "no such report in this practice")


def _parse_day(text: str, label: str) -> tuple[date | None, str]:
    try:
        return date.fromisoformat(text), ""
    except ValueError:
        return None, f"{label} is not a date: enter it as YYYY-MM-DD (for example 2026-12-02)."


def owned_connection(connections: list[Connection], text: str) -> Connection:
    """The practice's connection whose id is `text`; 404 for anything else (another practice's too)."""
    for connection in connections:
        if text.strip() == str(connection.id):
            return connection
    raise _not_found()


async def choose_report(session: AsyncSession, staff: Staff, params: dict[str, str]) -> ReportChoice:
    connections = await practice_connections(session, staff.practice.id)
    choice = ReportChoice(
        connections, form={k: params.get(k, "").strip() for k in ("from", "to", "connection")}
    )
    if choice.form["connection"]:
        choice.connection = owned_connection(connections, choice.form["connection"])
    elif connections:
        choice.connection = connections[0]
    run_text = params.get("run", "").strip()
    if run_text:
        run_id = whole_number(run_text)
        run = await practice_run(session, staff.practice.id, run_id) if run_id is not None else None
        if run is None:
            raise _not_found()
        choice.run = run
        choice.connection = next(c for c in connections if c.id == run.connection_id)
        choice.form["connection"] = str(run.connection_id)
        choice.report = await run_report(session, run.id)
        return choice
    if choice.form["from"] or choice.form["to"]:
        return await _range(session, choice)
    if choice.connection is not None:
        choice.run = await latest_run(session, choice.connection.id)
        if choice.run is not None:
            choice.report = await run_report(session, choice.run.id)
    return choice


async def _range(session: AsyncSession, choice: ReportChoice) -> ReportChoice:
    first = last = None
    if choice.form["from"]:
        first, error = _parse_day(choice.form["from"], "The first day")
        if error:
            choice.errors["from"] = error
    if choice.form["to"]:
        last, error = _parse_day(choice.form["to"], "The last day")
        if error:
            choice.errors["to"] = error
    if choice.errors:
        return choice
    first = first or last
    last = last or first
    assert first is not None and last is not None
    if last < first:
        choice.errors["to"] = "The last day is before the first day: swap them or pick another day."
        return choice
    if choice.connection is None:
        choice.errors["connection"] = "This practice has no PMS connection yet."
        return choice
    choice.since, choice.until = first, last
    choice.report = await range_report(session, choice.connection.id, first, last)
    return choice


def report_context(report: SyncReport) -> dict[str, Any]:
    """What the report table partial needs (`report_table.html`)."""
    count, total = grand_total(report)
    return {"report": report, "grand_count": count, "grand_total": total}


def _render(
    request: Request, staff: Staff, choice: ReportChoice, runs: list[tuple[SyncRun, str]]
) -> HTMLResponse:
    extra = report_context(choice.report) if choice.report is not None else {}
    return render(
        request,
        "reports.html",
        staff,
        status=400 if choice.errors else 200,
        errors=choice.errors,
        choice=choice,
        runs=runs,
        connection_options=[(str(c.id), c.name) for c in choice.connections],
        printed_at=utcnow(),
        trigger_words=TRIGGER_WORDS,
        status_words=RUN_STATUS_WORDS,
        **extra,
    )


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(request: Request, staff: Viewer) -> HTMLResponse:
    async with database(request).sessions() as session:
        choice = await choose_report(session, staff, dict(request.query_params))
        runs = await practice_runs(session, staff.practice.id, RECENT_RUNS)
    return _render(request, staff, choice, runs)


@router.get("/reports.csv", response_model=None)
async def reports_csv(request: Request, staff: Viewer) -> Response:
    async with database(request).sessions() as session:
        choice = await choose_report(session, staff, dict(request.query_params))
        if choice.errors:
            runs = await practice_runs(session, staff.practice.id, RECENT_RUNS)
            return _render(request, staff, choice, runs)
    if choice.report is None:
        raise _not_found()
    return Response(
        report_csv(choice.report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{csv_name(choice)}"'},
    )


def csv_name(choice: ReportChoice) -> str:
    if choice.run is not None:
        return f"sync-report-run-{choice.run.id}.csv"
    assert choice.since is not None and choice.until is not None
    return f"sync-report-{choice.since.isoformat()}-to-{choice.until.isoformat()}.csv"
