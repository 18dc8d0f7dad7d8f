"""Patient imports over HTTP: upload a PMS patient export, follow its progress, read its Import Results.

The upload is the raw CSV as the request body. It is streamed to a file in the data directory (never held
in memory whole, refused with 413 beyond `MAX_UPLOAD_BYTES`), and the import
(`ledgerlink.patients.importer.import_patients`) runs as an asyncio task of the server process; the answer
is 202 with the import's id as soon as the import is recorded. Its row in `patient_imports` is updated after
every chunk the importer commits, so any server process can answer how far it is.

The importer creates its record itself; to learn the id, the upload is named with a unique marker, the
record carrying it is looked up, and then given the file's real name. An argument the importer refuses
before it records anything is answered 422, as if checked here.

A server that stops in the middle of an import leaves it `running`: running it again (a new upload of the
same file) finishes the work, as the importer updates what it had created.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.api.connections import owned_connection
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.pagination import Cursor, Limit, Page, decode_cursor, next_cursor
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.audit import record_audit
from ledgerlink.errors import LedgerlinkError
from ledgerlink.log import get_logger
from ledgerlink.patients.importer import PRESETS, import_patients
from ledgerlink.patients.presets import ACCOUNT_NUMBER_SOURCES
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, PatientImport, PatientImportRejection, Practice

log = get_logger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
UPLOAD_DIR = "uploads"
_WRITE_BLOCK = 1 << 20  # bytes gathered before one write to the file
_MARKER = "upload:"
_START_TIMEOUT_S = 60.0
CSV_MEDIA_TYPES = frozenset(
    {
        "text/csv",
        "text/plain",
        "text/tab-separated-values",
        "application/csv",
        "application/vnd.ms-excel",  # what browsers on Windows label a .csv
        "application/octet-stream",
    }
)

router = APIRouter(
    prefix="/v1",
    tags=["patient imports"],
    responses={401: {"model": ErrorEnvelope}, 422: {"model": ErrorEnvelope}},
)

ImportId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorEnvelope, "description": "no such import"}}


class ImportStarted(BaseModel):
    id: int
    status: str
    url: str = Field(description="where to follow its progress")


class ImportOut(BaseModel):
    id: int
    status: str = Field(description="running, done or failed")
    filename: str
    preset: str
    connection_id: int | None
    rows_done: int = Field(description="rows read so far (updated after each chunk the import commits)")
    created: int
    updated: int
    skipped: int
    rejected: int
    error: str | None = Field(description="why a failed import stopped")
    started_at: datetime
    finished_at: datetime | None


class RejectionOut(BaseModel):
    row: int = Field(description="the row as a spreadsheet numbers it (header = row 1)")
    column: str = Field(description="the header of the column at fault; empty when the whole row is")
    reason: str


_CSV_BODY = {
    "required": True,
    "content": {
        "text/csv": {
            "schema": {"type": "string", "format": "binary"},
            "example": "patient_id,first_name,last_name,account_number\r\npat_1,Ana,Ruiz,1001\r\n",
        }
    },
}


@router.post(
    "/patient-imports",
    status_code=202,
    response_model=ImportStarted,
    responses={
        404: {"model": ErrorEnvelope, "description": "no such connection"},
        413: {"model": ErrorEnvelope, "description": f"the file is larger than {MAX_UPLOAD_BYTES} bytes"},
        415: {"model": ErrorEnvelope, "description": "the body is not sent as CSV"},
        422: {"model": ErrorEnvelope, "description": "a parameter is not valid, or the body is empty"},
    },
    openapi_extra={"requestBody": _CSV_BODY},
    summary="Upload a patient export (CSV as the body) and import it in the background",
)
async def post_patient_import(
    request: Request,
    caller: StaffCaller,
    preset: Annotated[
        str, Query(max_length=32, description="column preset", json_schema_extra={"enum": sorted(PRESETS)})
    ] = "generic",
    connection: Annotated[
        int | None,
        Query(ge=1, le=2**63 - 1, description="connection id of the account numbers; default: the only one"),
    ] = None,
    skip_inactive: Annotated[bool, Query(description="count inactive patients as skipped")] = False,
    account_number_source: Annotated[
        str,
        Query(
            max_length=32,
            description="opendental preset: PatNum or ChartNumber is the account number",
            json_schema_extra={"enum": list(ACCOUNT_NUMBER_SOURCES)},
        ),
    ] = "patnum",
    filename: Annotated[
        str | None, Query(max_length=200, description="the file's name, for the results")
    ] = None,
) -> JSONResponse:
    if preset not in PRESETS:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}",
            field="preset",
        )
    if account_number_source not in ACCOUNT_NUMBER_SOURCES:
        raise ApiError(
            422,
            "invalid_request",
            f"account_number_source must be one of {', '.join(ACCOUNT_NUMBER_SOURCES)}",
            field="account_number_source",
        )
    _check_upload_headers(request)
    db = database(request)
    async with db.sessions() as session:
        practice = await session.get(Practice, caller.practice.id)
        assert practice is not None
        chosen = await _chosen_connection(session, practice, connection)
        session.expunge_all()  # handed to the background task, which outlives this session

    data_dir: Path = request.app.state.data_dir
    path = data_dir / UPLOAD_DIR / f"patients-{uuid.uuid4().hex}.csv"
    size = await _receive(request, path)
    marker = f"{_MARKER}{path.name}"
    shown_name = (filename or "").strip() or "upload.csv"
    task = asyncio.create_task(
        _run_import(
            db,
            practice,
            chosen,
            path,
            preset=preset,
            skip_inactive=skip_inactive,
            account_number_source=account_number_source,
            marker=marker,
            actor=caller.actor,
        ),
        name=f"patient import {path.name}",
    )
    _keep(request, task)
    import_id = await _recorded(db, practice.id, marker, shown_name, task)
    async with db.sessions.begin() as session:
        await record_audit(
            session,
            practice.id,
            caller.actor,
            "patients.import.upload",
            f"patient_import:{import_id}",
            {
                "bytes": size,
                "preset": preset,
                "connection": chosen.id if chosen else None,
                "skip_inactive": skip_inactive,
            },
        )
    started = ImportStarted(id=import_id, status="running", url=f"/v1/patient-imports/{import_id}")
    return JSONResponse(started.model_dump(), status_code=202, headers={"Location": started.url})


@router.get(
    "/patient-imports", response_model=Page[ImportOut], summary="Recent patient imports, newest first"
)
async def get_patient_imports(
    request: Request, caller: StaffCaller, limit: Limit = 20, cursor: Cursor = None
) -> Page[ImportOut]:
    before = decode_cursor(cursor)
    query = select(PatientImport).where(PatientImport.practice_id == caller.practice.id)
    if before is not None:
        query = query.where(PatientImport.id < before)
    async with database(request).sessions() as session:
        rows = list(await session.scalars(query.order_by(PatientImport.id.desc()).limit(limit + 1)))
    return Page[ImportOut](
        items=[_import_out(r) for r in rows[:limit]], next_cursor=next_cursor([r.id for r in rows], limit)
    )


@router.get(
    "/patient-imports/{import_id}",
    response_model=ImportOut,
    responses=_NOT_FOUND,
    summary="An import's progress and results",
)
async def get_patient_import(request: Request, caller: StaffCaller, import_id: ImportId) -> ImportOut:
    async with database(request).sessions() as session:
        return _import_out(await _owned_import(session, caller.practice.id, import_id))


@router.get(
    "/patient-imports/{import_id}/rejections",
    response_model=Page[RejectionOut],
    responses=_NOT_FOUND,
    summary="The rows an import rejected: row, column and reason",
)
async def get_patient_import_rejections(
    request: Request, caller: StaffCaller, import_id: ImportId, limit: Limit = 100, cursor: Cursor = None
) -> Page[RejectionOut]:
    after = decode_cursor(cursor)
    async with database(request).sessions() as session:
        await _owned_import(session, caller.practice.id, import_id)
        query = select(PatientImportRejection).where(PatientImportRejection.import_id == import_id)
        if after is not None:
            query = query.where(PatientImportRejection.id > after)
        rows = list(await session.scalars(query.order_by(PatientImportRejection.id).limit(limit + 1)))
    return Page[RejectionOut](
        items=[RejectionOut(row=r.row_number, column=r.column, reason=r.reason) for r in rows[:limit]],
        next_cursor=next_cursor([r.id for r in rows], limit),
    )


def _check_upload_headers(request: Request) -> None:
    """Refuse before reading: a body that is not CSV (415), or one announced as too large (413)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in CSV_MEDIA_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"send the CSV file itself as the body with Content-Type: text/csv (got {media_type or 'none'!r})",
            field="Content-Type",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_UPLOAD_BYTES:
        raise _too_large()


def _too_large() -> ApiError:
    return ApiError(
        413,
        "file_too_large",
        f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; split it and import the parts",
        field="body",
    )


async def _receive(request: Request, path: Path) -> int:
    """Stream the body into `path`; returns its size. Removes the file when the upload does not complete."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    size = 0
    pending = bytearray()
    try:
        with path.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise _too_large()
                pending += chunk
                if len(pending) >= _WRITE_BLOCK:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(out.write, bytes(pending))
        if size == 0:
            raise ApiError(422, "invalid_request", "the body is empty: send the CSV file", field="body")
    except BaseException:
        await asyncio.to_thread(path.unlink, True)
        raise
    return size


async def _chosen_connection(
    session: AsyncSession, practice: Practice, connection_id: int | None
) -> Connection | None:
    """The named connection; without a name the practice's only one (none: numbers only key the rows)."""
    if connection_id is not None:
        try:
            return await owned_connection(session, practice.id, connection_id)
        except ApiError as exc:
            exc.body.field = "connection"
            raise
    connections = list(
        await session.scalars(select(Connection).where(Connection.practice_id == practice.id).limit(2))
    )
    if len(connections) > 1:
        raise ApiError(
            422,
            "invalid_request",
            "the practice has several connections; name the one the account numbers are for",
            field="connection",
        )
    return connections[0] if connections else None


async def _run_import(
    db: Database,
    practice: Practice,
    connection: Connection | None,
    path: Path,
    *,
    preset: str,
    skip_inactive: bool,
    account_number_source: str,
    marker: str,
    actor: str,
) -> LedgerlinkError | None:
    """The background import. Its outcome is in its record; this returns the refusal of a bad argument
    (for the request that started it) and logs any other failure by kind only (rows hold names)."""
    try:
        await import_patients(
            db,
            practice,
            connection,
            path,
            preset=preset,
            skip_inactive=skip_inactive,
            account_number_source=account_number_source,
            filename=marker,
            actor=actor,
        )
    except LedgerlinkError as exc:
        return exc
    except Exception as exc:
        log.error("patient_import.failed", error=type(exc).__name__, practice=practice.slug)
    finally:
        await asyncio.to_thread(path.unlink, True)
    return None


def _keep(request: Request, task: asyncio.Task[LedgerlinkError | None]) -> None:
    """Hold the task until it ends: the event loop keeps only a weak reference to it."""
    running: set[asyncio.Task[LedgerlinkError | None]] | None = getattr(
        request.app.state, "patient_import_tasks", None
    )
    if running is None:
        running = set()
        request.app.state.patient_import_tasks = running
    running.add(task)
    task.add_done_callback(running.discard)


async def _recorded(
    db: Database,
    practice_id: int,
    marker: str,
    shown_name: str,
    task: asyncio.Task[LedgerlinkError | None],
) -> int:
    """The id of the import record the task made, renamed to `shown_name`; a refusal before any record
    was made is raised as a 422."""
    find = select(PatientImport.id).where(
        PatientImport.practice_id == practice_id, PatientImport.filename == marker
    )
    delay, waited = 0.005, 0.0
    while True:
        async with db.sessions.begin() as session:
            import_id = await session.scalar(find)
            if import_id is not None:
                await session.execute(
                    update(PatientImport).where(PatientImport.id == import_id).values(filename=shown_name)
                )
                return int(import_id)
        if task.done():
            refusal = task.result()
            if refusal is not None:
                raise ApiError(422, "invalid_request", refusal.message, field=refusal.field)
            raise ApiError(500, "internal_error", "the import could not start; see the server log")
        if waited > _START_TIMEOUT_S:
            raise ApiError(500, "internal_error", "the import did not start in time; see the server log")
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.1)


async def _owned_import(session: AsyncSession, practice_id: int, import_id: int) -> PatientImport:
    record: PatientImport | None = await session.scalar(
        select(PatientImport).where(PatientImport.id == import_id, PatientImport.practice_id == practice_id)
    )
    if record is None:
        raise ApiError(404, "not_found", f"no patient import {import_id}", field="import_id")
    return record


def _import_out(record: PatientImport) -> ImportOut:
    filename = record.filename
    if filename.startswith(_MARKER):  # the instant between its start and its renaming
        filename = "upload.csv"
    return ImportOut(
        id=record.id,
        status=record.status,
        filename=filename,
        preset=record.preset,
        connection_id=record.connection_id,
        rows_done=record.rows_total,
        created=record.created,
        updated=record.updated,
        skipped=record.skipped,
        rejected=record.rejected,
        error=record.error,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )
