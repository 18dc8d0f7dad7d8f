"""Patient imports over HTTP: upload a PMS patient export, follow its progress, read its Import Results.

The upload is the raw CSV as the request body. It is streamed to a file in the data directory and imported
in the background of the server process by `ledgerlink.patients.uploads` (which the dashboard's Import
patients page uses too); the answer is 202 with the import's id as soon as the import is recorded. An
argument the importer refuses before it records anything is answered 422, as if checked here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.pagination import Cursor, Limit, Page, decode_cursor, next_cursor
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.errors import InvalidInput, LedgerlinkError, NotFound
from ledgerlink.patients import uploads
from ledgerlink.patients.importer import PRESETS
from ledgerlink.patients.presets import ACCOUNT_NUMBER_SOURCES
from ledgerlink.patients.uploads import CSV_MEDIA_TYPES, UploadTooLarge
from ledgerlink.store.models import PatientImport

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
        413: {
            "model": ErrorEnvelope,
            "description": f"the file is larger than {uploads.MAX_UPLOAD_BYTES} bytes",
        },
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
    try:
        uploads.check_options(preset, account_number_source)
    except InvalidInput as exc:
        raise ApiError(422, "invalid_request", exc.message, field=exc.field) from None
    _check_upload_headers(request)
    db = database(request)
    try:
        practice, chosen = await uploads.import_target(db, caller.practice.id, connection)
        data_dir: Path = request.app.state.data_dir
        upload = await uploads.save_upload(request.stream(), uploads.new_upload_path(data_dir))
        import_id = await uploads.start_import(
            request.app.state,
            db,
            practice,
            chosen,
            upload,
            preset=preset,
            skip_inactive=skip_inactive,
            account_number_source=account_number_source,
            filename=filename or "",
            actor=caller.actor,
        )
    except LedgerlinkError as exc:
        raise _api_error(exc) from None
    started = ImportStarted(id=import_id, status="running", url=f"/v1/patient-imports/{import_id}")
    return JSONResponse(started.model_dump(), status_code=202, headers={"Location": started.url})


@router.get(
    "/patient-imports", response_model=Page[ImportOut], summary="Recent patient imports, newest first"
)
async def get_patient_imports(
    request: Request, caller: StaffCaller, limit: Limit = 20, cursor: Cursor = None
) -> Page[ImportOut]:
    before = decode_cursor(cursor)
    async with database(request).sessions() as session:
        rows = await uploads.recent_imports(session, caller.practice.id, limit + 1, before)
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
        rows = await uploads.rejections(session, import_id, limit + 1, after)
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
    if length.isdigit() and int(length) > uploads.MAX_UPLOAD_BYTES:
        raise _too_large()


def _too_large() -> ApiError:
    return ApiError(413, "file_too_large", uploads.too_large_message(), field="body")


def _api_error(exc: LedgerlinkError) -> ApiError:
    """The service's refusal as this API has always answered it (the body is the file)."""
    if isinstance(exc, UploadTooLarge):
        return _too_large()
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.message, field=exc.field)
    if isinstance(exc, InvalidInput):
        field = "body" if exc.field == "file" else exc.field
        return ApiError(422, "invalid_request", exc.message, field=field)
    return ApiError(500, "internal_error", exc.message)


async def _owned_import(session: AsyncSession, practice_id: int, import_id: int) -> PatientImport:
    record = await uploads.find_import(session, practice_id, import_id)
    if record is None:
        raise ApiError(404, "not_found", f"no patient import {import_id}", field="import_id")
    return record


def _import_out(record: PatientImport) -> ImportOut:
    return ImportOut(
        id=record.id,
        status=record.status,
        filename=uploads.shown_filename(record),
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
