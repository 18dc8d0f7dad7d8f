"""Dashboard page: Import patients (seed 003). Upload a PMS patient export, watch it import, read its Import
Results (created, updated, skipped, and each rejected row with its row number, column and reason).

The upload goes through `ledgerlink.patients.uploads`, exactly like `POST /v1/patient-imports`: the file is
kept in the data directory, imported in the background of this server process, and audited the same way.
Before anything is recorded the page checks what the API leaves to the importer: a file that is empty, not
CSV text, or lacks the columns the chosen format needs is refused next to the file field, and no import is
recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path, PureWindowsPath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile
from starlette.types import Message

from ledgerlink.api.auth import database
from ledgerlink.connection_settings import practice_connections
from ledgerlink.errors import InvalidInput, LedgerlinkError, NotFound
from ledgerlink.patients import uploads
from ledgerlink.patients.csv_reader import PatientFileError
from ledgerlink.patients.presets import PRESETS, ColumnPreset, Field
from ledgerlink.store.models import Connection, PatientImport
from ledgerlink.web.params import whole_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Importer, Staff, checked_form

router = APIRouter(include_in_schema=False)

IMPORTS_PER_PAGE = 20
REJECTIONS_PER_PAGE = 100
_FORM_OVERHEAD = 64 * 1024  # the multipart envelope and the other fields, beyond the file itself
_REFRESH_MS = 1000

ImportId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
After = Annotated[int | None, Query(ge=1, le=2**63 - 1)]

FIELD_LABELS = {
    Field.PATIENT_ID: "Patient id (the payment platform's)",
    Field.FIRST_NAME: "First name",
    Field.LAST_NAME: "Last name",
    Field.BIRTH_DATE: "Date of birth",
    Field.EMAIL: "Email",
    Field.PHONE: "Phone",
    Field.ACCOUNT_NUMBER: "PMS account number",
    Field.STATUS: "Status",
    Field.PATNUM: "PatNum (Open Dental's patient number)",
    Field.CHARTNUMBER: "ChartNumber",
}
PRESET_LABELS = {"generic": "Spreadsheet (generic columns)", "opendental": "Open Dental patient export"}
SOURCE_LABELS = {"patnum": "PatNum", "chartnumber": "ChartNumber"}
STATUS_WORDS = {"running": "Running", "done": "Done", "failed": "Failed"}

# A few made-up patients per format, for the sample file the page offers.
_SAMPLES = {
    "generic": (
        "patient_id,first_name,last_name,birth_date,email,phone,account_number,status",
        "P-2001,Maria,Lopez,1984-05-12,maria.lopez@example.com,555-0101,2001,active",
        "P-2002,James,Okafor,1979-11-03,,555-0102,2002,active",
        ",Lena,Fischer,02/28/1992,lena.fischer@example.com,,2003,inactive",
    ),
    "opendental": (
        "PatNum,LName,FName,Birthdate,Email,HmPhone,WirelessPhone,ChartNumber,PatStatus",
        "2001,Lopez,Maria,1984-05-12,maria.lopez@example.com,555-0101,,C-2001,Patient",
        "2002,Okafor,James,1979-11-03,,,555-0102,C-2002,Patient",
        "2003,Fischer,Lena,0001-01-01,lena.fischer@example.com,,,C-2003,Inactive",
    ),
}


def required_columns(preset: ColumnPreset) -> list[str]:
    """What a file of this format must have, in words."""
    names = "a last name or first name column"
    if preset.account_number_sources:
        return [names, "the PatNum column (or ChartNumber, when that is the account number)"]
    return [names, "a patient id or PMS account number column"]


def column_rows(preset: ColumnPreset) -> list[tuple[str, str]]:
    """(field, the headers that may hold it) for the columns explanation."""
    return [
        (FIELD_LABELS.get(field, field.value), ", ".join(headers))
        for field, headers in preset.headers.items()
    ]


@router.get("/imports", response_class=HTMLResponse)
async def imports_page(request: Request, staff: Importer, before: After = None) -> Response:
    return await _form_page(request, staff, before=before)


@router.get("/imports/sample.csv")
async def sample_csv(staff: Importer, preset: Annotated[str, Query(max_length=32)] = "generic") -> Response:
    lines = _SAMPLES.get(preset)
    if lines is None:
        raise HTTPException(404)
    return Response(
        "\r\n".join(lines) + "\r\n",
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="ledgerlink-patients-{preset}.csv"'},
    )


@router.post("/imports", response_class=HTMLResponse)
async def upload_patients(request: Request, staff: Importer) -> Response:
    length = request.headers.get("content-length", "")
    if (whole_number(length) or 0) > uploads.MAX_UPLOAD_BYTES + _FORM_OVERHEAD:
        # Refused before the body is read: nothing of it is stored.
        return await _form_page(
            request, staff, status=413, errors={"file": _sentence(uploads.too_large_message())}
        )
    try:
        form = await checked_form(_limited(request), staff)
    except _BodyTooLarge:
        return await _form_page(
            request, staff, status=413, errors={"file": _sentence(uploads.too_large_message())}
        )
    try:
        return await _start(request, staff, form)
    finally:
        await form.close()


@router.get("/imports/{import_id}", response_class=HTMLResponse)
async def import_results(request: Request, staff: Importer, import_id: ImportId) -> Response:
    record, connection_name = await _owned(request, staff, import_id)
    return render(
        request,
        "imports_results.html",
        staff,
        record=record,
        connection_name=connection_name,
        tab="summary",
        **_progress(request, record),
    )


@router.get("/imports/{import_id}/progress", response_class=HTMLResponse)
async def import_progress(request: Request, staff: Importer, import_id: ImportId) -> Response:
    """The live progress fragment the results page refreshes (app.js) until the import has ended."""
    record, _ = await _owned(request, staff, import_id)
    return render(
        request, "imports_progress.html", staff, record=record, reload=True, **_progress(request, record)
    )


@router.get("/imports/{import_id}/rejected", response_class=HTMLResponse)
async def rejected_rows(
    request: Request, staff: Importer, import_id: ImportId, after: After = None
) -> Response:
    record, connection_name = await _owned(request, staff, import_id)
    async with database(request).sessions() as session:
        rows = await uploads.rejections(session, record.id, REJECTIONS_PER_PAGE + 1, after)
    return render(
        request,
        "imports_rejected.html",
        staff,
        record=record,
        connection_name=connection_name,
        tab="rejected",
        rejections=rows[:REJECTIONS_PER_PAGE],
        next_after=rows[REJECTIONS_PER_PAGE - 1].id if len(rows) > REJECTIONS_PER_PAGE else None,
        first_page=after is None,
        per_page=REJECTIONS_PER_PAGE,
        **_progress(request, record),
    )


async def _start(request: Request, staff: Staff, form: Any) -> Response:
    """Check the form and the file, then start the import and go to its results (or show the errors)."""
    preset = str(form.get("preset") or "generic")
    source = str(form.get("account_number_source") or "patnum")
    if not PRESETS.get(preset, PRESETS["generic"]).account_number_sources:
        source = "patnum"  # the choice applies to Open Dental exports only
    skip_inactive = form.get("skip_inactive") is not None
    values = {"preset": preset, "account_number_source": source, "skip_inactive": skip_inactive}
    connection_text = str(form.get("connection") or "").strip()
    values["connection"] = connection_text

    async def again(status: int, field: str, message: str) -> Response:
        return await _form_page(
            request, staff, status=status, errors={field: _sentence(message)}, values=values
        )

    try:
        uploads.check_options(preset, source)
    except InvalidInput as exc:
        return await again(400, exc.field or "preset", exc.message)
    connection_id = whole_number(connection_text)
    if connection_text and connection_id is None:
        return await again(400, "connection", "choose one of the connections")
    db = database(request)
    try:
        practice, connection = await uploads.import_target(db, staff.practice.id, connection_id)
    except NotFound:
        return await again(400, "connection", "choose one of the connections")
    except InvalidInput as exc:
        return await again(400, "connection", exc.message)

    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        return await again(400, "file", "choose the CSV file to import")
    filename = PureWindowsPath(file.filename).name[:200] or "upload.csv"
    media_type = (file.content_type or "").split(";")[0].strip().lower()
    if media_type and media_type not in uploads.CSV_MEDIA_TYPES:
        return await again(
            400,
            "file",
            f"{filename} is not a CSV file: in the spreadsheet or the PMS, save or export it as "
            "CSV (Comma delimited) and choose that file",
        )
    data_dir: Path = request.app.state.data_dir
    try:
        upload = await uploads.save_upload(_chunks(file), uploads.new_upload_path(data_dir))
    except LedgerlinkError as exc:
        return await again(413 if isinstance(exc, uploads.UploadTooLarge) else 400, "file", exc.message)
    problem = await _file_problem(upload, preset, source, filename)
    if problem:
        return await again(400, "file", problem)
    try:  # from here on the import's task removes the file when it ends
        import_id = await uploads.start_import(
            request.app.state,
            db,
            practice,
            connection,
            upload,
            preset=preset,
            skip_inactive=skip_inactive,
            account_number_source=source,
            filename=filename,
            actor=staff.actor,
        )
    except InvalidInput as exc:
        return await again(400, exc.field if exc.field in values else "file", exc.message)
    except uploads.ImportNotStarted as exc:
        return await again(500, "file", exc.message)
    return redirect(
        f"/imports/{import_id}",
        f"{filename} is being imported. You may leave this page: the results stay under Import patients.",
    )


async def _file_problem(upload: uploads.Upload, preset: str, source: str, filename: str) -> str:
    """Why the received file cannot be imported (it is then removed), or "" when it can."""
    problem = ""
    try:
        await asyncio.to_thread(uploads.check_columns, upload.path, preset, source)
    except PatientFileError as exc:
        problem = exc.message.replace(upload.path.name, filename)
    except BaseException:
        await asyncio.to_thread(upload.path.unlink, True)
        raise
    if not problem and upload.expected_rows == 0:
        problem = f"{filename} has a header row but no patients below it"
    if problem:
        await asyncio.to_thread(upload.path.unlink, True)
    return problem


async def _form_page(
    request: Request,
    staff: Staff,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    before: int | None = None,
) -> Response:
    async with database(request).sessions() as session:
        connections = sorted(await practice_connections(session, staff.practice.id), key=lambda c: c.name)
        recent = await uploads.recent_imports(session, staff.practice.id, IMPORTS_PER_PAGE + 1, before)
    return render(
        request,
        "imports.html",
        staff,
        status=status,
        errors=errors or {},
        values=values or {"preset": "generic", "account_number_source": "patnum", "skip_inactive": False},
        connection_options=[("", "Choose a connection"), *((str(c.id), c.name) for c in connections)],
        presets=[(name, PRESET_LABELS.get(name, name)) for name in PRESETS],
        sources=list(SOURCE_LABELS.items()),
        formats=[
            (
                preset,
                PRESET_LABELS.get(preset.name, preset.name),
                required_columns(preset),
                column_rows(preset),
            )
            for preset in PRESETS.values()
        ],
        max_mib=uploads.MAX_UPLOAD_BYTES // (1024 * 1024),
        imports=recent[:IMPORTS_PER_PAGE],
        older=recent[IMPORTS_PER_PAGE - 1].id if len(recent) > IMPORTS_PER_PAGE else None,
        status_words=STATUS_WORDS,
        shown_filename=uploads.shown_filename,
    )


async def _owned(request: Request, staff: Staff, import_id: int) -> tuple[PatientImport, str]:
    """The practice's import and its connection's name; another practice's answers 404 like a missing one."""
    async with database(request).sessions() as session:
        record = await uploads.find_import(session, staff.practice.id, import_id)
        if record is None:
            raise HTTPException(404)
        name = ""
        if record.connection_id is not None:
            connection = await session.get(Connection, record.connection_id)
            name = connection.name if connection else ""
    return record, name


def _progress(request: Request, record: PatientImport) -> dict[str, Any]:
    expected = uploads.expected_rows(request.app.state, record.id) if record.status == "running" else None
    if expected is not None:
        expected = max(expected, record.rows_total)
    return {
        "running": record.status == "running",
        "expected": expected,
        "refresh_every": _REFRESH_MS,
        "status_words": STATUS_WORDS,
        "preset_labels": PRESET_LABELS,
        "shown_filename": uploads.shown_filename,
    }


def _sentence(message: str) -> str:
    """A message as a sentence; one that starts with a file's name keeps the name as it is."""
    first = message.split(" ", 1)[0]
    start = message if "." in first else message[:1].upper() + message[1:]
    return start + ("" if message.endswith(".") else ".")


async def _chunks(file: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(1 << 20):
        yield chunk


class _BodyTooLarge(Exception):
    pass


def _limited(request: Request) -> Request:
    """The request with a body that stops being read beyond the upload limit (a body sent without a
    Content-Length is counted as it arrives)."""
    received = 0
    limit = uploads.MAX_UPLOAD_BYTES + _FORM_OVERHEAD
    receive: Callable[[], Awaitable[Message]] = request.receive

    async def counted() -> Message:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit:
            raise _BodyTooLarge()
        return message

    return Request(request.scope, counted)
