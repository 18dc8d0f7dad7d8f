"""Importing a payment processor's transaction export (CSV or JSON lines) into the store.

One streaming pass reads the file in chunks. Each chunk is checked row by row (`transaction_rows`), looked
up in one query (references already imported, the originals that refunds, voids and chargebacks name),
and written with bulk inserts. Everything happens in one database transaction, so a file with errors is
rolled back as a whole unless the caller asked for the valid rows; either way every error comes back with
its row and column. The file format is described in docs/transaction-import.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ledgerlink.clock import utcnow
from ledgerlink.domain.transactions import TransactionKind
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.sources.transaction_rows import (
    ExportFile,
    ImportFileError,
    ParsedTransaction,
    RawRow,
    RowError,
    parse_row,
    raw_row_from_object,
)
from ledgerlink.store.db import Database
from ledgerlink.store.ingest_lock import hold_for_writing
from ledgerlink.store.models import Patient, Practice, Transaction

__all__ = [
    "ImportFileError",
    "RowError",
    "TransactionImportResult",
    "import_transactions",
    "ingest_objects",
]

CHUNK_ROWS = 5_000
"""Rows read, checked and written together: one lookup query and one bulk insert per chunk."""

_SALE = TransactionKind.SALE.value


@dataclass
class TransactionImportResult:
    """What an import did.

    `rows` counts the file's data rows (blank lines aside); `imported` the transactions written;
    `already_imported` the rows whose reference the practice already had (left unchanged); `errors` every
    problem found, in row order. `applied` is False when errors stopped the import: then nothing was
    written and `imported` is 0.
    """

    rows: int
    imported: int
    already_imported: int
    errors: list[RowError]
    applied: bool


async def import_transactions(
    db: Database,
    practice: Practice,
    path: Path,
    *,
    file_format: str | None = None,
    import_valid_rows: bool = False,
    source: str = "csv",
    progress: Callable[[int], None] | None = None,
) -> TransactionImportResult:
    """Import the transactions of the export at `path` into `practice`.

    `file_format` is "csv" or "jsonl"; None reads it from the extension (.csv, .jsonl, .ndjson). A file
    with any row error imports nothing unless `import_valid_rows` is set; then the valid rows are
    imported and the errors still returned. References the practice already has are counted, not changed,
    so importing the same file twice is harmless. `source` is recorded on each transaction. `progress` is
    called with the number of rows read so far after each chunk and at the end.

    Raises `ImportFileError` when the file as a whole cannot be read (missing file, unknown format,
    undecodable text, a header without a required column), and `Conflict` when another import wrote the
    same references at the same moment (nothing is written; running it again is safe).
    """
    if not source or len(source) > 32:
        raise InvalidInput("the source must be 1 to 32 characters, such as csv", field="source")
    export = await asyncio.to_thread(ExportFile, path, file_format)
    run = _ImportRun(practice.id, ZoneInfo(practice.timezone), source, import_valid_rows)
    reading = asyncio.ensure_future(asyncio.to_thread(run.read_chunk, export))
    try:
        async with db.engine.connect() as conn:
            await hold_for_writing(conn, practice.id)
            if not db.is_sqlite:
                # The lookups repeat with thousands of values while the tables grow. A generic (cached)
                # plan, made when a table looked empty, compares each row with every value: minutes,
                # where a plan made for the actual values takes milliseconds. SET LOCAL ends with the
                # transaction.
                await conn.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
            try:
                done = 0
                while True:
                    count, chunk = await reading
                    if not count:
                        break
                    # The next chunk is read and checked in a thread while this one is written.
                    reading = asyncio.ensure_future(asyncio.to_thread(run.read_chunk, export))
                    await run.store_chunk(conn, chunk)
                    done += count
                    if progress is not None:
                        progress(done)
                await run.finish(conn)
            except IntegrityError:
                raise Conflict(
                    "another import wrote some of these transactions or patients at the same time; nothing "
                    "was imported from this file. Run the import again: what is already there is skipped"
                ) from None
            if run.applied:
                await conn.commit()
            # Otherwise the connection closes with a rollback: a file with errors leaves nothing behind.
    finally:
        # A thread cannot be cancelled: let the reading finish before its file is closed.
        await asyncio.gather(reading, return_exceptions=True)
        export.close()
    if progress is not None:
        progress(run.rows)
    return run.result()


async def ingest_objects(
    conn: AsyncConnection, practice: Practice, objects: Sequence[object], *, source: str = "api"
) -> TransactionImportResult:
    """Store transactions given as JSON objects (the fields of a JSON lines export), all or none.

    Works inside the caller's transaction on `conn` and commits nothing: the HTTP API stores its
    idempotency record in the same transaction. Row numbers in the errors are the objects' positions,
    counted from 0. When `applied` is False, rows may have been written: the caller rolls back.
    """
    await hold_for_writing(conn, practice.id)
    run = _ImportRun(practice.id, ZoneInfo(practice.timezone), source, import_valid_rows=False)
    parsed = run.check([raw_row_from_object(n, value) for n, value in enumerate(objects)])
    if run.applied:
        await run.store_chunk(conn, parsed)
        await run.finish(conn)
    return run.result()


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    kind: str


class _ImportRun:
    """The state of one import as it streams through the file."""

    def __init__(self, practice_id: int, tz: ZoneInfo, source: str, import_valid_rows: bool) -> None:
        self.practice_id = practice_id
        self.tz = tz
        self.source = source
        self.import_valid_rows = import_valid_rows
        self.imported_at: datetime = utcnow()
        self.rows = 0
        self.imported = 0
        self.already_imported = 0
        self.errors: list[RowError] = []
        # Every valid reference of the file with its row, for duplicates and for originals named later.
        self._first_row: dict[str, int] = {}
        # The kind of the file's valid rows that are not sales: a refund may only name a sale.
        self._non_sale_kinds: dict[str, str] = {}
        # Reversals whose original is not in the database yet: it may come later in the file.
        self._deferred: list[ParsedTransaction] = []

    @property
    def applied(self) -> bool:
        return self.import_valid_rows or not self.errors

    def result(self) -> TransactionImportResult:
        return TransactionImportResult(
            rows=self.rows,
            imported=self.imported if self.applied else 0,
            already_imported=self.already_imported,
            errors=sorted(self.errors, key=lambda error: error.row),
            applied=self.applied,
        )

    def read_chunk(self, export: ExportFile) -> tuple[int, list[ParsedTransaction]]:
        """Read the next chunk: how many rows it had (0 at the end of the file) and the valid ones.

        The errors are kept. Runs in a worker thread, beside the writing of the previous chunk.
        """
        raw_rows = export.read(CHUNK_ROWS)
        return len(raw_rows), self.check(raw_rows)

    def check(self, raw_rows: Sequence[RawRow]) -> list[ParsedTransaction]:
        """The valid rows among `raw_rows`, in order; the errors are kept."""
        self.rows += len(raw_rows)
        parsed: list[ParsedTransaction] = []
        for raw in raw_rows:
            outcome = parse_row(raw, self.tz)
            if isinstance(outcome, list):
                self.errors.extend(outcome)
                continue
            first = self._first_row.setdefault(outcome.reference, outcome.row)
            if first != outcome.row:
                self.errors.append(
                    RowError(
                        outcome.row,
                        "reference",
                        f"{outcome.reference!r} is already used by row {first}; each transaction needs its "
                        "own reference",
                    )
                )
                continue
            if outcome.kind is not TransactionKind.SALE:
                self._non_sale_kinds[outcome.reference] = outcome.kind.value
            parsed.append(outcome)
        return parsed

    async def store_chunk(self, conn: AsyncConnection, chunk: list[ParsedTransaction]) -> None:
        wanted = [txn.reference for txn in chunk] + [txn.original_ref for txn in chunk if txn.original_ref]
        stored = await self._stored(conn, wanted)
        ready: list[tuple[ParsedTransaction, int | None]] = []
        for txn in chunk:
            if txn.reference in stored:
                self.already_imported += 1
            elif not txn.kind.reverses_original:
                ready.append((txn, None))
            elif (original := stored.get(txn.original_ref)) is None:
                self._deferred.append(txn)
            elif self._check_original_is_sale(txn, original.kind):
                ready.append((txn, original.id))
        await self._write(conn, ready)

    async def finish(self, conn: AsyncConnection) -> None:
        """Resolve the reversals whose original was not stored when their chunk was written.

        Their original is either later in the file (now written, if valid) or nowhere: then the reversal is
        stored with only the original's reference, and the engine fails it with ORIGINAL_NOT_FOUND.
        """
        deferred, self._deferred = self._deferred, []
        for start in range(0, len(deferred), CHUNK_ROWS):
            batch = deferred[start : start + CHUNK_ROWS]
            stored = await self._stored(conn, [txn.original_ref for txn in batch]) if self.applied else {}
            ready: list[tuple[ParsedTransaction, int | None]] = []
            for txn in batch:
                original = stored.get(txn.original_ref)
                kind = original.kind if original else self._non_sale_kinds.get(txn.original_ref, _SALE)
                if self._check_original_is_sale(txn, kind):
                    ready.append((txn, original.id if original else None))
            await self._write(conn, ready)

    def _check_original_is_sale(self, txn: ParsedTransaction, original_kind: str) -> bool:
        if original_kind == _SALE:
            return True
        self.errors.append(
            RowError(
                txn.row,
                "original_reference",
                f"{txn.original_ref!r} is a {original_kind}, not a sale; a {txn.kind} can only reverse a sale",
            )
        )
        return False

    async def _stored(self, conn: AsyncConnection, references: Iterable[str]) -> dict[str, _Stored]:
        """The practice's stored transactions among `references`, in one query."""
        unique = list(set(references))
        if not unique:
            return {}
        found = await conn.execute(
            select(Transaction.processor_ref, Transaction.id, Transaction.kind).where(
                Transaction.practice_id == self.practice_id, Transaction.processor_ref.in_(unique)
            )
        )
        return {reference: _Stored(id_, kind) for reference, id_, kind in found}

    async def _write(
        self, conn: AsyncConnection, ready: Sequence[tuple[ParsedTransaction, int | None]]
    ) -> None:
        # Once an error has doomed the import, writing more would only be rolled back.
        if not ready or not self.applied:
            return
        patient_ids = await self._patient_ids(conn, [txn for txn, _ in ready])
        await conn.execute(
            insert(Transaction),
            [self._transaction_values(txn, original_id, patient_ids) for txn, original_id in ready],
        )
        self.imported += len(ready)

    async def _patient_ids(self, conn: AsyncConnection, chunk: Sequence[ParsedTransaction]) -> dict[str, int]:
        """Patient ids for the chunk's patient references, creating a stub patient for each new one."""
        named: dict[str, ParsedTransaction] = {}  # per patient, the first row that gives a name
        for txn in chunk:
            if txn.patient_ref:
                seen = named.get(txn.patient_ref)
                if seen is None or not (seen.first_name or seen.last_name):
                    named[txn.patient_ref] = txn
        if not named:
            return {}
        ids = await self._patients_among(conn, list(named))
        new = [reference for reference in named if reference not in ids]
        if new:
            # A plain executemany and a second select beat INSERT ... RETURNING on PostgreSQL.
            stubs = [
                {
                    "practice_id": self.practice_id,
                    "patient_ref": reference,
                    "first_name": named[reference].first_name,
                    "last_name": named[reference].last_name,
                    "active": True,
                    "created_at": self.imported_at,
                    "updated_at": self.imported_at,
                }
                for reference in new
            ]
            await conn.execute(insert(Patient), stubs)
            ids.update(await self._patients_among(conn, new))
        return ids

    async def _patients_among(self, conn: AsyncConnection, references: list[str]) -> dict[str, int]:
        found = await conn.execute(
            select(Patient.patient_ref, Patient.id).where(
                Patient.practice_id == self.practice_id, Patient.patient_ref.in_(references)
            )
        )
        return {reference: id_ for reference, id_ in found}

    def _transaction_values(
        self, txn: ParsedTransaction, original_id: int | None, patient_ids: dict[str, int]
    ) -> dict[str, Any]:
        return {
            "practice_id": self.practice_id,
            "processor_ref": txn.reference,
            "source": self.source,
            "kind": txn.kind.value,
            "payment_type": txn.payment_type.value,
            "gross_cents": txn.gross_cents,
            "fee_cents": txn.fee_cents,
            "net_cents": txn.net_cents,
            "currency": txn.currency,
            "occurred_at": txn.occurred_at,
            "local_date": txn.local_date,
            "patient_id": patient_ids.get(txn.patient_ref),
            "original_id": original_id,
            "original_ref": txn.original_ref or None,
            "card_brand": txn.card_brand,
            "card_last4": txn.card_last4,
            "description": txn.description,
            "imported_at": self.imported_at,
        }
