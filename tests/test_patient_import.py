"""The patient import (seed 003): Excel's CSV quirks, both presets, matching, capacity and every rejection."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ledgerlink.errors import InvalidInput
from ledgerlink.patients import importer
from ledgerlink.patients.csv_reader import detect_encoding, open_csv, sniff_delimiter
from ledgerlink.patients.importer import (
    PRESETS,
    PatientFileError,
    PatientImportResult,
    RejectedRow,
    import_patients,
    parse_birth_date,
)
from ledgerlink.store.db import Database
from ledgerlink.store.models import (
    AuditEntry,
    Connection,
    Patient,
    PatientAccount,
    PatientImport,
    PatientImportRejection,
    Practice,
)
from tests.conftest import make_practice
from tests.factories import add_patient

GENERIC_HEADER = "patient_id,first_name,last_name,birth_date,email,phone,account_number,status"


def write_csv(tmp_path: Path, text: str, *, encoding: str = "utf-8", name: str = "patients.csv") -> Path:
    """Write `text` exactly as given (no newline translation), in `encoding`."""
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def lines(*rows: str, end: str = "\r\n") -> str:
    return end.join(rows) + end


async def patients_by_ref(
    db: Database, practice: Practice, connection: Connection | None = None
) -> dict[str, dict[str, object]]:
    """Every patient of the practice by ref, with the account number on `connection`."""
    async with db.sessions() as session:
        query = select(Patient, PatientAccount.account_number).where(Patient.practice_id == practice.id)
        if connection is not None:
            query = query.outerjoin(
                PatientAccount,
                (PatientAccount.patient_id == Patient.id) & (PatientAccount.connection_id == connection.id),
            )
        else:
            query = query.outerjoin(PatientAccount, PatientAccount.patient_id == Patient.id)
        rows = (await session.execute(query)).all()
    return {
        patient.patient_ref: {
            "first_name": patient.first_name,
            "last_name": patient.last_name,
            "birth_date": patient.birth_date,
            "email": patient.email,
            "phone": patient.phone,
            "active": patient.active,
            "account": account,
        }
        for patient, account in rows
    }


def reasons(result: PatientImportResult) -> list[tuple[int, str, str]]:
    return [(r.row, r.column, r.reason) for r in result.rejected]


# --- the core case, on both stores ---------------------------------------------------------------------


async def test_import_creates_patients_with_their_account_numbers(db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(db)
    path = write_csv(
        tmp_path,
        lines(
            GENERIC_HEADER,
            "pt_1,Ann,Müller,1980-01-02,ann@example.com,555-0101,1001,active",
            "pt_2,Bob,Smith,3/4/1975,,555-0102,1002,inactive",
            "pt_3,Zoë,Lee,,zoe@example.com,,1003,",
        ),
    )
    progress: list[int] = []

    result = await import_patients(db, practice, connection, path, progress=progress.append)

    assert (result.rows, result.created, result.updated, result.skipped, result.rejected_count) == (
        3,
        3,
        0,
        0,
        0,
    )
    assert progress == [3]
    patients = await patients_by_ref(db, practice, connection)
    assert patients["pt_1"] == {
        "first_name": "Ann",
        "last_name": "Müller",
        "birth_date": date(1980, 1, 2),
        "email": "ann@example.com",
        "phone": "555-0101",
        "active": True,
        "account": "1001",
    }
    assert patients["pt_2"]["birth_date"] == date(1975, 3, 4)
    assert patients["pt_2"]["active"] is False
    assert patients["pt_3"]["birth_date"] is None and patients["pt_3"]["active"] is True
    async with db.sessions() as session:
        record = await session.get(PatientImport, result.import_id)
        assert record is not None
        assert (record.status, record.rows_total, record.created, record.rejected) == ("done", 3, 3, 0)
        assert record.finished_at is not None and record.filename == "patients.csv"
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "patients.import"))
        assert audit is not None
        assert audit.detail == {
            "status": "done",
            "rows": 3,
            "created": 3,
            "updated": 0,
            "skipped": 0,
            "rejected": 0,
        }


async def test_importing_the_same_file_again_updates_instead_of_creating(
    db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(db)
    first = write_csv(
        tmp_path, lines(GENERIC_HEADER, "pt_1,Ann,Smith,1980-01-02,,,1001,", "pt_2,Bob,Lee,,,,1002,")
    )
    await import_patients(db, practice, connection, first)
    second = write_csv(
        tmp_path,
        lines(GENERIC_HEADER, "pt_1,Ann,Jones,1980-01-02,ann@example.com,,2001,0", "pt_2,Bob,Lee,,,,1002,"),
        name="again.csv",
    )

    result = await import_patients(db, practice, connection, second)

    assert (result.created, result.updated, result.rejected_count) == (0, 2, 0)
    patients = await patients_by_ref(db, practice, connection)
    assert len(patients) == 2
    assert patients["pt_1"]["last_name"] == "Jones" and patients["pt_1"]["email"] == "ann@example.com"
    assert patients["pt_1"]["account"] == "2001"  # the account number moves with the PMS
    assert patients["pt_1"]["active"] is False


async def test_rows_without_a_patient_id_are_matched_by_account_number(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    await add_patient(sqlite_db, practice, connection, "platform-77", account_number="5001")
    path = write_csv(tmp_path, lines("first_name,last_name,account_number", "Ann,Smith,5001", "Bob,Lee,5002"))

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.created, result.updated) == (1, 1)
    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert patients["platform-77"]["last_name"] == "Smith"  # the existing patient keeps its platform id
    assert patients["imp-5002"]["account"] == "5002"


async def test_a_large_file_goes_in_chunks_and_every_account_lands_on_its_patient(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2_000)
    practice, connection = await make_practice(db)
    rows = [f"pt_{n},Name{n},Family{n % 7},{3000 + n}" for n in range(2_345)]
    path = write_csv(tmp_path, lines("patient_id,first_name,last_name,account_number", *rows))
    progress: list[int] = []

    result = await import_patients(db, practice, connection, path, progress=progress.append)

    assert (result.created, result.rejected_count, progress) == (2_345, 0, [2_000, 2_345])
    patients = await patients_by_ref(db, practice, connection)
    assert all(patients[f"pt_{n}"]["account"] == str(3000 + n) for n in range(2_345))
    assert all(patients[f"pt_{n}"]["first_name"] == f"Name{n}" for n in range(2_345))


async def test_without_a_connection_patients_are_imported_without_account_numbers(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("first_name,last_name,account_number", "Ann,Smith,5001"))

    first = await import_patients(sqlite_db, practice, None, path)
    again = await import_patients(sqlite_db, practice, None, path)

    assert (first.created, again.created, again.updated) == (1, 0, 1)
    assert await patients_by_ref(sqlite_db, practice) == {
        "imp-5001": {
            "first_name": "Ann",
            "last_name": "Smith",
            "birth_date": None,
            "email": "",
            "phone": "",
            "active": True,
            "account": None,
        }
    }


# --- what Excel does to a CSV (seed 003) ---------------------------------------------------------------


async def test_excel_utf8_with_bom_semicolons_and_crlf(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    text = "\ufeff" + lines("Patient ID;First Name;Last Name;Account Number", "pt_1;Zoë;Müller;1001")
    path = write_csv(tmp_path, text)

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.created, result.rejected_count) == (1, 0)
    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert patients["pt_1"]["first_name"] == "Zoë" and patients["pt_1"]["last_name"] == "Müller"


async def test_windows_1252_file_from_excel(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path,
        lines("patient_id,first_name,last_name", "pt_1,Zoë,Müller", "pt_2,José,Nuñez"),
        encoding="cp1252",
    )
    assert detect_encoding(path) == "cp1252"

    await import_patients(sqlite_db, practice, connection, path)

    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert (patients["pt_1"]["first_name"], patients["pt_1"]["last_name"]) == ("Zoë", "Müller")
    assert patients["pt_2"]["last_name"] == "Nuñez"


async def test_tab_delimited_unicode_text(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path, lines("patient_id\tfirst_name\tlast_name\taccount_number", "pt_1\tAnn\tO'Brien, Jr.\t7")
    )

    await import_patients(sqlite_db, practice, connection, path)

    assert (await patients_by_ref(sqlite_db, practice, connection))["pt_1"]["last_name"] == "O'Brien, Jr."


async def test_excel_unicode_text_is_utf16_with_tabs(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path, lines("patient_id\tfirst_name\tlast_name", "pt_1\tZoë\tMüller"), encoding="utf-16"
    )

    await import_patients(sqlite_db, practice, connection, path)

    assert (await patients_by_ref(sqlite_db, practice, connection))["pt_1"]["first_name"] == "Zoë"


async def test_quoted_values_with_delimiters_quotes_and_line_breaks(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    text = lines(
        "patient_id,first_name,last_name,notes,birth_date",
        'pt_1,"Ann, Marie","Smith ""Smitty""","line one\r\nline two, with comma",1980-01-02',
        'pt_2,Bob,"Van\nDyke",,1981-02-03',
        "pt_3,Cy,Lee,,31/12/1990",
    )
    path = write_csv(tmp_path, text)

    result = await import_patients(sqlite_db, practice, connection, path)

    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert patients["pt_1"]["first_name"] == "Ann, Marie"
    assert patients["pt_1"]["last_name"] == 'Smith "Smitty"'
    assert patients["pt_2"]["last_name"] == "Van Dyke"  # a line break inside a name becomes a space
    # Records spanning several lines are still one spreadsheet row each: pt_3 is row 4.
    assert reasons(result) == [
        (4, "birth_date", "unreadable date '31/12/1990': use YYYY-MM-DD, MM/DD/YYYY or M/D/YYYY")
    ]


async def test_excel_sep_line_blank_rows_and_a_header_without_separators(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path,
        lines("sep=;", "first_name;last_name;account_number", "Ann;Smith;1", ";;", "Bob;Lee;2", ";;"),
    )

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.rows, result.created) == (2, 2)


async def test_excel_text_formula_keeps_leading_zeros(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("first_name,last_name,account_number", 'Ann,Smith,"=""00123"""'))

    await import_patients(sqlite_db, practice, connection, path)

    assert (await patients_by_ref(sqlite_db, practice, connection))["imp-00123"]["account"] == "00123"


async def test_header_names_ignore_case_spaces_underscores_and_hyphens(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path,
        lines("PATIENT ID,FirstName,last name,E-mail,Date_Of_Birth", "pt_1,Ann,Smith,a@b.c,1/2/1990"),
    )

    await import_patients(sqlite_db, practice, connection, path)

    patient = (await patients_by_ref(sqlite_db, practice, connection))["pt_1"]
    assert (patient["email"], patient["birth_date"]) == ("a@b.c", date(1990, 1, 2))


def test_delimiter_is_sniffed_outside_quotes() -> None:
    assert sniff_delimiter('a;"b,c,d";e\r\n') == ";"
    assert sniff_delimiter("a\tb\tc\n") == "\t"
    assert sniff_delimiter("a,b;c,d\n") == ","
    assert sniff_delimiter("single\n") == ","


def test_encoding_is_decided_from_the_whole_file_in_chunks(tmp_path: Path) -> None:
    # The only non-ASCII byte sits far beyond the first chunk.
    late = tmp_path / "late.csv"
    late.write_bytes(b"a,b\r\n" + b"x,y\r\n" * 50_000 + "Zoë,Müller\r\n".encode("cp1252"))
    assert detect_encoding(late) == "cp1252"
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(b"a,b\r\n" + b"x,y\r\n" * 50_000 + "Zoë,Müller\r\n".encode())
    assert detect_encoding(utf8) == "utf-8"
    with open_csv(utf8) as csv_file:
        assert (csv_file.encoding, csv_file.delimiter, csv_file.header) == ("utf-8", ",", ["a", "b"])
        *_, (number, values) = csv_file.rows()
        assert (number, values) == (50_002, ["Zoë", "Müller"])


# --- presets -------------------------------------------------------------------------------------------

OPEN_DENTAL_HEADER = "PatNum,LName,FName,Birthdate,Email,HmPhone,WirelessPhone,ChartNumber,PatStatus"


def open_dental_export() -> str:
    return lines(
        OPEN_DENTAL_HEADER,
        "11,Smith,Ann,1980-01-02,ann@example.com,555-0100,555-0199,A100,Patient",
        "12,Lee,Bob,0001-01-01,,555-0200,,A200,0",
        "13,Gone,Old,1950-05-06,,,,A300,Deleted",
        "14,Past,Pat,1960-01-01,,,,A400,Inactive",
        "15,Box,Arc,1961-01-01,,,,A500,3",
        "16,Late,Dee,1930-01-01,,,,A600,Deceased",
        "17,New,Pro,1999-09-09,,,,A700,Prospective",
        "18,Gone,Too,1950-05-06,,,,,4",
    )


async def test_open_dental_export_keys_patients_by_patnum(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, open_dental_export())

    result = await import_patients(sqlite_db, practice, connection, path, preset="opendental")

    assert (result.rows, result.created, result.skipped, result.rejected_count) == (
        8,
        6,
        2,
        0,
    )  # Deleted: skipped
    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert set(patients) == {"od-11", "od-12", "od-14", "od-15", "od-16", "od-17"}
    assert patients["od-11"] == {
        "first_name": "Ann",
        "last_name": "Smith",
        "birth_date": date(1980, 1, 2),
        "email": "ann@example.com",
        "phone": "555-0199",  # the mobile phone before the home phone
        "active": True,
        "account": "11",
    }
    assert patients["od-12"]["birth_date"] is None  # Open Dental's "no date"
    assert patients["od-12"]["phone"] == "555-0200"
    assert {ref: p["active"] for ref, p in patients.items()} == {
        "od-11": True,
        "od-12": True,  # 0 is Patient
        "od-14": False,
        "od-15": False,  # Archived
        "od-16": False,  # Deceased
        "od-17": True,  # Prospective
    }


async def test_open_dental_chart_numbers_as_account_numbers(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, open_dental_export())

    result = await import_patients(
        sqlite_db, practice, connection, path, preset="opendental", account_number_source="chartnumber"
    )

    assert result.created == 6
    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert (patients["od-11"]["account"], patients["od-17"]["account"]) == ("A100", "A700")

    # Switching back to PatNum updates the same patients (found by their od- ref).
    again = await import_patients(sqlite_db, practice, connection, path, preset="opendental")
    assert (again.created, again.updated) == (0, 6)
    assert (await patients_by_ref(sqlite_db, practice, connection))["od-11"]["account"] == "11"


async def test_open_dental_skip_inactive_leaves_out_inactive_archived_and_deceased(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, open_dental_export())

    result = await import_patients(
        sqlite_db, practice, connection, path, preset="opendental", skip_inactive=True
    )

    assert (result.created, result.skipped) == (3, 5)
    assert set(await patients_by_ref(sqlite_db, practice, connection)) == {"od-11", "od-12", "od-17"}


async def test_generic_skip_inactive_counts_inactive_rows_as_skipped(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path,
        lines(
            "patient_id,last_name,active",
            "pt_1,Smith,yes",
            "pt_2,Lee,no",
            "pt_3,Roe,0",
            "pt_4,Doe,TRUE",
            "pt_5,Poe,Inactive",
        ),
    )

    result = await import_patients(sqlite_db, practice, connection, path, skip_inactive=True)

    assert (result.rows, result.created, result.skipped) == (5, 2, 3)
    assert set(await patients_by_ref(sqlite_db, practice, connection)) == {"pt_1", "pt_4"}


async def test_column_map_overrides_the_preset(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("Surname,Given,Acct #,Chart", "Smith,Ann,77,C1"))

    result = await import_patients(
        sqlite_db,
        practice,
        connection,
        path,
        column_map={"Surname": "last_name", "Given": "first_name", "Acct #": "account_number"},
    )

    assert result.created == 1
    patient = (await patients_by_ref(sqlite_db, practice, connection))["imp-77"]
    assert (patient["first_name"], patient["last_name"], patient["account"]) == ("Ann", "Smith", "77")


def test_presets_offer_generic_and_open_dental() -> None:
    assert {"generic", "opendental"} <= set(PRESETS)


# --- capacity ------------------------------------------------------------------------------------------


async def test_capacity_rejects_new_patients_but_still_updates(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db, capacity=3)
    await add_patient(sqlite_db, practice, connection, "pt_0", account_number="1000")
    path = write_csv(
        tmp_path,
        lines(
            "patient_id,last_name,account_number",
            "pt_1,One,1001",
            "pt_2,Two,1002",
            "pt_3,Three,1003",
            "pt_0,Zero,1000",
            "pt_4,Four,1004",
        ),
    )

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.created, result.updated, result.rejected_count) == (2, 1, 2)
    assert reasons(result) == [
        (4, "", "patient capacity of 3 reached"),
        (6, "", "patient capacity of 3 reached"),
    ]
    patients = await patients_by_ref(sqlite_db, practice, connection)
    assert set(patients) == {"pt_0", "pt_1", "pt_2"} and patients["pt_0"]["last_name"] == "Zero"


async def test_a_practice_already_over_its_capacity_gets_no_new_patients(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db, capacity=1)
    await add_patient(sqlite_db, practice, connection, "pt_0")
    await add_patient(sqlite_db, practice, connection, "pt_00")  # added before the capacity was lowered
    path = write_csv(tmp_path, lines("patient_id,last_name", "pt_1,One"))

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.created, reasons(result)) == (0, [(2, "", "patient capacity of 1 reached")])


# --- rejections ----------------------------------------------------------------------------------------


async def test_each_rejected_row_names_its_row_column_and_reason(db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(db)
    await add_patient(db, practice, connection, "someone-else", account_number="9999")
    long_name = "x" * 101
    path = write_csv(
        tmp_path,
        lines(
            GENERIC_HEADER,
            "pt_1,Ann,Smith,1980-02-30,,,1001,",  # 2: no 30 February
            "pt_2,,,1980-01-01,,,1002,",  # 3: no name
            ",Cy,Lee,,,,,",  # 4: no key
            "pt_4,Dee,Doe,,,,1004,",  # 5: fine
            "pt_4,Dee,Again,,,,1005,",  # 6: patient id repeated
            "pt_6,Eve,Roe,,,,1004,",  # 7: account number repeated
            "pt_7,Fay,Poe,,,,9999,",  # 8: account number of another patient
            "pt_8,Gus,Moe,,,,1008,maybe",  # 9: unknown status
            "pt_9,Hal,Noe,,,,1009,,extra",  # 10: a value beyond the header
            f"pt_10,{long_name},Koe,,,,1010,",  # 11: too long
            "pt_11,Ida,Loe,,,,1.23457E+11,",  # 12: Excel's scientific notation
            "pt_12,Jo,Zoe,12/31/1999,,,1012,,",  # 13: fine (a trailing empty cell is no extra value)
        ),
    )

    result = await import_patients(db, practice, connection, path)

    assert reasons(result) == [
        (2, "birth_date", "unreadable date '1980-02-30': use YYYY-MM-DD, MM/DD/YYYY or M/D/YYYY"),
        (3, "last_name", "the patient has no name: a first or last name is needed"),
        (4, "account_number", "a patient id or an account number is needed"),
        (6, "patient_id", "patient id 'pt_4' is on an earlier row"),
        (7, "account_number", "account number '1004' is on an earlier row"),
        (8, "account_number", "account number '9999' already belongs to another patient (someone-else)"),
        (9, "status", "unknown status 'maybe': use active/inactive, 1/0, yes/no or true/false"),
        (
            10,
            "",
            "the row has 9 values but the header has 8 columns (a value containing the delimiter must be in quotes)",
        ),
        (11, "first_name", "longer than 100 characters"),
        (
            12,
            "account_number",
            "'1.23457E+11' is a number Excel turned into scientific notation; format the column as Text in Excel "
            "and export again",
        ),
    ]
    assert (result.rows, result.created, result.rejected_count) == (12, 2, 10)
    async with db.sessions() as session:
        stored = (
            await session.execute(
                select(
                    PatientImportRejection.row_number,
                    PatientImportRejection.column,
                    PatientImportRejection.reason,
                )
                .where(PatientImportRejection.import_id == result.import_id)
                .order_by(PatientImportRejection.row_number)
            )
        ).all()
        record = await session.get(PatientImport, result.import_id)
    assert [tuple(row) for row in stored] == reasons(result)
    assert record is not None and record.rejected == 10


async def test_rejections_name_the_files_own_headers(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines(OPEN_DENTAL_HEADER, "21,,,,,,,,0", "22,Lee,Bob,13/13/2000,,,,,Patient"))

    result = await import_patients(sqlite_db, practice, connection, path, preset="opendental")

    assert [(r.row, r.column) for r in result.rejected] == [(2, "LName"), (3, "Birthdate")]


async def test_repeated_keys_are_found_across_chunks(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 2)
    practice, connection = await make_practice(db)
    path = write_csv(
        tmp_path,
        lines(
            "patient_id,last_name,account_number",
            "pt_1,One,1",
            "pt_2,Two,2",
            "pt_3,Three,3",
            "pt_1,Again,9",  # chunk 2: pt_1 was written by chunk 1
            "pt_5,Five,2",  # chunk 3: account 2 was written by chunk 1
        ),
    )
    progress: list[int] = []

    result = await import_patients(db, practice, connection, path, progress=progress.append)

    assert progress == [2, 4, 5]
    assert reasons(result) == [
        (5, "patient_id", "patient id 'pt_1' is on an earlier row"),
        (6, "account_number", "account number '2' is on an earlier row"),
    ]
    # Re-running the file (say after an interruption) updates what the first run created.
    again = await import_patients(db, practice, connection, path)
    assert (again.created, again.updated, again.rejected_count) == (0, 3, 2)


async def test_only_the_first_rejections_are_kept_in_memory_but_all_are_stored(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "KEPT_REJECTIONS", 3)
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("patient_id,last_name", *(f"pt_{n}," for n in range(10))))

    result = await import_patients(sqlite_db, practice, connection, path)

    assert (result.rejected_count, [r.row for r in result.rejected]) == (10, [2, 3, 4])
    async with sqlite_db.sessions() as session:
        stored = await session.scalars(
            select(PatientImportRejection.row_number).where(
                PatientImportRejection.import_id == result.import_id
            )
        )
        assert sorted(stored) == list(range(2, 12))


# --- files that cannot be imported ---------------------------------------------------------------------


async def test_missing_required_column_names_it_and_the_columns_found(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("patient_id,email,Phone", "pt_1,a@b.c,555"))

    with pytest.raises(PatientFileError) as raised:
        await import_patients(sqlite_db, practice, connection, path)

    message = raised.value.message
    assert "no name column" in message and "last_name" in message
    assert message.endswith("columns found: patient_id, email, Phone")
    async with sqlite_db.sessions() as session:
        record = await session.scalar(select(PatientImport))
    assert record is not None and record.status == "failed" and record.error == message


async def test_open_dental_export_without_its_account_number_column_is_refused(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("PatNum,LName,FName", "11,Smith,Ann"))

    with pytest.raises(
        PatientFileError, match=r"no account number \(chartnumber\) column \(expected ChartNumber\)"
    ):
        await import_patients(
            sqlite_db, practice, connection, path, preset="opendental", account_number_source="chartnumber"
        )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"PK\x03\x04rest-of-a-zip", "is an Excel workbook, not a CSV file"),
        (b"a,b\x00,c\r\n", "contains NUL bytes"),
    ],
)
async def test_files_that_are_not_csv_text_are_refused(
    sqlite_db: Database, tmp_path: Path, content: bytes, message: str
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = tmp_path / "patients.csv"
    path.write_bytes(content)

    with pytest.raises(PatientFileError, match=message):
        await import_patients(sqlite_db, practice, connection, path)


async def test_text_that_is_neither_utf8_nor_windows_1252_is_refused(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = tmp_path / "patients.csv"
    path.write_bytes(b"patient_id,last_name\r\npt_1,Smith\r\npt_2,Bad\x81Byte\r\n")

    with pytest.raises(PatientFileError, match="neither UTF-8 nor Windows-1252"):
        await import_patients(sqlite_db, practice, connection, path)


async def test_an_import_that_fails_midway_keeps_what_it_committed(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK_ROWS", 500)
    practice, connection = await make_practice(sqlite_db)
    path = tmp_path / "patients.csv"
    good = "".join(f"pt_{n},Smith\r\n" for n in range(1_000)).encode()
    path.write_bytes(b"patient_id,last_name\r\n" + good + b"pt_x,Bad\x81Byte\r\n")

    with pytest.raises(PatientFileError, match=r"the text after row \d+ is neither UTF-8 nor Windows-1252"):
        await import_patients(sqlite_db, practice, connection, path)

    async with sqlite_db.sessions() as session:
        record = await session.scalar(select(PatientImport))
        audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "patients.import"))
    assert record is not None and record.status == "failed" and record.finished_at is not None
    assert record.created > 0 and record.created == len(
        await patients_by_ref(sqlite_db, practice, connection)
    )
    assert audit is not None and audit.detail["status"] == "failed"


async def test_a_missing_file_is_a_file_error(sqlite_db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(sqlite_db)

    with pytest.raises(PatientFileError, match=r"cannot read nowhere\.csv"):
        await import_patients(sqlite_db, practice, connection, tmp_path / "nowhere.csv")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"preset": "dentrix"}, "preset"),
        ({"account_number_source": "ssn"}, "account_number_source"),
        ({"account_number_source": "chartnumber"}, "account_number_source"),  # generic has no chart numbers
        ({"column_map": {"Surname": "surname"}}, "column_map"),
    ],
)
async def test_bad_arguments_are_refused_before_reading(
    sqlite_db: Database, tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    practice, connection = await make_practice(sqlite_db)
    path = write_csv(tmp_path, lines("patient_id,last_name", "pt_1,Smith"))

    with pytest.raises(InvalidInput) as raised:
        await import_patients(sqlite_db, practice, connection, path, **kwargs)
    assert raised.value.field == field


async def test_a_connection_of_another_practice_is_refused(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)
    _, foreign = await make_practice(sqlite_db, slug="other")
    path = write_csv(tmp_path, lines("patient_id,last_name", "pt_1,Smith"))

    with pytest.raises(InvalidInput, match="another practice"):
        await import_patients(sqlite_db, practice, foreign, path)


def test_many_row_inserts_are_what_sqlalchemy_compiles() -> None:
    # The import repeats a one-row VALUES group instead of compiling thousands of rows: the same SQL.
    from sqlalchemy.dialects.sqlite import aiosqlite

    dialect = aiosqlite.dialect()
    statements = importer._Statements(dialect, frozenset())
    for batched in (statements.insert_patients, statements.insert_rejections):
        sql, _, order = batched._for_size(20)
        assert sql == batched.build(20).compile(dialect=dialect).string
        assert order is importer._unchanged


# --- dates ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1980-01-02", date(1980, 1, 2)),
        ("01/02/1980", date(1980, 1, 2)),
        ("1/2/1980", date(1980, 1, 2)),
        ("12/31/1999 0:00", date(1999, 12, 31)),
        ("1980-01-02 00:00:00", date(1980, 1, 2)),
        ("0001-01-01", None),
        ("0000-00-00", None),
    ],
)
def test_birth_dates_excel_and_pms_write(text: str, expected: date | None) -> None:
    assert parse_birth_date(text) == expected


@pytest.mark.parametrize(
    "text", ["31/12/1999", "1/2/80", "1980-1-2", "2/30/1980", "yesterday", "1980-01-02 noon"]
)
def test_birth_dates_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_birth_date(text)


def test_rejected_row_is_a_plain_value() -> None:
    assert RejectedRow(2, "birth_date", "bad") == RejectedRow(row=2, column="birth_date", reason="bad")
