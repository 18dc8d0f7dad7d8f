"""The patient import (seed 003): a PMS patient export creates or updates patients and their account numbers.

The file is streamed in chunks of `CHUNK_ROWS` rows, read and parsed in a worker thread while the previous
chunk is written. Per chunk there is one query for the patients the chunk names by ref, one for the
account numbers it names, inserts of many rows per statement (SQLite) or executemany (PostgreSQL), updates
with executemany, all SQLAlchemy Core statements compiled once per import rather than ORM objects per
row, and a commit. So memory stays constant,
and an interrupted import is resumed by running it again (what it had created is then updated). Rows
already written by this import carry its id in `Patient.last_import_id`; that is how a key repeated
anywhere in the file is recognised without keeping every key in memory.

Matching, per row: a row with a patient id is the patient with that ref. A row without one is the patient
holding its account number on the connection, else the patient with the ref made for it ("od-<PatNum>"
for Open Dental, else "imp-<account number>"), else a new patient with that ref.

The chunk size is 20,000 rather than a few thousand because SQLite writes every index page a chunk
touches once per commit, and patients arrive in random name order: bigger chunks write far less. A
chunk in flight holds a few tens of megabytes.

Nothing here logs or audits patient names or birth dates: the audit entry holds counts only.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import date
from itertools import islice
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    ARRAY,
    ClauseElement,
    ColumnElement,
    Update,
    any_,
    bindparam,
    column,
    func,
    insert,
    select,
    update,
)
from sqlalchemy import values as values_table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import TypeEngine

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.errors import InvalidInput, LedgerlinkError
from ledgerlink.patients.csv_reader import PatientFileError, open_csv
from ledgerlink.patients.presets import (
    ACCOUNT_NUMBER_SOURCES,
    PRESETS,
    ColumnPreset,
    Field,
    PatientStatus,
    normalise_header,
    normalise_status,
)
from ledgerlink.store.db import Database
from ledgerlink.store.models import (
    Base,
    Connection,
    Patient,
    PatientAccount,
    PatientImport,
    PatientImportRejection,
    Practice,
)

__all__ = [
    "PRESETS",
    "ColumnPreset",
    "PatientFileError",
    "PatientImportResult",
    "RejectedRow",
    "import_patients",
]

CHUNK_ROWS = 20_000
KEPT_REJECTIONS = 1_000  # rejections returned in memory; all of them are stored
GENERATED_REF_PREFIX = "imp-"
_Order = Callable[[Sequence[Any]], Any]  # puts parameter values in the order a compiled statement takes

# Column lengths of the store; PostgreSQL refuses longer values, so they are rejected per row instead.
_MAX_NAME, _MAX_REF, _MAX_ACCOUNT, _MAX_EMAIL, _MAX_PHONE = 100, 100, 100, 200, 50
_MEMO_SIZE = 100_000
_MISSING: Any = object()  # not remembered yet
_UNKNOWN_DATES = frozenset({"0001-01-01", "0000-00-00"})  # Open Dental's "no date"
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?( ?[AaPp][Mm])?")
_SCIENTIFIC = re.compile(r"\d+(\.\d+)?[Ee]\+\d+")


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported: its number as a spreadsheet shows it (header = row 1), the column (as
    headed in the file; empty when the whole row is at fault) and why."""

    row: int
    column: str
    reason: str


@dataclass
class PatientImportResult:
    """What an import did. `rejected` holds the first `KEPT_REJECTIONS`; `rejected_count` counts them all,
    and every one is stored in `patient_import_rejections`."""

    import_id: int
    rows: int
    created: int
    updated: int
    skipped: int
    rejected: list[RejectedRow]
    rejected_count: int


async def import_patients(
    db: Database,
    practice: Practice,
    connection: Connection | None,
    path: Path,
    *,
    preset: str = "generic",
    column_map: dict[str, str] | None = None,
    skip_inactive: bool = False,
    account_number_source: str = "patnum",
    progress: Callable[[int], None] | None = None,
    filename: str | None = None,
    actor: str = "cli",
) -> PatientImportResult:
    """Create or update the practice's patients, and their account numbers on `connection`, from a CSV.

    `column_map` maps file headers to fields (see `presets.Field`) and overrides the preset.
    `account_number_source` ("patnum" or "chartnumber") chooses Open Dental's account number column.
    Inactive rows are counted as skipped when `skip_inactive`; Open Dental's Deleted rows always are.
    Without a connection, account numbers only key the rows (and build generated patient refs).
    `progress` is called with the number of rows done after each chunk.

    Raises `InvalidInput` for a bad argument (nothing is recorded), and `PatientFileError` when the file
    cannot be read or lacks a required column (the import is recorded as failed, with the reason).
    """
    chosen = PRESETS.get(preset)
    if chosen is None:
        raise InvalidInput(
            f"unknown preset {preset!r}; presets: {', '.join(sorted(PRESETS))}", field="preset"
        )
    if account_number_source not in ACCOUNT_NUMBER_SOURCES:
        raise InvalidInput(
            f"account number source must be one of {', '.join(ACCOUNT_NUMBER_SOURCES)}",
            field="account_number_source",
        )
    if account_number_source != "patnum" and not chosen.account_number_sources:
        raise InvalidInput(
            f"the {preset} preset takes its account number from the account_number column; "
            "account number source applies to the opendental preset",
            field="account_number_source",
        )
    mapped = _check_column_map(column_map or {}, chosen)
    if connection is not None and connection.practice_id != practice.id:
        raise InvalidInput("the connection belongs to another practice", field="connection")

    async with db.sessions.begin() as session:
        record = PatientImport(
            practice_id=practice.id,
            connection_id=connection.id if connection else None,
            filename=(filename or path.name)[:500],
            preset=chosen.name,
        )
        session.add(record)
        await session.flush()
        import_id = record.id

    run = _ImportRun(db, practice.id, connection.id if connection else None, import_id)
    try:
        with open_csv(path) as csv_file:
            columns = Columns.resolve(csv_file.header, chosen, mapped, account_number_source)
            parser = _RowParser(columns, chosen, db.engine.dialect, skip_inactive=skip_inactive)
            await run.import_records(parser, csv_file.rows(), progress)
    except BaseException as exc:
        await asyncio.shield(run.finish(actor, failure=exc))
        raise
    await run.finish(actor)
    return run.result()


def _check_column_map(column_map: dict[str, str], preset: ColumnPreset) -> dict[str, Field]:
    """The column map with headers normalised and field names checked."""
    allowed = {field.value: field for field in (*_PUBLIC_FIELDS, *preset.fields)}
    allowed["active"] = Field.STATUS
    mapped: dict[str, Field] = {}
    for header, name in column_map.items():
        target = allowed.get(name.strip().lower())
        if target is None:
            raise InvalidInput(
                f"column map: {header!r} maps to unknown field {name!r}; fields: {', '.join(sorted(allowed))}",
                field="column_map",
            )
        mapped[normalise_header(header)] = target
    return mapped


_PUBLIC_FIELDS = (
    Field.PATIENT_ID,
    Field.FIRST_NAME,
    Field.LAST_NAME,
    Field.BIRTH_DATE,
    Field.EMAIL,
    Field.PHONE,
    Field.ACCOUNT_NUMBER,
    Field.STATUS,
)


@dataclass(frozen=True)
class Columns:
    """Where each field sits in the file's rows, and the headers to name them by in rejections."""

    header: list[str]
    positions: dict[Field, tuple[int, ...]]
    # The field that holds the account number (account_number, or Open Dental's PatNum or ChartNumber).
    account_field: Field

    @classmethod
    def resolve(
        cls, header: list[str], preset: ColumnPreset, mapped: dict[str, Field], account_source: str
    ) -> Columns:
        found = [normalise_header(text) for text in header]
        index: dict[str, int] = {}
        for position, name in enumerate(found):
            if name:
                index.setdefault(name, position)
        listed = ", ".join(text.strip() for text in header if text.strip()) or "none"

        positions: dict[Field, tuple[int, ...]] = {}
        for name, target in mapped.items():
            if name not in index:
                raise PatientFileError(
                    f"the column map names a column {name!r} that the file does not have; "
                    f"columns found: {listed}",
                    field="column_map",
                )
            positions[target] = (*positions.get(target, ()), index[name])
        for target, aliases in preset.headers.items():
            if target in positions:
                continue
            hits = tuple(
                index[alias]
                for alias in dict.fromkeys(normalise_header(a) for a in aliases)
                if alias in index and alias not in mapped
            )
            if hits:
                positions[target] = hits

        account_field = Field.ACCOUNT_NUMBER
        if Field.ACCOUNT_NUMBER not in positions and preset.account_number_sources:
            account_field = preset.account_number_sources[account_source]

        def missing(what: str, fields: tuple[Field, ...]) -> PatientFileError:
            expected = " or ".join("/".join(dict.fromkeys(preset.headers.get(f, (f.value,)))) for f in fields)
            return PatientFileError(
                f"the file has no {what} column (expected {expected}); columns found: {listed}",
                field="file",
            )

        if Field.FIRST_NAME not in positions and Field.LAST_NAME not in positions:
            raise missing("name", (Field.LAST_NAME, Field.FIRST_NAME))
        if account_field is not Field.ACCOUNT_NUMBER:
            # The source was chosen for this export: without its column no patient could be matched later.
            if account_field not in positions:
                raise missing(f"account number ({account_source})", (account_field,))
        elif Field.PATIENT_ID not in positions and Field.ACCOUNT_NUMBER not in positions:
            raise missing("patient id or account number", (Field.PATIENT_ID, Field.ACCOUNT_NUMBER))
        return cls(header=header, positions=positions, account_field=account_field)

    def name(self, field: Field) -> str:
        """The header (as written in the file) of a field's first column, for rejections."""
        places = self.positions.get(field)
        return self.header[places[0]].strip() if places else field.value


class _Row(NamedTuple):
    """A parsed row. A flat tuple of plain values, which the garbage collector stops tracking: a chunk's
    rows then do not make every collection longer (objects would cost a tenth of the import's time)."""

    number: int
    patient_id: str
    account: str
    fallback_ref: str  # the patient ref when the row has no patient id
    fallback_column: str  # the header of the column it was made from
    # The patient's values as the database driver takes them, from here on (see `_VALUES`):
    first_name: str
    last_name: str
    birth_date: Any
    email: str
    phone: str
    active: Any


_VALUES = 5  # where first_name, last_name, birth_date, email, phone, active start in a `_Row`


class _Skipped:
    """A row left out on purpose (inactive with skip_inactive, or deleted in the PMS)."""


_SKIPPED = _Skipped()


class _RowParser:
    """Turns a CSV record into a `_Row`, a `RejectedRow` or `_SKIPPED`.

    This runs once per row, so it is written for speed: every field is read from one fixed position. A
    field the file lacks reads an always-blank slot appended to the row; a field with several columns
    (Open Dental's phones) gets a slot filled with the first non-blank of them. Dates and statuses repeat
    across rows, so their parsed values are remembered (up to `_MEMO_SIZE` distinct texts). Values come
    out converted for the database's driver (`dialect`), as this runs beside the writing, in a thread.
    """

    def __init__(
        self, columns: Columns, preset: ColumnPreset, dialect: Dialect, *, skip_inactive: bool
    ) -> None:
        positions = columns.positions
        patients = Patient.__table__.c
        self.convert_date = _processor(patients.birth_date.type, dialect)
        convert_active = _processor(patients.active.type, dialect)
        self.active_values = (convert_active(False), convert_active(True))
        self.skip_inactive = skip_inactive
        self.statuses = preset.statuses
        self.status_help = preset.status_help
        self.header_width = len(columns.header)
        blank = self.header_width
        self.merged: list[tuple[int, tuple[int, ...]]] = []
        slots: dict[Field, int] = {}
        for field, places in positions.items():
            if len(places) == 1:
                slots[field] = places[0]
            else:
                slots[field] = blank + 1 + len(self.merged)
                self.merged.append((slots[field], places))
        self.padding = [""] * (1 + len(self.merged))
        self.patient_id = slots.get(Field.PATIENT_ID, blank)
        self.account = slots.get(columns.account_field, blank)
        self.first_name = slots.get(Field.FIRST_NAME, blank)
        self.last_name = slots.get(Field.LAST_NAME, blank)
        self.birth_date = slots.get(Field.BIRTH_DATE, blank)
        self.email = slots.get(Field.EMAIL, blank)
        self.phone = slots.get(Field.PHONE, blank)
        self.status = slots.get(Field.STATUS, blank)
        self.ref_source = slots.get(preset.ref_field, blank) if preset.ref_field else blank
        self.ref_prefix = preset.ref_prefix
        self.names = {field: columns.name(field) for field in Field}
        self.names[Field.ACCOUNT_NUMBER] = columns.name(columns.account_field)
        self.ref_source_name = columns.name(preset.ref_field) if preset.ref_field else ""
        self.name_column = self.names[Field.LAST_NAME if Field.LAST_NAME in positions else Field.FIRST_NAME]
        self.key_column = self.names[
            Field.ACCOUNT_NUMBER if columns.account_field in positions else Field.PATIENT_ID
        ]
        # What an update overwrites: the fields the file has columns for (a blank cell clears the value).
        self.updates = frozenset(field for field in _UPDATABLE if field in positions)
        self.known_dates: dict[str, Any] = {}  # text -> the converted date
        self.known_statuses: dict[str, PatientStatus | None] = {}

    def parse(self, number: int, values: list[str]) -> _Row | RejectedRow | _Skipped:
        width = self.header_width
        if len(values) < width:
            values.extend([""] * (width - len(values)))
        elif len(values) > width:
            if any(value.strip() for value in values[width:]):
                return RejectedRow(
                    number,
                    "",
                    f"the row has {len(values)} values but the header has {width} columns "
                    "(a value containing the delimiter must be in quotes)",
                )
            del values[width:]
        values.extend(self.padding)
        for slot, places in self.merged:
            values[slot] = next((values[place] for place in places if values[place].strip()), "")

        active = True
        text = values[self.status]
        if text:
            status = self.known_statuses.get(text, _MISSING)
            if status is _MISSING:
                status = self.statuses.get(normalise_status(text)) if text.strip() else PatientStatus.ACTIVE
                if len(self.known_statuses) < _MEMO_SIZE:
                    self.known_statuses[text] = status
            if status is None:
                return RejectedRow(
                    number,
                    self.names[Field.STATUS],
                    f"unknown status {text.strip()!r}: use {self.status_help}",
                )
            if status is PatientStatus.DELETED:
                return _SKIPPED
            active = status is PatientStatus.ACTIVE
            if not active and self.skip_inactive:
                return _SKIPPED

        first_name = values[self.first_name].strip()
        last_name = values[self.last_name].strip()
        if not first_name and not last_name:
            return RejectedRow(
                number, self.name_column, "the patient has no name: a first or last name is needed"
            )
        patient_id = values[self.patient_id].strip()
        account = values[self.account].strip()
        if patient_id[:2] == '="':
            patient_id = _unwrap(patient_id)
        if account[:2] == '="':
            account = _unwrap(account)
        if not patient_id and not account:
            return RejectedRow(number, self.key_column, "a patient id or an account number is needed")
        if "+" in patient_id or "+" in account:
            for field, key in ((Field.PATIENT_ID, patient_id), (Field.ACCOUNT_NUMBER, account)):
                if _SCIENTIFIC.fullmatch(key):
                    return RejectedRow(
                        number,
                        self.names[field],
                        f"{key!r} is a number Excel turned into scientific notation; format the column as "
                        "Text in Excel and export again",
                    )

        fallback_ref = fallback_column = ""
        if not patient_id:
            source = values[self.ref_source].strip()
            if source:
                if source[:2] == '="':
                    source = _unwrap(source)
                fallback_ref, fallback_column = self.ref_prefix + source, self.ref_source_name
            else:
                fallback_ref, fallback_column = (
                    GENERATED_REF_PREFIX + account,
                    self.names[Field.ACCOUNT_NUMBER],
                )
            if len(fallback_ref) > _MAX_REF:
                return RejectedRow(number, fallback_column, "too long to make a patient id from")

        birth_date = None
        text = values[self.birth_date]
        if text:
            birth_date = self.known_dates.get(text, _MISSING)
            if birth_date is _MISSING:
                try:
                    birth_date = self.convert_date(parse_birth_date(text.strip()) if text.strip() else None)
                except ValueError:
                    return RejectedRow(
                        number,
                        self.names[Field.BIRTH_DATE],
                        f"unreadable date {text.strip()!r}: use YYYY-MM-DD, MM/DD/YYYY or M/D/YYYY",
                    )
                if len(self.known_dates) < _MEMO_SIZE:
                    self.known_dates[text] = birth_date

        email = values[self.email].strip()
        phone = values[self.phone].strip()
        if phone[:2] == '="':
            phone = _unwrap(phone)
        if (
            len(first_name) > _MAX_NAME
            or len(last_name) > _MAX_NAME
            or len(patient_id) > _MAX_REF
            or len(account) > _MAX_ACCOUNT
            or len(email) > _MAX_EMAIL
            or len(phone) > _MAX_PHONE
        ):
            return self._too_long(number, first_name, last_name, patient_id, account, email, phone)
        if "\n" in first_name or "\n" in last_name or "\r" in first_name or "\r" in last_name:
            first_name, last_name = " ".join(first_name.split()), " ".join(last_name.split())
        return _Row(
            number,
            patient_id,
            account,
            fallback_ref,
            fallback_column,
            first_name,
            last_name,
            birth_date,
            email,
            phone,
            self.active_values[active],
        )

    def _too_long(self, number: int, *values: str) -> RejectedRow:
        fields = (
            Field.FIRST_NAME,
            Field.LAST_NAME,
            Field.PATIENT_ID,
            Field.ACCOUNT_NUMBER,
            Field.EMAIL,
            Field.PHONE,
        )
        limits = (_MAX_NAME, _MAX_NAME, _MAX_REF, _MAX_ACCOUNT, _MAX_EMAIL, _MAX_PHONE)
        field, limit = next((f, n) for f, n, v in zip(fields, limits, values, strict=True) if len(v) > n)
        return RejectedRow(number, self.names[field], f"longer than {limit} characters")


def _unwrap(value: str) -> str:
    """Excel's ="00123" (written to keep leading zeros) as 00123."""
    return value[2:-1].strip() if len(value) > 2 and value.endswith('"') else value


def parse_birth_date(text: str) -> date | None:
    """YYYY-MM-DD, MM/DD/YYYY or M/D/YYYY, optionally followed by a time of day (which is ignored).

    Open Dental's "0001-01-01" (and "0000-00-00") mean the date is unknown: None. Raises ValueError.
    """
    day, _, clock = text.partition(" ")
    if clock and not _TIME_OF_DAY.fullmatch(clock.strip()):
        raise ValueError(text)
    if len(day) == 10 and day[4] == "-" and day[7] == "-":
        if day in _UNKNOWN_DATES:
            return None
        return date.fromisoformat(day)
    parts = day.split("/")
    if (
        len(parts) == 3
        and len(parts[2]) == 4
        and 1 <= len(parts[0]) <= 2
        and 1 <= len(parts[1]) <= 2
        and all(part.isascii() and part.isdigit() for part in parts)
    ):
        return date(int(parts[2]), int(parts[0]), int(parts[1]))
    raise ValueError(text)


@dataclass(slots=True)
class _ParsedChunk:
    rows: list[_Row]
    rejections: list[RejectedRow]
    skipped: int
    count: int  # records read, whatever became of them


def _parse_chunk(parser: _RowParser, records: Iterator[tuple[int, list[str]]]) -> _ParsedChunk:
    """Read and parse the next `CHUNK_ROWS` records."""
    chunk = _ParsedChunk([], [], 0, 0)
    for number, values in islice(records, CHUNK_ROWS):
        chunk.count += 1
        parsed = parser.parse(number, values)
        if isinstance(parsed, _Row):
            chunk.rows.append(parsed)
        elif isinstance(parsed, RejectedRow):
            chunk.rejections.append(parsed)
        else:
            chunk.skipped += 1
    return chunk


class _UpdateMany:
    """An UPDATE compiled once for the database's dialect, run with executemany on tuples in `keys` order.

    SQLAlchemy's own executemany sends every value of every row through its type's bind processor; here
    values come already converted (see `_processor`), shared ones once per chunk. Updates, unlike inserts,
    have no portable many-rows form, so this is one statement per row.
    """

    def __init__(
        self, statement: UpdateBase, dialect: Dialect, keys: list[str], column_keys: list[str]
    ) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys, for_executemany=True)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.keys = keys
        self.order = _reorder(keys, compiled.positiontup) if compiled.positional else None

    async def run(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.order is None:  # named parameters
            params: list[Any] = [dict(zip(self.keys, row, strict=True)) for row in rows]
        elif self.order is _unchanged:
            params = rows
        else:
            params = [self.order(row) for row in rows]
        await conn.exec_driver_sql(self.sql, params)


class _Batched:
    """A statement over many rows at once (`VALUES (...), (...), ...`), compiled for a few batch sizes.

    One statement per batch keeps the per-row work inside the database. With executemany, SQLite takes
    Python's GIL back after every row, so it stalls while the next chunk is parsed in the worker thread;
    a batch statement runs without it, alongside the parsing. PostgreSQL's driver is the other way round:
    it re-reads a long statement's text on every execution but pipelines executemany, so there each row
    is its own statement, run with executemany.

    `build(size)` makes the statement for `size` rows, whose parameters are `<key>_<n>` for each key of
    `row_keys` and row n, plus `fixed_keys` (the same for every row). The rows' values come one after
    the other in one flat list (no tuple per row), already converted (see `_processor`).
    """

    BATCH = 2_500  # rows per statement: at most 27,500 parameters, within SQLite's 32,766

    def __init__(
        self,
        build: Callable[[int], ClauseElement],
        row_keys: list[str],
        dialect: Dialect,
        fixed_keys: tuple[str, ...] = (),
    ) -> None:
        self.build = build
        self.row_keys = row_keys
        self.fixed_keys = fixed_keys
        self.dialect = dialect
        self.row_at_a_time = dialect.name == "postgresql"
        self.compiled: dict[int, tuple[str, list[str], _Order | None]] = {}

    def _for_size(self, size: int) -> tuple[str, list[str], _Order | None]:
        if size not in self.compiled:
            keys = [f"{key}_{n}" for n in range(size) for key in self.row_keys] + list(self.fixed_keys)
            sql = self._repeated(size)
            if sql is not None:
                self.compiled[size] = (sql, keys, _unchanged)
            else:
                compiled = self.build(size).compile(dialect=self.dialect)
                assert isinstance(compiled, SQLCompiler)
                order = _reorder(keys, compiled.positiontup) if compiled.positional else None
                self.compiled[size] = (compiled.string, keys, order)
        return self.compiled[size]

    def _repeated(self, size: int) -> str | None:
        """The one-row statement with its `VALUES (?, ...)` group repeated `size` times, when it ends in that
        group and takes `?` parameters in order: the same SQL as compiling the many-row statement, which
        takes SQLAlchemy about a second for 2,500 rows."""
        if size == 1 or self.fixed_keys or self.dialect.paramstyle != "qmark":
            return None
        one, _, order = self._for_size(1)
        group = "(" + ", ".join(["?"] * len(self.row_keys)) + ")"
        if order is not _unchanged or not one.endswith(" VALUES " + group):
            return None
        return one + (", " + group) * (size - 1)

    async def run(self, conn: AsyncConnection, values: list[Any], fixed: tuple[Any, ...] = ()) -> None:
        width = len(self.row_keys)
        count = len(values) // width
        if self.row_at_a_time and count:
            sql, keys, order = self._for_size(1)
            rows = [(*values[n : n + width], *fixed) for n in range(0, len(values), width)]
            params: list[Any] = (
                [dict(zip(keys, row, strict=True)) for row in rows]
                if order is None
                else [order(row) for row in rows]
            )
            await conn.exec_driver_sql(sql, params)
            return
        start = 0
        while start < count:
            # Whole batches, then the rest in a few smaller sizes, so only a handful of sizes are compiled.
            size = next(size for size in (self.BATCH, 500, 100, 20, 5, 1) if size <= count - start)
            sql, keys, order = self._for_size(size)
            batch = (*values[start * width : (start + size) * width], *fixed)
            await conn.exec_driver_sql(
                sql, dict(zip(keys, batch, strict=True)) if order is None else order(batch)
            )
            start += size


def _insert_rows(model: type[Base], columns: list[str]) -> Callable[[int], ClauseElement]:
    """The builder of `INSERT INTO <model> (columns) VALUES (...), ...` for `_Batched`."""
    table = model.__table__

    def build(size: int) -> ClauseElement:
        return insert(model).values(
            [
                {column: bindparam(f"{column}_{n}", type_=table.c[column].type) for column in columns}
                for n in range(size)
            ]
        )

    return build


def _insert_accounts_by_ref(size: int) -> ClauseElement:
    """The account numbers of patients named by ref: `WITH v(ref, account) AS (VALUES ...) INSERT ... SELECT`.

    Patients created in the same chunk get their id in the database, so no ids travel back to Python.
    """
    ref_type, account_type = Patient.patient_ref.type, PatientAccount.account_number.type
    rows = values_table(column("ref", ref_type), column("account", account_type), name="v").data(
        [
            (bindparam(f"ref_{n}", type_=ref_type), bindparam(f"account_{n}", type_=account_type))
            for n in range(size)
        ]
    )
    listed = rows.cte("v")
    return insert(PatientAccount).from_select(
        ["patient_id", "connection_id", "account_number", "updated_at"],
        select(
            Patient.id,
            bindparam("connection", type_=PatientAccount.connection_id.type),
            listed.c.account,
            bindparam("now", type_=PatientAccount.updated_at.type),
        ).join_from(
            listed,
            Patient,
            (Patient.practice_id == bindparam("practice", type_=Patient.practice_id.type))
            & (Patient.patient_ref == listed.c.ref),
        ),
    )


def _processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """The function that turns a Python value of `type_` into what the driver is given."""
    process = type_.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _unchanged


class _Lookup:
    """A select of the rows whose key is in a list ("listed"), compiled once per list size.

    SQLAlchemy renders and binds an IN list anew on every execution, which with thousands of values costs
    more than the lookup itself. Here the statement is compiled for a few sizes (powers of four up to
    `CHUNK_ROWS`); the slots beyond the values given repeat the first value, which finds nothing more.
    On PostgreSQL the list is one array parameter instead (see `_listed`). `fixed` names the statement's
    other parameters.
    """

    def __init__(self, statement: ClauseElement, dialect: Dialect, fixed: list[str]) -> None:
        self.statement = statement
        self.dialect = dialect
        self.fixed = fixed
        self.array = dialect.name == "postgresql"
        self.compiled: dict[int, tuple[str, list[str], _Order | None]] = {}

    def _for_size(self, size: int) -> tuple[str, list[str], _Order | None]:
        if size not in self.compiled:
            if self.array:
                compiled = self.statement.compile(dialect=self.dialect)
                keys = [*self.fixed, "listed"]
            else:
                statement = self.statement.params(listed=[""] * size)
                compiled = statement.compile(
                    dialect=self.dialect, compile_kwargs={"render_postcompile": True}
                )
                keys = [*self.fixed, *(f"listed_{n}" for n in range(1, size + 1))]
            assert isinstance(compiled, SQLCompiler)
            order = _reorder(keys, compiled.positiontup) if compiled.positional else None
            self.compiled[size] = (compiled.string, keys, order)
        return self.compiled[size]

    async def rows(self, conn: AsyncConnection, fixed: tuple[Any, ...], values: list[str]) -> list[Any]:
        if self.array:
            sql, keys, order = self._for_size(0)
            row: tuple[Any, ...] = (*fixed, values)
        else:
            size = 16
            while size < len(values):
                size *= 4
            sql, keys, order = self._for_size(min(size, max(len(values), CHUNK_ROWS)))
            row = (*fixed, *values, *values[:1] * (len(keys) - len(fixed) - len(values)))
        params: Any = dict(zip(keys, row, strict=True)) if order is None else order(row)
        return list((await conn.exec_driver_sql(sql, params)).all())


def _listed(column: ColumnElement[Any], dialect: Dialect) -> ColumnElement[bool]:
    """`column` is one of the parameter "listed": an array on PostgreSQL, an IN list elsewhere."""
    if dialect.name == "postgresql":
        return column == any_(bindparam("listed", type_=ARRAY(column.type)))
    return column.in_(bindparam("listed", [""], expanding=True))


def _reorder(keys: list[str], names: list[str] | None) -> _Order:
    """What puts a tuple in `keys` order into the positional order `names` (often already the same)."""
    names = names or []
    if names == keys:
        return _unchanged
    assert sorted(names) == sorted(keys), (names, keys)
    position = {key: place for place, key in enumerate(keys)}
    return _picker([position[name] for name in names])


def _picker(places: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """What takes the values at `places` out of a tuple, as a tuple (itemgetter alone gives a bare value
    for one place and fails for none)."""
    if not places:
        return lambda row: ()
    if len(places) == 1:
        place = places[0]
        return lambda row: (row[place],)
    return itemgetter(*places)


def _unchanged(value: Any) -> Any:
    return value


_PATIENT_COLUMNS = [
    "practice_id",
    "patient_ref",
    "first_name",
    "last_name",
    "birth_date",
    "email",
    "phone",
    "active",
    "last_import_id",
    "created_at",
    "updated_at",
]
_UPDATABLE = {
    Field.FIRST_NAME: "first_name",
    Field.LAST_NAME: "last_name",
    Field.BIRTH_DATE: "birth_date",
    Field.EMAIL: "email",
    Field.PHONE: "phone",
    Field.STATUS: "active",
}


class _Statements:
    """The import's statements, compiled for the database in use, and the bind processors it needs."""

    def __init__(self, dialect: Dialect, update_fields: frozenset[Field]) -> None:
        self.insert_patients = _Batched(_insert_rows(Patient, _PATIENT_COLUMNS), _PATIENT_COLUMNS, dialect)
        # An update sets the fields the file has columns for, in `_UPDATABLE` order.
        self.update_fields = [field for field in _UPDATABLE if field in update_fields]
        updated = [_UPDATABLE[field] for field in self.update_fields] + ["last_import_id", "updated_at"]
        self.update_patients = _UpdateMany(
            update(Patient).where(Patient.id == bindparam("b_id")), dialect, [*updated, "b_id"], updated
        )
        self.insert_accounts = _Batched(
            _insert_accounts_by_ref, ["ref", "account"], dialect, ("connection", "now", "practice")
        )
        self.update_accounts = _UpdateMany(
            update(PatientAccount).where(
                PatientAccount.patient_id == bindparam("b_patient"),
                PatientAccount.connection_id == bindparam("b_connection"),
            ),
            dialect,
            ["account_number", "updated_at", "b_patient", "b_connection"],
            ["account_number", "updated_at"],
        )
        rejection_columns = ["import_id", "row_number", "column", "reason"]
        self.insert_rejections = _Batched(
            _insert_rows(PatientImportRejection, rejection_columns), rejection_columns, dialect
        )

        practice = bindparam("practice", 0, type_=Patient.practice_id.type)
        connection = bindparam("connection", 0, type_=PatientAccount.connection_id.type)
        self.patients_by_ref = _Lookup(
            select(Patient.id, Patient.patient_ref, Patient.last_import_id, PatientAccount.account_number)
            .outerjoin(
                PatientAccount,
                (PatientAccount.patient_id == Patient.id) & (PatientAccount.connection_id == connection),
            )
            .where(Patient.practice_id == practice, _listed(Patient.__table__.c.patient_ref, dialect)),
            dialect,
            ["connection", "practice"],
        )
        self.patients_by_account = _Lookup(
            select(PatientAccount.account_number, Patient.id, Patient.patient_ref, Patient.last_import_id)
            .join(Patient, Patient.id == PatientAccount.patient_id)
            .where(
                PatientAccount.connection_id == connection,
                _listed(PatientAccount.__table__.c.account_number, dialect),
            ),
            dialect,
            ["connection"],
        )
        self.timestamp = _processor(Patient.__table__.c.updated_at.type, dialect)
        # What an update takes from a `_Row`.
        self.pick_updated = _picker([_VALUES + list(_UPDATABLE).index(field) for field in self.update_fields])


class _ChunkReader:
    """Reads and parses the file's chunks in a worker thread, one chunk ahead of the writing.

    Parsing a chunk takes a tenth of a second or so of pure Python; in a thread it does not hold up the
    event loop (a web server runs imports in the background). It gains little speed: the GIL lets it
    overlap only what the database does without it.
    """

    def __init__(self, parser: _RowParser, records: Iterator[tuple[int, list[str]]]) -> None:
        self.parser = parser
        self.records = records
        self.pending: asyncio.Future[_ParsedChunk] | None = None

    def _start(self) -> asyncio.Future[_ParsedChunk]:
        return asyncio.ensure_future(asyncio.to_thread(_parse_chunk, self.parser, self.records))

    async def next(self) -> _ParsedChunk:
        """The next chunk (`count` 0 at the end of the file); the one after it is started meanwhile."""
        pending, self.pending = self.pending or self._start(), None
        chunk = await pending
        if chunk.count:
            self.pending = self._start()
        return chunk

    async def close(self) -> None:
        """Wait for a chunk still being read: the file is closed after this."""
        if self.pending is not None:
            await asyncio.wait([self.pending])
            if not self.pending.cancelled():
                self.pending.exception()  # retrieved; the failure that matters is the one propagating


@dataclass(frozen=True)
class _Totals:
    rows: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0


@dataclass(slots=True, eq=False)
class _Known:
    """A patient as one chunk sees it: in the store, or created by an earlier row of the chunk."""

    id: int | None  # None when created in this chunk
    ref: str
    account: str | None  # its account number on the connection
    in_this_import: bool  # already written by this import: its keys are taken for the rest of the file


# Every patient created in a chunk: only ever checked for `in_this_import` (one object, not one per row).
_CREATED = _Known(None, "", None, True)


# SQLite's page cache for the import's connection (KiB). The default 2 MiB makes every index insert of a
# large import reread pages; this is restored when the import ends.
_SQLITE_CACHE_KIB = 64 * 1024


class _ImportRun:
    """One import across its chunks: totals, capacity, the first rejections, and the writing.

    All chunks go through one connection, each in its own transaction.
    """

    def __init__(self, db: Database, practice_id: int, connection_id: int | None, import_id: int) -> None:
        self.db = db
        self.practice_id = practice_id
        self.connection_id = connection_id
        self.import_id = import_id
        self.totals = _Totals()  # as committed
        self.rejected: list[RejectedRow] = []
        self.capacity: int | None = None
        self.patients = 0  # in the practice, when it has a capacity

    async def import_records(
        self,
        parser: _RowParser,
        records: Iterator[tuple[int, list[str]]],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Write the records chunk by chunk; the next chunk is read and parsed meanwhile (see `_ChunkReader`)."""
        reader = _ChunkReader(parser, records)
        async with self.db.engine.connect() as conn:
            statements = _Statements(conn.dialect, parser.updates)
            cache = await self._enlarge_sqlite_cache(conn)
            try:
                await self._load_capacity(conn)
                while (chunk := await reader.next()).count:
                    await self._write_chunk(conn, statements, parser, chunk)
                    if progress is not None:
                        progress(self.totals.rows)
            finally:
                await reader.close()
                if cache is not None:
                    with suppress(SQLAlchemyError):  # a connection that failed is discarded anyway
                        await conn.rollback()
                        await conn.exec_driver_sql(f"PRAGMA cache_size = {cache}")
                        await conn.commit()

    async def _enlarge_sqlite_cache(self, conn: AsyncConnection) -> int | None:
        """Give SQLite a larger page cache for the import; returns the setting to restore."""
        if not self.db.is_sqlite:
            return None
        previous = (await conn.exec_driver_sql("PRAGMA cache_size")).scalar()
        await conn.exec_driver_sql(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
        await conn.commit()
        return int(previous) if previous is not None else None

    async def _load_capacity(self, conn: AsyncConnection) -> None:
        self.capacity = (
            await conn.execute(select(Practice.patient_capacity).where(Practice.id == self.practice_id))
        ).scalar()
        if self.capacity is not None:
            count = select(func.count()).select_from(Patient).where(Patient.practice_id == self.practice_id)
            self.patients = (await conn.execute(count)).scalar() or 0
        await conn.commit()

    async def _write_chunk(
        self,
        conn: AsyncConnection,
        statements: _Statements,
        parser: _RowParser,
        chunk: _ParsedChunk,
    ) -> None:
        """Write one chunk, its rejections and the new totals in one transaction."""
        async with conn.begin():
            rejections = chunk.rejections
            created = updated = 0
            if chunk.rows:
                created, updated = await self._write_patients(
                    conn, statements, parser, chunk.rows, rejections
                )
            rejections.sort(key=lambda rejection: rejection.row)
            await statements.insert_rejections.run(
                conn, [value for r in rejections for value in (self.import_id, r.row, r.column, r.reason)]
            )
            before = self.totals
            totals = _Totals(
                rows=before.rows + chunk.count,
                created=before.created + created,
                updated=before.updated + updated,
                skipped=before.skipped + chunk.skipped,
                rejected=before.rejected + len(rejections),
            )
            await conn.execute(self._totals_update(totals))
        self.totals = totals
        self.rejected.extend(rejections[: max(0, KEPT_REJECTIONS - len(self.rejected))])

    def _totals_update(self, totals: _Totals) -> Update:
        return (
            update(PatientImport)
            .where(PatientImport.id == self.import_id)
            .values(
                rows_total=totals.rows,
                created=totals.created,
                updated=totals.updated,
                skipped=totals.skipped,
                rejected=totals.rejected,
            )
        )

    async def _write_patients(
        self,
        conn: AsyncConnection,
        statements: _Statements,
        parser: _RowParser,
        rows: list[_Row],
        rejections: list[RejectedRow],
    ) -> tuple[int, int]:
        """Match each row to a patient, reject what conflicts, and write the rest. Returns (created, updated)."""
        by_ref, by_account, shared = await self._load_known(conn, statements, rows)
        names = parser.names
        connection_id = self.connection_id
        practice_id, import_id = self.practice_id, self.import_id
        now = statements.timestamp(utcnow())
        pick_updated = statements.pick_updated
        new: list[Any] = []  # the values of the patients to insert, one after another
        created = 0
        patients, limit = self.patients, self.capacity if self.capacity is not None else math.inf
        changed: list[tuple[Any, ...]] = []
        account_inserts: list[Any] = []  # ref, account number, ...
        account_updates: list[tuple[Any, ...]] = []

        for row in rows:
            account = row.account
            # By patient id; a row without one by account number, then by the ref made for it.
            if row.patient_id:
                ref = row.patient_id
                target = by_ref.get(ref)
                if target is not None and target.in_this_import:
                    rejections.append(
                        RejectedRow(
                            row.number, names[Field.PATIENT_ID], f"patient id {ref!r} is on an earlier row"
                        )
                    )
                    continue
            else:
                ref = row.fallback_ref
                target = by_account.get(account) if connection_id is not None and account else None
                if target is None:
                    target = by_ref.get(ref)
                    if target is not None and target.in_this_import:
                        reason = f"patient {ref} is on an earlier row"
                        rejections.append(RejectedRow(row.number, row.fallback_column, reason))
                        continue
                elif target.in_this_import:
                    reason = f"account number {account!r} is on an earlier row"
                    rejections.append(RejectedRow(row.number, names[Field.ACCOUNT_NUMBER], reason))
                    continue
            if connection_id is not None and account:
                owner = by_account.get(account)
                if account in shared:
                    reason = f"account number {account!r} belongs to several patients; correct them first"
                elif owner is None or owner is target:
                    reason = ""
                elif owner.in_this_import:
                    reason = f"account number {account!r} is on an earlier row"
                else:
                    reason = f"account number {account!r} already belongs to another patient ({owner.ref})"
                if reason:
                    rejections.append(RejectedRow(row.number, names[Field.ACCOUNT_NUMBER], reason))
                    continue

            if target is None:
                if patients >= limit:
                    rejections.append(
                        RejectedRow(row.number, "", f"patient capacity of {self.capacity} reached")
                    )
                    continue
                by_ref[ref] = target = _CREATED
                new += (practice_id, ref, *row[_VALUES:], import_id, now, now)
                created += 1
                patients += 1
                if connection_id is not None and account:
                    by_account[account] = target
                    account_inserts += (ref, account)
                continue

            target.in_this_import = True
            changed.append((*pick_updated(row), import_id, now, target.id))
            if connection_id is not None and account and account != target.account:
                if target.account is None:
                    account_inserts += (target.ref, account)
                else:
                    account_updates.append((account, now, target.id, connection_id))
                    if by_account.get(target.account) is target:
                        del by_account[target.account]
                target.account = account
                by_account[account] = target

        self.patients = patients
        await statements.insert_patients.run(conn, new)
        await statements.update_patients.run(conn, changed)
        await statements.insert_accounts.run(conn, account_inserts, (connection_id, now, practice_id))
        await statements.update_accounts.run(conn, account_updates)
        return created, len(changed)

    async def _load_known(
        self, conn: AsyncConnection, statements: _Statements, rows: list[_Row]
    ) -> tuple[dict[str, _Known], dict[str, _Known], set[str]]:
        """The chunk's patients already in the store, by ref and by account number, and the account
        numbers that more than one patient has."""
        by_id: dict[int, _Known] = {}
        by_ref: dict[str, _Known] = {}
        by_account: dict[str, _Known] = {}
        shared: set[str] = set()
        # A chunk has at most CHUNK_ROWS keys, so repeats need not be removed (they find the same rows).
        refs = [row.patient_id or row.fallback_ref for row in rows]
        found = await statements.patients_by_ref.rows(conn, (self.connection_id, self.practice_id), refs)
        for patient_id, ref, last_import_id, account in found:
            known = _Known(patient_id, ref, account, last_import_id == self.import_id)
            by_id[patient_id] = by_ref[ref] = known
        numbers = [row.account for row in rows if row.account]
        if self.connection_id is not None and numbers:
            owners = await statements.patients_by_account.rows(conn, (self.connection_id,), numbers)
            for account, patient_id, ref, last_import_id in owners:
                known = by_id.get(patient_id) or _Known(
                    patient_id, ref, account, last_import_id == self.import_id
                )
                by_id[patient_id] = known
                if account in by_account and by_account[account] is not known:
                    shared.add(account)
                by_account[account] = known
        return by_ref, by_account, shared

    async def finish(self, actor: str, failure: BaseException | None = None) -> None:
        """Record the outcome and the audit entry (counts only). After a failure this is best effort and
        never replaces the original exception."""
        if failure is None:
            status, error = "done", None
        elif isinstance(failure, LedgerlinkError):
            status, error = "failed", failure.message
        elif isinstance(failure, asyncio.CancelledError | KeyboardInterrupt):
            status, error = "failed", "cancelled"
        else:
            # The exception's text may quote row values (names, birth dates): keep only its kind.
            status, error = "failed", f"unexpected error ({type(failure).__name__}); see the server log"
        totals = self.totals
        try:
            async with self.db.sessions.begin() as session:
                await session.execute(
                    self._totals_update(totals).values(status=status, error=error, finished_at=utcnow())
                )
                await record_audit(
                    session,
                    self.practice_id,
                    actor,
                    "patients.import",
                    f"patient_import:{self.import_id}",
                    {
                        "status": status,
                        "rows": totals.rows,
                        "created": totals.created,
                        "updated": totals.updated,
                        "skipped": totals.skipped,
                        "rejected": totals.rejected,
                    },
                )
        except Exception:
            if failure is None:
                raise

    def result(self) -> PatientImportResult:
        totals = self.totals
        return PatientImportResult(
            import_id=self.import_id,
            rows=totals.rows,
            created=totals.created,
            updated=totals.updated,
            skipped=totals.skipped,
            rejected=list(self.rejected),
            rejected_count=totals.rejected,
        )
