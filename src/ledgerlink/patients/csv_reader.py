"""Reading a CSV the way Excel and PMS exports write it, one record at a time in constant memory.

Excel saves "CSV" as UTF-8 with a byte-order mark, as plain UTF-8, or in the Windows ANSI code page
(Windows-1252); European locales separate values with `;`, "Unicode Text" uses tabs, and any of them may
start with a `sep=;` line. Values may be quoted and contain delimiters, quotes and line breaks; lines end
in CRLF. The encoding is decided by checking the bytes in fixed-size chunks, the delimiter from the
header line, and records are then streamed through the `csv` module.
"""

from __future__ import annotations

import codecs
import csv
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ledgerlink.errors import InvalidInput

DELIMITERS = (",", ";", "\t")
_CHUNK_BYTES = 1 << 16
_WORKBOOK_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx (zip) and .xls (OLE)


class PatientFileError(InvalidInput):
    """The file cannot be imported at all: unreadable, not text, no header, or a required column missing."""

    code = "PATIENT_FILE_INVALID"


def detect_encoding(path: Path) -> str:
    """The codec to read `path` with: UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252.

    A file that decodes as UTF-8 from end to end is UTF-8 (plain ASCII is too); the first byte sequence
    that is not valid UTF-8 means the ANSI code page Excel uses on Windows.
    """
    try:
        with path.open("rb") as stream:
            head = stream.read(4)
            if head.startswith(codecs.BOM_UTF8):
                return "utf-8-sig"
            if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                return "utf-16"
            if head.startswith(_WORKBOOK_MAGIC):
                raise PatientFileError(
                    f"{path.name} is an Excel workbook, not a CSV file: in Excel use File > Save As > "
                    "CSV (Comma delimited) and import that file",
                    field="file",
                )
            stream.seek(0)
            decoder = codecs.getincrementaldecoder("utf-8")()
            is_utf8 = True
            while chunk := stream.read(_CHUNK_BYTES):
                if b"\x00" in chunk:
                    raise PatientFileError(
                        f"{path.name} contains NUL bytes, so it is not a CSV text file; "
                        "save it from the spreadsheet as CSV",
                        field="file",
                    )
                if is_utf8:
                    try:
                        decoder.decode(chunk)
                    except UnicodeDecodeError:
                        is_utf8 = False
            if is_utf8:
                try:
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    is_utf8 = False
    except OSError as exc:
        raise PatientFileError(f"cannot read {path.name}: {exc.strerror or exc}", field="file") from None
    return "utf-8" if is_utf8 else "cp1252"


def sniff_delimiter(line: str) -> str:
    """The delimiter that splits the header line most often, counting only outside quotes; `,` by default."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties keep the earlier, more common delimiter
    return best if counts[best] else ","


@dataclass
class CsvFile:
    """An open CSV file: how it is written, its header, and its records numbered as a spreadsheet shows them."""

    name: str
    encoding: str
    delimiter: str
    header: list[str]
    _records: Iterator[list[str]]

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """(row number, values) for each record after the header; the header is row 1.

        A record whose values are all blank (Excel leaves such rows below the data) is passed over, but
        still counts for the numbering, so numbers match what the spreadsheet shows.
        """
        number = 1
        try:
            for values in self._records:
                number += 1
                if values and (values[0].strip() or "".join(values).strip()):
                    yield number, values
        except csv.Error as exc:
            raise PatientFileError(
                f"{self.name}, row {number + 1}: {exc} (a quote that never closes?)", field="file"
            ) from None
        except UnicodeDecodeError:
            # Text is decoded a block ahead of the rows, so the bad byte is somewhere after this row.
            raise PatientFileError(
                f"{self.name}: the text after row {number} is neither UTF-8 nor Windows-1252; "
                "save the file from the spreadsheet as CSV UTF-8",
                field="file",
            ) from None


@contextmanager
def open_csv(path: Path) -> Iterator[CsvFile]:
    """Open `path` for streaming: encoding and delimiter detected, header read, records not yet read."""
    encoding = detect_encoding(path)
    try:
        stream = path.open(encoding=encoding, newline="")
    except OSError as exc:
        raise PatientFileError(f"cannot read {path.name}: {exc.strerror or exc}", field="file") from None
    with stream:
        yield _start(path.name, encoding, stream)


def _start(name: str, encoding: str, stream: TextIO) -> CsvFile:
    try:
        first = stream.readline()
        delimiter = ""
        # Excel writes and honours a first line "sep=;" naming the delimiter; it never shows it as a row.
        if first.lower().startswith("sep=") and len(first.rstrip("\r\n")) == 5:
            delimiter = first[4]
            first = stream.readline()
    except UnicodeDecodeError:
        raise PatientFileError(
            f"{name}: the header is neither UTF-8 nor Windows-1252 text", field="file"
        ) from None
    if not first.strip():
        raise PatientFileError(f"{name} is empty: the first row must name the columns", field="file")
    delimiter = delimiter or sniff_delimiter(first)
    records = csv.reader(itertools.chain([first], stream), delimiter=delimiter)
    try:
        header = next(records)
    except csv.Error as exc:
        raise PatientFileError(f"{name}: the header row cannot be read: {exc}", field="file") from None
    return CsvFile(name=name, encoding=encoding, delimiter=delimiter, header=header, _records=records)
