"""Sync runs and reports for staff: recent runs, a run's report, and where a date range stands now.

Scoped like every staff route to the caller's practice: another practice's run is a 404, the same answer
as a run that does not exist.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.writebacks import ISO_DATE, StaffCaller, parse_date
from ledgerlink.domain.report import SyncReport
from ledgerlink.engine.reports import practice_run, practice_runs, range_report, run_report
from ledgerlink.errors import InvalidInput
from ledgerlink.practices import get_connection

router = APIRouter(
    prefix="/v1",
    tags=["reports"],
    responses={401: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}},
)


class RunOut(BaseModel):
    id: int
    connection: str
    trigger: str
    status: str
    since_date: date | None
    started_at: datetime
    finished_at: datetime | None
    error: str | None


class ReportLineOut(BaseModel):
    category: str
    label: str
    count: int
    total_cents: int


class ReportOut(BaseModel):
    run_id: int
    lines: list[ReportLineOut]


class RangeReportOut(BaseModel):
    connection: str
    since: date
    until: date
    lines: list[ReportLineOut]


@router.get("/runs", response_model=list[RunOut], summary="Recent sync runs, newest first")
async def get_runs(
    request: Request, caller: StaffCaller, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[RunOut]:
    async with database(request).sessions() as session:
        rows = await practice_runs(session, caller.practice.id, limit)
    return [
        RunOut(
            id=run.id,
            connection=name,
            trigger=run.trigger,
            status=run.status,
            since_date=run.since_date,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
        )
        for run, name in rows
    ]


@router.get(
    "/runs/{run_id}/report",
    response_model=ReportOut,
    responses={404: {"model": ErrorEnvelope}},
    summary="The sync report of a run",
)
async def get_run_report(
    request: Request, caller: StaffCaller, run_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> ReportOut:
    async with database(request).sessions() as session:
        if await practice_run(session, caller.practice.id, run_id) is None:
            raise ApiError(404, "not_found", f"no sync run {run_id}", field="run_id")
        report = await run_report(session, run_id)
    return ReportOut(run_id=run_id, lines=report_lines(report))


def report_lines(report: SyncReport) -> list[ReportLineOut]:
    return [
        ReportLineOut(
            category=line.category.value,
            label=line.category.label,
            count=line.count,
            total_cents=line.total_cents,
        )
        for line in report.lines
    ]


@router.get(
    "/report",
    response_model=RangeReportOut,
    responses={404: {"model": ErrorEnvelope}},
    summary="Where the transactions of a date range stand now, by report category",
)
async def get_range_report(
    request: Request,
    caller: StaffCaller,
    since: Annotated[str, Query(pattern=ISO_DATE, description="first practice-local date")],
    until: Annotated[str, Query(pattern=ISO_DATE, description="last practice-local date")],
    connection: Annotated[
        str | None, Query(max_length=100, description="needed when there are several")
    ] = None,
) -> RangeReportOut:
    first, last = parse_date(since, "since"), parse_date(until, "until")
    assert first is not None and last is not None
    if last < first:
        raise ApiError(422, "invalid_request", "until is before since", field="until")
    async with database(request).sessions() as session:
        try:
            chosen = await get_connection(session, caller.practice, connection)
        except InvalidInput:
            raise ApiError(
                422, "invalid_request", "the practice has several connections; name one", field="connection"
            ) from None
        report = await range_report(session, chosen.id, first, last)
    return RangeReportOut(connection=chosen.name, since=first, until=last, lines=report_lines(report))
