"""Reading a processor's transaction export (CSV or JSON lines) and checking each of its rows.

Nothing here touches the database: this module turns a file into `ParsedTransaction`s and `RowError`s, and
`ledgerlink.sources.transaction_import` decides what they mean for the store. The format is described for
users in docs/transaction-import.md; keep the two in step.
"""

from __future__ import annotations

import codecs
import csv
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, TypeVar
from zoneinfo import ZoneInfo

from ledgerlink.domain.money import AmountError, Cents, format_cents, parse_amount
from ledgerlink.domain.transactions import PaymentType, TransactionKind
from ledgerlink.errors import InvalidInput

FORMATS = ("csv", "jsonl")
_FORMAT_BY_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

REQUIRED_COLUMNS = ("reference", "time", "kind", "payment_type", "gross")
OPTIONAL_COLUMNS = (
    "fee",
    "net",
    "currency",
    "patient_id",
    "first_name",
    "last_name",
    "original_reference",
    "card_brand",
    "card_last4",
    "description",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS

CARD_NUMBER_REASON = "looks like a full card number; only the last four digits may be imported"

_KINDS: dict[str, TransactionKind] = {kind.value: kind for kind in TransactionKind} | {
    # The words of the commercial platforms' reports (seed 000).
    "accepted": TransactionKind.SALE,
    "refunded": TransactionKind.REFUND,
    "voided": TransactionKind.VOID,
    "declined": TransactionKind.DECLINE,
    "charge_back": TransactionKind.CHARGEBACK,
}
_PAYMENT_TYPES: dict[str, PaymentType] = {payment_type.value: payment_type for payment_type in PaymentType}
_KIND_EXPECTED = "a transaction kind: " + ", ".join(kind.value for kind in TransactionKind)
_PAYMENT_TYPE_EXPECTED = "a payment type: " + ", ".join(payment_type.value for payment_type in PaymentType)
_TIME_EXPECTED = (
    "an ISO 8601 time such as 2026-01-31T14:30:00Z, 2026-01-31T08:30:00-06:00 or 2026-01-31 08:30 "
    "(the practice's time zone)"
)
_PATIENT_EXPECTED: dict[TransactionKind, str] = {
    kind: f"the payment platform's patient id, which a {kind} needs"
    for kind in TransactionKind
    if kind is not TransactionKind.DECLINE
}
_ORIGINAL_EXPECTED: dict[TransactionKind, str] = {
    kind: f"the reference of the sale this {kind} reverses"
    for kind in TransactionKind
    if kind.reverses_original
}

_READ_BLOCK = 1 << 20
_WORD_SEPARATORS = re.compile(r"[\s_\-]+")
_DIGIT_RUN = re.compile(r"[0-9](?:[ \-]?[0-9])*")
_DIGIT_GROUP_SEPARATOR = re.compile(r"[ \-]")
_CARD_NUMBER_CANDIDATE = re.compile(r"[0-9][0-9 \-]{12}")
# A comma in an amount is only a thousands separator: "12,50" (a decimal comma) must not become 1,250.00.
_NON_THOUSANDS_COMMA = re.compile(r",(?![0-9]{3}(?![0-9]))")
_CURRENCY = re.compile(r"[A-Za-z]{3}")
_MASKED_LAST4 = re.compile(r"[*xX•#.\s\-]*([0-9]{4})")

_T = TypeVar("_T")


class ImportFileError(InvalidInput):
    """The file as a whole cannot be imported: unreadable, unknown format, a required column missing."""


@dataclass(frozen=True)
class RowError:
    """One problem in one row.

    `row` is the row number a spreadsheet shows (the CSV header is row 1, so the first data row is 2), or
    the line number in a JSON lines file. `column` names the column (or JSON field) at fault; it is empty
    when the row as a whole cannot be read.
    """

    row: int
    column: str
    reason: str


@dataclass(slots=True)
class RawRow:
    """One data row as read from the file: column name (normalised) -> text, before any checking."""

    row: int
    fields: dict[str, str]
    errors: tuple[RowError, ...] = ()  # problems found while reading, such as a line that is not JSON


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs more, once per row
class ParsedTransaction:
    """A row that passed every check that needs no database: ready to be stored."""

    row: int
    reference: str
    kind: TransactionKind
    payment_type: PaymentType
    occurred_at: datetime  # aware, UTC
    local_date: date  # the date in the practice's time zone
    gross_cents: Cents
    fee_cents: Cents
    net_cents: Cents
    currency: str
    patient_ref: str  # "" when the row names no patient (declines only)
    first_name: str
    last_name: str
    original_ref: str  # "" when the row names none (sales never do)
    card_brand: str
    card_last4: str
    description: str


def column_name(text: str) -> str:
    """The canonical form of a header name or JSON key: ``" Payment Type"`` -> ``"payment_type"``."""
    return _WORD_SEPARATORS.sub("_", text.replace("\ufeff", "").strip().lower()).strip("_")


def resolve_format(path: Path, file_format: str | None) -> str:
    """The file's format: the one given, else the one its extension names."""
    if file_format is not None:
        wanted = file_format.strip().lower()
        if wanted not in FORMATS:
            raise ImportFileError(
                f"unknown file format {file_format!r}; use one of {', '.join(FORMATS)}", field="format"
            )
        return wanted
    found = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(
            f"cannot tell the format of {path.name!r} from its extension; name the file .csv, .jsonl or "
            ".ndjson, or give the format (csv or jsonl)",
            field="format",
        )
    return found


def detect_encoding(path: Path) -> str:
    """UTF-8 (a BOM is skipped), UTF-16 when it starts with a UTF-16 BOM, else Windows-1252.

    Excel writes "CSV UTF-8" with a BOM, plain "CSV" in the Windows code page and "Unicode text" in
    UTF-16. The whole file is checked because a stray Windows-1252 byte may sit on the last line.
    """
    try:
        with path.open("rb") as raw:
            block = raw.read(_READ_BLOCK)
            if block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                return "utf-16"
            decoder = codecs.getincrementaldecoder("utf-8")()
            try:
                while block:
                    decoder.decode(block)
                    block = raw.read(_READ_BLOCK)
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                return "cp1252"
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
    return "utf-8-sig"


class ExportFile:
    """An export opened for reading: format and encoding settled and, for CSV, the header checked.

    Rows are read on demand (`read`), so a file of any size is held in memory one chunk at a time.
    """

    def __init__(self, path: Path, file_format: str | None = None) -> None:
        self.path = path
        self.format = resolve_format(path, file_format)
        encoding = detect_encoding(path)
        try:
            self._handle: IO[str] = path.open(encoding=encoding, newline="")
        except OSError as exc:
            raise ImportFileError(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
        self._last_row = 1
        try:
            self._rows = self._open_csv() if self.format == "csv" else self._jsonl_rows()
        except BaseException as exc:
            self._handle.close()
            if isinstance(exc, UnicodeDecodeError | csv.Error):
                raise self._unreadable(exc) from None
            raise

    def read(self, count: int) -> list[RawRow]:
        """The next `count` data rows (fewer at the end of the file; none once it is read)."""
        try:
            return list(itertools.islice(self._rows, count))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise self._unreadable(exc) from None

    def close(self) -> None:
        self._handle.close()

    def _unreadable(self, exc: UnicodeDecodeError | csv.Error) -> ImportFileError:
        where = f"after row {self._last_row}" if self._last_row > 1 else "at its start"
        if isinstance(exc, UnicodeDecodeError):
            why = "it is neither UTF-8 nor Windows-1252 text; save it as CSV UTF-8"
        else:
            why = f"it is not valid CSV ({exc})"
        return ImportFileError(f"cannot read {self.path.name} {where}: {why}", field="file")

    def _open_csv(self) -> Iterator[RawRow]:
        header_line = self._handle.readline()
        if not header_line.strip():
            raise ImportFileError(
                f"{self.path.name} has no header: its first line must name the columns "
                f"({', '.join(REQUIRED_COLUMNS)}, ...)",
                field="file",
            )
        # Excel writes ";" where the decimal separator is a comma, and "Unicode text" is tab-separated.
        delimiter = max(",;\t", key=header_line.count)
        reader = csv.reader(itertools.chain([header_line], self._handle), delimiter=delimiter)
        header = next(reader)
        names = self._column_names(header)
        return self._csv_rows(reader, names)

    def _column_names(self, header: list[str]) -> list[str]:
        names: list[str] = []
        position: dict[str, int] = {}
        for number, text in enumerate(header, start=1):
            name = column_name(text) or f"column {number}"
            if name in position:
                if name in COLUMNS:
                    raise ImportFileError(
                        f"the header names column {name!r} twice (columns {position[name]} and {number}); "
                        "each column may appear once",
                        field=name,
                    )
                name = f"{name} (column {number})"  # unknown columns are kept only for the card check
            position[name] = number
            names.append(name)
        missing = [name for name in REQUIRED_COLUMNS if name not in position]
        if missing:
            found = ", ".join(names) or "nothing"
            plural = "s" if len(missing) > 1 else ""
            raise ImportFileError(
                f"the header has no {', '.join(missing)} column{plural}; a transaction export needs "
                f"{', '.join(REQUIRED_COLUMNS)} (the header names: {found[:300]})",
                field=missing[0],
            )
        return names

    def _csv_rows(self, reader: Iterator[list[str]], names: list[str]) -> Iterator[RawRow]:
        width = len(names)
        for number, values in enumerate(reader, start=2):
            self._last_row = number
            if not any(values) or not "".join(values).strip():
                continue  # blank lines, and the ",,,," lines spreadsheets leave at the end
            fields = dict(zip(names, values, strict=False))
            if len(values) <= width:
                yield RawRow(number, fields)
                continue
            extra = values[width:]
            for offset, value in enumerate(extra, start=width + 1):
                fields[f"column {offset}"] = value  # kept for the card check
            if not "".join(extra).strip():
                yield RawRow(number, fields)
                continue
            too_many = RowError(
                number,
                f"column {width + 1}",
                f"the row has {len(values)} values but the header names {width} columns; "
                "a value that contains the delimiter must be in double quotes",
            )
            yield RawRow(number, fields, (too_many,))

    def _jsonl_rows(self) -> Iterator[RawRow]:
        for number, line in enumerate(self._handle, start=1):
            self._last_row = number
            if line.strip():
                yield _json_row(number, line)


def _json_row(number: int, line: str) -> RawRow:
    try:
        value = json.loads(line, parse_float=Decimal)  # amounts never pass through a binary float
    except json.JSONDecodeError as exc:
        reason = (
            f"not valid JSON ({exc.msg} at character {exc.pos + 1}); each line must be one JSON object "
            'such as {"reference": "ch_1", "gross": "19.99", ...}'
        )
        return RawRow(number, {}, (RowError(number, "", reason),))
    return raw_row_from_object(number, value)


def raw_row_from_object(number: int, value: object) -> RawRow:
    """A transaction given as a JSON object (a line of a JSON lines file, or an item of an API request)."""
    if not isinstance(value, dict):
        reason = "each transaction must be one JSON object (in braces) with the transaction's fields"
        return RawRow(number, {}, (RowError(number, "", reason),))
    fields: dict[str, str] = {}
    errors: list[RowError] = []
    for key, item in value.items():
        name = column_name(str(key)) or str(key)
        if name in fields:
            errors.append(RowError(number, name, "the field is given twice (names differ only in case)"))
        elif item is None:
            fields[name] = ""
        elif isinstance(item, str):
            fields[name] = item
        elif isinstance(item, int | Decimal) and not isinstance(item, bool):
            fields[name] = str(item)
        else:
            errors.append(RowError(number, name, "must be a text or a number"))
    return RawRow(number, fields, tuple(errors))


def looks_like_card_number(text: str) -> bool:
    """Whether `text` holds a run of 13 to 19 digits (spaces or dashes allowed between groups) that
    passes the Luhn check, i.e. what a full card number looks like."""
    if len(text) < 13:
        return False
    for match in _DIGIT_RUN.finditer(text):
        run = match.group()
        if len(run) < 13:
            continue
        groups = _DIGIT_GROUP_SEPARATOR.split(run)
        # A card number written in groups may touch other digit groups ("4111 1111 1111 1111 12/27"):
        # try every stretch of whole groups, never a cut through one.
        for start in range(len(groups)):
            digits = ""
            for group in groups[start:]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _passes_luhn(digits):
                    return True
    return False


def _passes_luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def parse_row(raw: RawRow, tz: ZoneInfo) -> ParsedTransaction | list[RowError]:
    """Check one row on its own (no database): a transaction ready to store, or every problem found.

    A row holding something that looks like a card number is rejected on that alone, so that no other
    message can repeat the digits.
    """
    card_errors = []
    # One quick search over the whole row first: most rows have nothing that could be a card number.
    if _CARD_NUMBER_CANDIDATE.search("\n".join(raw.fields.values())):
        card_errors = [
            RowError(raw.row, name, CARD_NUMBER_REASON)
            for name, value in raw.fields.items()
            if looks_like_card_number(value)
        ]
    if card_errors or raw.errors:
        return card_errors + list(raw.errors)

    check = _RowCheck(raw.row, raw.fields)
    reference = check.text("reference", limit=200, required="the processor's transaction id")
    when = check.time(tz)
    kind = check.choice("kind", _KINDS, _KIND_EXPECTED)
    payment_type = check.choice("payment_type", _PAYMENT_TYPES, _PAYMENT_TYPE_EXPECTED)
    gross = check.amount("gross", required="the amount charged, such as 19.99")
    fee = check.amount("fee")
    net = check.amount("net")
    if fee is None:
        fee = 0
    if gross is not None and fee > gross:
        check.fail(
            "fee",
            f"{_money(fee)} is more than the gross amount {_money(gross)}; the fee is part of the gross",
        )
    elif gross is not None and net is not None and net != gross - fee:
        check.fail(
            "net",
            f"{_money(net)} is not the gross {_money(gross)} minus the fee {_money(fee)}, which is "
            f"{_money(gross - fee)}; correct it or leave net empty to have it computed",
        )
    currency = check.text("currency", limit=3, what="a three-letter currency code such as USD") or "USD"
    if not _CURRENCY.fullmatch(currency):
        check.fail("currency", f"{_show(currency)} is not a three-letter currency code such as USD")
    patient_ref = check.text("patient_id", limit=100, required=_PATIENT_EXPECTED.get(kind) if kind else None)
    first_name = check.text("first_name", limit=100)
    last_name = check.text("last_name", limit=100)
    original_ref = check.text(
        "original_reference", limit=200, required=_ORIGINAL_EXPECTED.get(kind) if kind else None
    )
    if original_ref and kind is TransactionKind.SALE:
        check.fail(
            "original_reference", "must be empty for a sale; only refunds, voids and chargebacks name one"
        )
    elif original_ref and original_ref == reference:
        check.fail(
            "original_reference", "is the row's own reference; name the reference of the sale it reverses"
        )
    card_brand = check.text("card_brand", limit=20)
    card_last4 = check.last4()
    description = check.text("description", limit=500)

    if check.errors:
        return check.errors
    assert when is not None and kind is not None and payment_type is not None and gross is not None
    occurred_at, local_date = when
    return ParsedTransaction(
        row=raw.row,
        reference=reference,
        kind=kind,
        payment_type=payment_type,
        occurred_at=occurred_at,
        local_date=local_date,
        gross_cents=gross,
        fee_cents=fee,
        net_cents=gross - fee,
        currency=currency.upper(),
        patient_ref=patient_ref,
        first_name=first_name,
        last_name=last_name,
        original_ref=original_ref,
        card_brand=card_brand,
        card_last4=card_last4,
        description=description,
    )


class _RowCheck:
    """Reads the fields of one row, collecting a `RowError` for each problem instead of stopping."""

    def __init__(self, row: int, fields: Mapping[str, str]) -> None:
        self.row = row
        self.fields = fields
        self.errors: list[RowError] = []

    def fail(self, column: str, reason: str) -> None:
        self.errors.append(RowError(self.row, column, reason))

    def text(self, column: str, *, limit: int, required: str | None = None, what: str = "") -> str:
        """The trimmed value, "" when absent; `required` says what is expected when it may not be absent."""
        value = self.fields.get(column)
        if not value or not (value := value.strip()):
            if required:
                self.fail(column, f"has no value; expected {required}")
            return ""
        if len(value) > limit:
            # Not echoed: a long value may be anything, card data included.
            expected = f"expected {what}" if what else f"at most {limit} are allowed"
            self.fail(column, f"is {len(value)} characters long; {expected}")
            return ""
        return value

    def choice(self, column: str, words: Mapping[str, _T], expected: str) -> _T | None:
        text = self.text(column, limit=40, required=expected, what=expected)
        if not text:
            return None
        found = words.get(text)
        if found is None:
            found = words.get(column_name(text))
        if found is None:
            self.fail(column, f"{_show(text)} is not {expected}")
        return found

    def amount(self, column: str, *, required: str | None = None) -> Cents | None:
        text = self.text(column, limit=40, required=required, what="an amount such as 19.99")
        if not text:
            return None
        if "," in text and _NON_THOUSANDS_COMMA.search(text):
            self.fail(
                column,
                f"{_show(text)} has a comma that is not a thousands separator; write cents after a dot, "
                "such as 12.50",
            )
            return None
        try:
            return parse_amount(text)
        except AmountError as exc:
            self.fail(
                column, f"{exc} (expected an amount of zero or more such as 19.99, at most two decimals)"
            )
            return None

    def time(self, tz: ZoneInfo) -> tuple[datetime, date] | None:
        """The time as aware UTC and the practice's local date; a time without offset is local time."""
        text = self.text("time", limit=40, required=_TIME_EXPECTED, what="an ISO 8601 time")
        if not text:
            return None
        try:
            value = datetime.fromisoformat(text)
            local = value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)
            return local.astimezone(UTC), local.date()
        except (ValueError, OverflowError):  # not a time, or one at the very end of the calendar
            self.fail("time", f"{_show(text)} is not a time; expected {_TIME_EXPECTED}")
            return None

    def last4(self) -> str:
        text = self.text("card_last4", limit=25, what="the last four digits of a card")
        if not text:
            return ""
        match = _MASKED_LAST4.fullmatch(text)
        if match is None:
            # Not echoed: whatever else is in here is card data.
            self.fail("card_last4", "must be exactly the last four digits of the card, such as 4242")
            return ""
        return match.group(1)


def _show(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _money(cents: Cents) -> str:
    return format_cents(cents, symbol="")
