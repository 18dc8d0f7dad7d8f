"""Sync now over HTTP: start a sync of a connection in the server process and follow its progress.

The same service as the dashboard's Sync now button (`ledgerlink.engine.sync_now`): one writer per
connection through the sync lease, so a sync already running (a worker's, or another Sync now) is answered
409 `sync_running` and nothing is started; a server shutting down ends the sync after the slice of writes in
hand. A connection or run of another practice is a 404, like one that does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from ledgerlink.api.auth import database
from ledgerlink.api.connections import owned_connection
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.reports import ReportLineOut, report_lines
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.engine.reports import run_report
from ledgerlink.engine.sync_now import PullConnection, SyncFailed, lease_held, progress_of, start_sync
from ledgerlink.errors import LedgerlinkError, SyncAlreadyRunning
from ledgerlink.log import get_logger
from ledgerlink.store.models import SyncRun

log = get_logger(__name__)
router = APIRouter(
    prefix="/v1",
    tags=["syncs"],
    responses={401: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}},
)

ConnectionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
RunId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class SyncStarted(BaseModel):
    run_id: int | None = Field(
        description="the sync run; null only if the run was not recorded within 30 s (see GET /v1/runs)"
    )
    connection_id: int
    url: str | None = Field(description="where to follow its progress")


class SyncStatus(BaseModel):
    run_id: int
    connection_id: int
    status: str = Field(description="running, done or failed")
    finished: bool
    done: int | None = Field(
        description="writebacks handled so far; null when the run is not running in this server process"
    )
    total: int | None = Field(description="writebacks due in all; null like `done`")
    alive: bool = Field(
        description="whether the run is still going: false once it has finished, and for a run still "
        "marked running whose process died (its lease lapsed; the next sync takes over)"
    )
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    error: str | None = Field(description="why a failed run stopped")
    report: list[ReportLineOut] | None = Field(description="the run's sync report, once it is done")


@router.post(
    "/connections/{connection_id}/sync",
    status_code=202,
    response_model=SyncStarted,
    responses={
        404: {"model": ErrorEnvelope, "description": "no such connection"},
        409: {
            "model": ErrorEnvelope,
            "description": "`sync_running`: a worker or another sync is running on the connection; "
            "`pull_connection`: the PMS downloads its payments itself; `sync_not_started`: the sync could "
            "not start with the connection's settings (fix them: PATCH /v1/connections/{id})",
        },
        503: {
            "model": ErrorEnvelope,
            "description": "`sync_failed`: the sync stopped with an unexpected error before it could start "
            "(a database error, the connection deleted meanwhile); its type is logged, try again later",
        },
    },
    summary="Sync now: write back what is due on the connection, in the background",
)
async def post_sync(request: Request, caller: StaffCaller, connection_id: ConnectionId) -> JSONResponse:
    db = database(request)
    async with db.sessions() as session:
        connection = await owned_connection(session, caller.practice.id, connection_id)
        session.expunge(connection)  # handed to the background task, which outlives this session
    try:
        started = await start_sync(request.app.state, db, connection, actor=caller.actor)
    except PullConnection as exc:
        raise ApiError(409, "pull_connection", exc.message, field="connection_id") from None
    except SyncAlreadyRunning:
        raise ApiError(
            409,
            "sync_running",
            f"a sync is already running on connection {connection_id}; follow it with GET /v1/runs",
            field="connection_id",
        ) from None
    except SyncFailed as exc:
        raise ApiError(503, "sync_failed", exc.message, field="connection_id") from None
    except LedgerlinkError as exc:
        raise ApiError(
            409, "sync_not_started", f"the sync could not start: {exc.message}", field="connection_id"
        ) from None
    except Exception as exc:  # a database error while starting: a clear answer (type only: no data)
        log.error("sync_now.start_failed", connection_id=connection_id, error=type(exc).__name__)
        raise ApiError(
            503,
            "sync_failed",
            f"the sync could not start ({type(exc).__name__}); try again later",
            field="connection_id",
        ) from None
    url = f"/v1/connections/{connection_id}/sync/{started.run_id}" if started.run_id else None
    body = SyncStarted(run_id=started.run_id, connection_id=connection_id, url=url)
    return JSONResponse(body.model_dump(), status_code=202, headers={"Location": url} if url else None)


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no such connection, or no such run of it"}
}


@router.get(
    "/connections/{connection_id}/sync/{run_id}",
    response_model=SyncStatus,
    responses=_NOT_FOUND,
    summary="A sync run's status and progress; its report once done",
)
async def get_sync(
    request: Request, caller: StaffCaller, connection_id: ConnectionId, run_id: RunId
) -> SyncStatus:
    async with database(request).sessions() as session:
        connection = await owned_connection(session, caller.practice.id, connection_id)
        run = await session.scalar(
            select(SyncRun).where(SyncRun.id == run_id, SyncRun.connection_id == connection.id)
        )
        if run is None:
            raise ApiError(
                404, "not_found", f"no sync run {run_id} of connection {connection_id}", field="run_id"
            )
        report = await run_report(session, run.id) if run.status == "done" else None
        held = lease_held(connection)
    tracker = progress_of(request.app.state, run.id) if run.status == "running" else None
    return SyncStatus(
        run_id=run.id,
        connection_id=connection.id,
        status=run.status,
        finished=run.status != "running",
        done=tracker.done if tracker is not None else None,
        total=tracker.total if tracker is not None else None,
        alive=run.status == "running" and (tracker is not None or held),
        trigger=run.trigger,
        started_at=run.started_at,
        finished_at=run.finished_at,
        error=run.error,
        report=report_lines(report) if report is not None else None,
    )
