"""Patient imports started from an uploaded file: the HTTP API's `POST /v1/patient-imports` and the
dashboard's Import patients page both go through here, so both keep the same records and audit.

The upload is streamed to a file in the data directory (never held in memory whole, refused beyond
`MAX_UPLOAD_BYTES`), and the import (`importer.import_patients`) runs as an asyncio task of the serving
process. The tasks are kept in `app.state.patient_import_tasks`, which the application cancels on shutdown
(a cancelled import records itself as failed: "cancelled"). The import's row in `patient_imports` is
updated after every chunk the importer commits, so any server process can tell how far it is.

The importer creates its record itself; to learn the id, the upload is named with a unique marker, the
record carrying it is looked up, and then given the file's real name. An argument the importer refuses
before it records anything is raised to the caller as the importer's `InvalidInput`.

A server that stops in the middle of an import leaves it `running`: running it again (a new upload of the
same file) finishes the work, as the importer updates what it had created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.errors import InvalidInput, LedgerlinkError, NotFound
from ledgerlink.log import get_logger
from ledgerlink.patients.csv_reader import open_csv
from ledgerlink.patients.importer import Columns, import_patients
from ledgerlink.patients.presets import ACCOUNT_NUMBER_SOURCES, PRESETS
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, PatientImport, PatientImportRejection, Practice

log = get_logger(__name__)

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
UPLOAD_DIR = "uploads"
# What a browser or client may call a CSV file ("application/vnd.ms-excel" is how Windows labels .csv).
CSV_MEDIA_TYPES = frozenset(
    {
        "text/csv",
        "text/plain",
        "text/tab-separated-values",
        "application/csv",
        "application/vnd.ms-excel",
        "application/octet-stream",
    }
)
UPLOAD_MARKER = "upload:"
_WRITE_BLOCK = 1 << 20  # bytes gathered before one write to the file
_START_TIMEOUT_S = 60.0
_TASKS = "patient_import_tasks"  # on app.state; the application's lifespan cancels them on shutdown
_EXPECTED = "patient_import_expected_rows"

ImportTask = asyncio.Task[LedgerlinkError | None]


class UploadTooLarge(InvalidInput):
    code = "FILE_TOO_LARGE"


class EmptyUpload(InvalidInput):
    code = "FILE_EMPTY"


class ImportNotStarted(LedgerlinkError):
    """The import ended before recording itself for a reason other than a bad argument (see the log)."""

    code = "IMPORT_NOT_STARTED"


@dataclass(frozen=True, slots=True)
class Upload:
    """A received file: where it is kept, its size, and how many rows it has at most (its line breaks less
    the header; quoted values may hold line breaks), to show progress against."""

    path: Path
    size: int
    expected_rows: int


def too_large_message() -> str:
    return f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; split it and import the parts"


def new_upload_path(data_dir: Path) -> Path:
    return data_dir / UPLOAD_DIR / f"patients-{uuid.uuid4().hex}.csv"


async def save_upload(chunks: AsyncIterable[bytes], path: Path) -> Upload:
    """Stream `chunks` into `path`. `UploadTooLarge` beyond `MAX_UPLOAD_BYTES`, `EmptyUpload` when nothing
    came; the file is removed when the upload does not complete."""
    await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
    size = lines = 0
    last = b""
    pending = bytearray()
    try:
        with path.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise UploadTooLarge(too_large_message(), field="file")
                if chunk:
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
                pending += chunk
                if len(pending) >= _WRITE_BLOCK:
                    await asyncio.to_thread(out.write, bytes(pending))
                    pending.clear()
            await asyncio.to_thread(out.write, bytes(pending))
        if size == 0:
            raise EmptyUpload("the file is empty: choose the CSV file exported from the PMS", field="file")
    except BaseException:
        await asyncio.to_thread(path.unlink, True)
        raise
    if last not in (b"\n", b"\x00"):  # a last line without a line break (UTF-16 ends in a NUL byte)
        lines += 1
    return Upload(path=path, size=size, expected_rows=max(lines - 1, 0))


def check_columns(path: Path, preset: str, account_number_source: str) -> None:
    """Refuse a file the import could not start on, before anything is recorded: not CSV text, no header,
    or without the columns `preset` needs (`PatientFileError` naming the columns expected and found).
    Reads the header only (and checks the encoding), so it is quick even for a large file."""
    with open_csv(path) as csv_file:
        # The importer's own column resolution, so the check and the import never disagree.
        Columns.resolve(csv_file.header, PRESETS[preset], {}, account_number_source)


async def import_target(
    db: Database, practice_id: int, connection_id: int | None
) -> tuple[Practice, Connection | None]:
    """The practice and the connection the account numbers are for: the named one (`NotFound` when it is
    not the practice's), else the practice's only one (`InvalidInput` when it has several; None when it has
    none: account numbers then only key the rows). Both are detached, for the background task."""
    async with db.sessions() as session:
        practice = await session.get(Practice, practice_id)
        if practice is None:
            raise NotFound(f"no practice {practice_id}", field="practice")
        if connection_id is not None:
            chosen = await session.scalar(
                select(Connection).where(
                    Connection.id == connection_id, Connection.practice_id == practice_id
                )
            )
            if chosen is None:
                raise NotFound(f"no connection {connection_id}", field="connection")
        else:
            connections = list(
                await session.scalars(
                    select(Connection).where(Connection.practice_id == practice_id).limit(2)
                )
            )
            if len(connections) > 1:
                raise InvalidInput(
                    "the practice has several connections; name the one the account numbers are for",
                    field="connection",
                )
            chosen = connections[0] if connections else None
        session.expunge_all()  # handed to the background task, which outlives this session
    return practice, chosen


def check_options(preset: str, account_number_source: str) -> None:
    """`InvalidInput` naming the field for an unknown preset or account number source."""
    if preset not in PRESETS:
        raise InvalidInput(
            f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}", field="preset"
        )
    if account_number_source not in ACCOUNT_NUMBER_SOURCES:
        raise InvalidInput(
            f"account_number_source must be one of {', '.join(ACCOUNT_NUMBER_SOURCES)}",
            field="account_number_source",
        )


async def start_import(
    state: Any,
    db: Database,
    practice: Practice,
    connection: Connection | None,
    upload: Upload,
    *,
    preset: str,
    skip_inactive: bool,
    account_number_source: str,
    filename: str,
    actor: str,
) -> int:
    """Import `upload` in the background of this serving process (`state` is the application's state,
    which holds the tasks); returns the import's id once it is recorded, and audits the upload. The file is
    removed when the import ends. A refusal of an argument before anything was recorded is raised."""
    marker = f"{UPLOAD_MARKER}{upload.path.name}"
    task = asyncio.create_task(
        _run_import(
            db,
            practice,
            connection,
            upload.path,
            preset=preset,
            skip_inactive=skip_inactive,
            account_number_source=account_number_source,
            marker=marker,
            actor=actor,
        ),
        name=f"patient import {upload.path.name}",
    )
    _keep(state, task)
    import_id = await _recorded(db, practice.id, marker, filename.strip()[:500] or "upload.csv", task)
    expected: dict[int, int] = _held(state, _EXPECTED, dict)
    if not task.done():
        expected[import_id] = upload.expected_rows
        task.add_done_callback(lambda _: expected.pop(import_id, None))
    async with db.sessions.begin() as session:
        await record_audit(
            session,
            practice.id,
            actor,
            "patients.import.upload",
            f"patient_import:{import_id}",
            {
                "bytes": upload.size,
                "preset": preset,
                "connection": connection.id if connection else None,
                "skip_inactive": skip_inactive,
            },
        )
    return import_id


def expected_rows(state: Any, import_id: int) -> int | None:
    """How many rows the file of a running import of this process has at most; None when unknown (the
    import runs in another server process, or has ended)."""
    known: dict[int, int] = _held(state, _EXPECTED, dict)
    return known.get(import_id)


async def find_import(session: AsyncSession, practice_id: int, import_id: int) -> PatientImport | None:
    """The practice's import; None for another practice's, exactly as for one that does not exist."""
    found: PatientImport | None = await session.scalar(
        select(PatientImport).where(PatientImport.id == import_id, PatientImport.practice_id == practice_id)
    )
    return found


async def recent_imports(
    session: AsyncSession, practice_id: int, limit: int, before: int | None = None
) -> list[PatientImport]:
    """Up to `limit` of the practice's imports, newest first, older than import `before` when given."""
    query = select(PatientImport).where(PatientImport.practice_id == practice_id)
    if before is not None:
        query = query.where(PatientImport.id < before)
    return list(await session.scalars(query.order_by(PatientImport.id.desc()).limit(limit)))


async def rejections(
    session: AsyncSession, import_id: int, limit: int, after: int | None = None
) -> list[PatientImportRejection]:
    """Up to `limit` of an import's rejected rows in file order, after rejection `after` when given."""
    query = select(PatientImportRejection).where(PatientImportRejection.import_id == import_id)
    if after is not None:
        query = query.where(PatientImportRejection.id > after)
    return list(await session.scalars(query.order_by(PatientImportRejection.id).limit(limit)))


def shown_filename(record: PatientImport) -> str:
    """The file's name as the user gave it (for the instant between its start and its renaming, a stand-in)."""
    return "upload.csv" if record.filename.startswith(UPLOAD_MARKER) else record.filename


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


def _held(state: Any, name: str, make: type[Any]) -> Any:
    held = getattr(state, name, None)
    if held is None:
        held = make()
        setattr(state, name, held)
    return held


def _keep(state: Any, task: ImportTask) -> None:
    """Hold the task until it ends: the event loop keeps only a weak reference to it."""
    running: set[ImportTask] = _held(state, _TASKS, set)
    running.add(task)
    task.add_done_callback(running.discard)


async def _recorded(db: Database, practice_id: int, marker: str, shown_name: str, task: ImportTask) -> int:
    """The id of the import record the task made, renamed to `shown_name`; a refusal before any record
    was made is raised."""
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
                raise refusal
            raise ImportNotStarted("the import could not start; see the server log")
        if waited > _START_TIMEOUT_S:
            raise ImportNotStarted("the import did not start in time; see the server log")
        await asyncio.sleep(delay)
        waited += delay
        delay = min(delay * 2, 0.1)
