"""Importing a processor's transaction export: what goes in, what is refused, and that bad files change nothing."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledgerlink.sources import transaction_import
from ledgerlink.sources.transaction_import import (
    ImportFileError,
    RowError,
    TransactionImportResult,
    import_transactions,
)
from ledgerlink.sources.transaction_rows import CARD_NUMBER_REASON, looks_like_card_number
from ledgerlink.store.db import Database
from ledgerlink.store.models import Patient, Practice, Transaction
from tests.conftest import make_practice

HEADER = "reference,time,kind,payment_type,gross,fee,net,currency,patient_id,first_name,last_name,original_reference"
SALE = "ch_1,2026-01-31T14:30:00Z,sale,terminal,100.00,3.20,96.80,usd,pat-1,Ana,Lima,"
SALE_2 = "ch_2,2026-01-31T15:00:00Z,sale,payment_plan,50.00,1.00,,USD,pat-2,,,"


def write_csv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def write_jsonl(tmp_path: Path, *rows: dict[str, object], name: str = "export.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


async def transactions(db: Database, practice: Practice) -> list[Transaction]:
    async with db.sessions() as session:
        query = select(Transaction).where(Transaction.practice_id == practice.id).order_by(Transaction.id)
        return list(await session.scalars(query))


async def by_reference(db: Database, practice: Practice) -> dict[str, Transaction]:
    return {txn.processor_ref: txn for txn in await transactions(db, practice)}


async def patients(db: Database, practice: Practice) -> dict[str, Patient]:
    async with db.sessions() as session:
        found = await session.scalars(select(Patient).where(Patient.practice_id == practice.id))
        return {patient.patient_ref: patient for patient in found}


async def assert_nothing_written(db: Database) -> None:
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Transaction)) == 0
        assert await session.scalar(select(func.count()).select_from(Patient)) == 0


def only_error(result: TransactionImportResult) -> RowError:
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# --- what goes in ---------------------------------------------------------------------------------------


async def test_csv_export_is_imported_in_cents_with_patients_and_originals(
    db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(
        tmp_path,
        SALE,
        SALE_2,
        "re_1,2026-02-01T10:00:00Z,refund,terminal,40.00,0,40.00,USD,pat-1,,,ch_1",
        "dc_1,2026-02-01 09:15,decline,online,12.34,,,,,,,",
    )

    result = await import_transactions(db, practice, path)

    assert result == TransactionImportResult(rows=4, imported=4, already_imported=0, errors=[], applied=True)
    stored = await by_reference(db, practice)
    sale, plan, refund, decline = stored["ch_1"], stored["ch_2"], stored["re_1"], stored["dc_1"]
    assert (sale.kind, sale.payment_type, sale.currency) == ("sale", "terminal", "USD")
    assert (sale.gross_cents, sale.fee_cents, sale.net_cents) == (10000, 320, 9680)
    assert sale.occurred_at == datetime(2026, 1, 31, 14, 30, tzinfo=UTC)
    assert sale.local_date == date(2026, 1, 31)
    assert sale.source == "csv"
    assert (plan.payment_type, plan.net_cents) == ("payment_plan", 4900)  # net computed from gross - fee
    assert refund.original_id == sale.id and refund.original_ref == "ch_1"
    assert decline.patient_id is None and decline.fee_cents == 0
    assert decline.occurred_at == datetime(2026, 2, 1, 15, 15, tzinfo=UTC)  # 09:15 in Chicago
    known = await patients(db, practice)
    assert set(known) == {"pat-1", "pat-2"}
    assert (known["pat-1"].first_name, known["pat-1"].last_name, known["pat-1"].active) == (
        "Ana",
        "Lima",
        True,
    )
    assert sale.patient_id == refund.patient_id == known["pat-1"].id
    assert plan.patient_id == known["pat-2"].id


async def test_jsonl_export_is_imported_with_numbers_read_as_decimals(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_jsonl(
        tmp_path,
        {
            "Reference": "ch_1",
            "time": "2026-01-31T14:30:00-06:00",
            "kind": "ACCEPTED",
            "payment_type": "Payment Plan",
            "gross": 19.99,
            "fee": 0.59,
            "patient_id": "pat-1",
            "card_brand": "Visa",
            "card_last4": "4242",
            "description": None,
        },
        {
            "reference": "ch_2",
            "time": "2026-01-31T15:00:00Z",
            "kind": "Declined",
            "payment_type": "Payment-Plan",
            "gross": "5",
        },
        {
            "reference": "vd_1",
            "time": "2026-01-31T16:00:00Z",
            "kind": "voided",
            "payment_type": "payment_plan",
            "gross": 19.99,
            "patient_id": "pat-1",
            "original_reference": "ch_1",
        },
    )

    result = await import_transactions(db, practice, path, source="export")

    assert (result.rows, result.imported, result.errors, result.applied) == (3, 3, [], True)
    stored = await by_reference(db, practice)
    sale = stored["ch_1"]
    assert (sale.kind, sale.payment_type) == ("sale", "payment_plan")
    assert (sale.gross_cents, sale.fee_cents, sale.net_cents) == (1999, 59, 1940)
    assert (sale.card_brand, sale.card_last4, sale.description, sale.source) == ("Visa", "4242", "", "export")
    assert sale.occurred_at == datetime(2026, 1, 31, 20, 30, tzinfo=UTC)
    assert stored["ch_2"].kind == "decline" and stored["ch_2"].gross_cents == 500
    assert stored["vd_1"].kind == "void" and stored["vd_1"].original_id == sale.id


async def test_naive_time_is_practice_local_time_and_sets_the_local_date(
    db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(db, timezone="America/Chicago")
    path = write_csv(
        tmp_path,
        "late,2026-01-31T23:30:00,sale,terminal,10.00,,,,pat-1,,,",
        "utc,2026-02-01T03:00:00Z,sale,terminal,10.00,,,,pat-1,,,",
    )

    await import_transactions(db, practice, path)

    stored = await by_reference(db, practice)
    assert stored["late"].occurred_at == datetime(
        2026, 2, 1, 5, 30, tzinfo=UTC
    )  # UTC is already the next day
    assert stored["late"].local_date == date(2026, 1, 31)
    assert stored["utc"].local_date == date(2026, 1, 31)  # 21:00 the evening before in Chicago


async def test_reimporting_the_same_file_counts_already_imported_and_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(db)
    first = await import_transactions(db, practice, write_csv(tmp_path, SALE, SALE_2))
    before = {ref: txn.gross_cents for ref, txn in (await by_reference(db, practice)).items()}
    changed = write_csv(
        tmp_path, SALE.replace("100.00,3.20,96.80", "999.00,0,999.00"), SALE_2, name="again.csv"
    )

    again = await import_transactions(db, practice, changed)

    assert (first.imported, first.already_imported) == (2, 0)
    assert again == TransactionImportResult(rows=2, imported=0, already_imported=2, errors=[], applied=True)
    assert {ref: txn.gross_cents for ref, txn in (await by_reference(db, practice)).items()} == before
    assert len(await patients(db, practice)) == 2


async def test_the_same_reference_in_another_practice_is_a_different_transaction(
    db: Database, tmp_path: Path
) -> None:
    smile, _ = await make_practice(db)
    other, _ = await make_practice(db, slug="other")
    await import_transactions(db, smile, write_csv(tmp_path, SALE))

    result = await import_transactions(
        db, other, write_csv(tmp_path, SALE, "re_1,2026-02-01T10:00:00Z,refund,terminal,1,,,,pat-1,,,ch_9")
    )

    assert (result.imported, result.already_imported) == (2, 0)
    refund = (await by_reference(db, other))["re_1"]
    assert refund.original_id is None  # smile's ch_1 does not exist for the other practice


async def test_existing_patient_is_reused_and_a_new_one_becomes_a_stub(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    async with db.sessions.begin() as session:
        session.add(
            Patient(practice_id=practice.id, patient_ref="pat-1", first_name="Known", last_name="Person")
        )

    await import_transactions(db, practice, write_csv(tmp_path, SALE, SALE_2))

    known = await patients(db, practice)
    assert set(known) == {"pat-1", "pat-2"}
    assert known["pat-1"].first_name == "Known"  # names in the file do not overwrite a patient
    assert (known["pat-2"].first_name, known["pat-2"].last_name, known["pat-2"].active) == ("", "", True)


# --- originals ------------------------------------------------------------------------------------------


async def test_refund_listed_before_its_sale_is_linked_to_it(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(tmp_path, "re_1,2026-02-01T10:00:00Z,REFUNDED,terminal,40.00,,,,pat-1,,,ch_1", SALE)

    result = await import_transactions(db, practice, path)

    assert result.imported == 2 and result.errors == []
    stored = await by_reference(db, practice)
    assert stored["re_1"].original_id == stored["ch_1"].id


async def test_refund_of_a_sale_imported_earlier_is_linked_to_it(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    await import_transactions(db, practice, write_csv(tmp_path, SALE, name="monday.csv"))

    await import_transactions(
        db,
        practice,
        write_csv(
            tmp_path, "cb_1,2026-02-03T10:00:00Z,chargeback,terminal,100,,,,pat-1,,,ch_1", name="tue.csv"
        ),
    )

    stored = await by_reference(db, practice)
    assert stored["cb_1"].original_id == stored["ch_1"].id


async def test_refund_of_an_unknown_sale_is_imported_without_original(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(tmp_path, "re_1,2026-02-01T10:00:00Z,refund,terminal,40.00,,,,pat-1,,,ch_unknown")

    result = await import_transactions(db, practice, path)

    assert result.imported == 1 and result.errors == []
    refund = (await by_reference(db, practice))["re_1"]
    assert refund.original_id is None and refund.original_ref == "ch_unknown"


async def test_refund_of_a_refund_is_refused(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(
        tmp_path,
        SALE,
        "re_1,2026-02-01T10:00:00Z,refund,terminal,10.00,,,,pat-1,,,ch_1",
        "re_2,2026-02-01T11:00:00Z,refund,terminal,10.00,,,,pat-1,,,re_1",
    )

    result = await import_transactions(db, practice, path)

    error = only_error(result)
    assert (error.row, error.column) == (4, "original_reference")
    assert "is a refund, not a sale" in error.reason
    assert not result.applied
    await assert_nothing_written(db)


async def test_void_of_a_decline_later_in_the_file_is_refused(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(
        tmp_path,
        "vd_1,2026-02-01T10:00:00Z,void,terminal,10.00,,,,pat-1,,,dc_1",
        "dc_1,2026-02-01T09:00:00Z,decline,terminal,10.00,,,,,,,",
    )

    result = await import_transactions(db, practice, path)

    error = only_error(result)
    assert (error.row, error.column) == (2, "original_reference")
    assert "is a decline, not a sale" in error.reason
    await assert_nothing_written(db)


# --- what is refused ------------------------------------------------------------------------------------


BAD_ROWS = [
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,12.345,,,,pat-1,,,",
        "gross",
        "more than two decimal places",
        id="three-decimals",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,-5.00,,,,pat-1,,,", "gross", "negative", id="negative-gross"
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,,,,,pat-1,,,", "gross", "has no value", id="missing-gross"
    ),
    pytest.param(
        'ch_9,2026-01-31T10:00:00Z,sale,terminal,"12,50",,,,pat-1,,,',
        "gross",
        "not a thousands separator",
        id="decimal-comma",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,bogus,terminal,12.00,,,,pat-1,,,",
        "kind",
        "'bogus' is not a transaction kind: sale, refund, void, chargeback, decline",
        id="unknown-kind",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,kiosk,12.00,,,,pat-1,,,",
        "payment_type",
        "'kiosk' is not a payment type",
        id="unknown-payment-type",
    ),
    pytest.param(
        "ch_9,31/01/2026 10:00,sale,terminal,12.00,,,,pat-1,,,",
        "time",
        "'31/01/2026 10:00' is not a time; expected an ISO 8601 time",
        id="bad-time",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,2.00,3.00,,,pat-1,,,",
        "fee",
        "3.00 is more than the gross amount 2.00",
        id="fee-above-gross",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,10.00,0.30,9.50,,pat-1,,,",
        "net",
        "9.50 is not the gross 10.00 minus the fee 0.30, which is 9.70",
        id="net-mismatch",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,10.00,,,dollars,pat-1,,,",
        "currency",
        "expected a three-letter currency code",
        id="bad-currency",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,10.00,,,,,,,",
        "patient_id",
        "expected the payment platform's patient id, which a sale needs",
        id="sale-without-patient",
    ),
    pytest.param(
        "re_9,2026-01-31T10:00:00Z,refund,terminal,10.00,,,,pat-1,,,",
        "original_reference",
        "expected the reference of the sale this refund reverses",
        id="refund-without-original",
    ),
    pytest.param(
        "ch_9,2026-01-31T10:00:00Z,sale,terminal,10.00,,,,pat-1,,,ch_1",
        "original_reference",
        "must be empty for a sale",
        id="sale-with-original",
    ),
    pytest.param(
        "ch_1,2026-01-31T10:00:00Z,sale,terminal,10.00,,,,pat-1,,,",
        "reference",
        "'ch_1' is already used by row 2",
        id="duplicate-reference",
    ),
    pytest.param(
        ",2026-01-31T10:00:00Z,sale,terminal,10.00,,,,pat-1,,,",
        "reference",
        "has no value; expected the processor's transaction id",
        id="missing-reference",
    ),
]


@pytest.mark.parametrize(("row", "column", "reason"), BAD_ROWS)
async def test_a_bad_row_is_reported_by_row_and_column_and_nothing_is_imported(
    db: Database, tmp_path: Path, row: str, column: str, reason: str
) -> None:
    practice, _ = await make_practice(db)

    result = await import_transactions(db, practice, write_csv(tmp_path, SALE, row, SALE_2))

    error = only_error(result)
    assert (error.row, error.column) == (3, column)
    assert reason in error.reason
    assert (result.rows, result.imported, result.applied) == (3, 0, False)
    await assert_nothing_written(db)


async def test_card_number_in_any_field_rejects_the_row_without_echoing_it(
    db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(
        tmp_path,
        SALE + ",paid with 4111 1111 1111 1111 exp 12/27",
        "4242-4242-4242-4242,2026-01-31T10:00:00Z,sale,terminal,10.00,,,,pat-1,,,,",
        header=HEADER + ",description",
    )

    result = await import_transactions(db, practice, path)

    assert [(e.row, e.column, e.reason) for e in result.errors] == [
        (2, "description", CARD_NUMBER_REASON),
        (3, "reference", CARD_NUMBER_REASON),
    ]
    assert "4111" not in repr(result) and "4242" not in repr(result)
    await assert_nothing_written(db)


def test_only_luhn_valid_runs_of_13_to_19_digits_look_like_card_numbers() -> None:
    assert looks_like_card_number("4111111111111111")
    assert looks_like_card_number("card 3782-822463-10005 on file")  # Amex, 15 digits
    assert looks_like_card_number("4111 1111 1111 1111 12 27")
    assert not looks_like_card_number("4111111111111112")  # fails the Luhn check
    assert not looks_like_card_number("order 411111111111")  # 12 digits
    assert not looks_like_card_number("41111111111111111111111")  # 23 digits: an id, not a card
    assert not looks_like_card_number("2026-01-31T10:00:00Z")


async def test_card_last4_must_be_four_digits_and_is_not_echoed(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    header = HEADER + ",card_last4"
    path = write_csv(
        tmp_path, SALE + ",****4242", SALE_2.replace("ch_2", "ch_3") + ",411111******1111", header=header
    )

    result = await import_transactions(db, practice, path, import_valid_rows=True)

    error = only_error(result)
    assert (error.row, error.column) == (3, "card_last4")
    assert "411111" not in error.reason
    assert (await by_reference(db, practice))["ch_1"].card_last4 == "4242"


async def test_import_valid_rows_imports_the_good_rows_and_still_reports_the_bad(
    db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(tmp_path, SALE, "ch_bad,2026-01-31T10:00:00Z,sale,terminal,1.234,,,,pat-9,,,", SALE_2)

    result = await import_transactions(db, practice, path, import_valid_rows=True)

    assert (result.rows, result.imported, result.applied) == (3, 2, True)
    assert [(e.row, e.column) for e in result.errors] == [(3, "gross")]
    assert set(await by_reference(db, practice)) == {"ch_1", "ch_2"}
    assert set(await patients(db, practice)) == {"pat-1", "pat-2"}  # no stub for the bad row's patient


async def test_errors_after_rows_were_written_roll_the_whole_file_back(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transaction_import, "CHUNK_ROWS", 2)
    practice, _ = await make_practice(db)
    path = write_csv(tmp_path, SALE, SALE_2, "ch_3,2026-01-31T10:00:00Z,sale,terminal,oops,,,,pat-3,,,")

    result = await import_transactions(db, practice, path)

    assert [(e.row, e.column) for e in result.errors] == [(4, "gross")]
    assert (result.imported, result.applied) == (0, False)
    await assert_nothing_written(db)


async def test_every_error_of_a_row_is_reported(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)
    path = write_csv(tmp_path, "ch_1,yesterday,sold,terminal,ten,,,,,,,")

    result = await import_transactions(sqlite_db, practice, path)

    assert [(e.row, e.column) for e in result.errors] == [(2, "time"), (2, "kind"), (2, "gross")]


async def test_chunks_resolve_originals_across_chunk_boundaries(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transaction_import, "CHUNK_ROWS", 3)
    practice, _ = await make_practice(db)
    rows = [f"ch_{n},2026-01-31T10:{n:02d}:00Z,sale,terminal,{n}.00,,,,pat-{n % 3},,," for n in range(1, 9)]
    rows.insert(0, "re_8,2026-02-01T10:00:00Z,refund,terminal,1.00,,,,pat-2,,,ch_8")
    rows.append("re_1,2026-02-01T10:00:00Z,refund,terminal,1.00,,,,pat-1,,,ch_1")
    seen: list[int] = []

    result = await import_transactions(db, practice, write_csv(tmp_path, *rows), progress=seen.append)

    assert (result.rows, result.imported, result.errors) == (10, 10, [])
    stored = await by_reference(db, practice)
    assert stored["re_8"].original_id == stored["ch_8"].id
    assert stored["re_1"].original_id == stored["ch_1"].id
    assert len(await patients(db, practice)) == 3
    assert seen == sorted(seen) and seen[-1] == 10 and len(seen) > 2


# --- file formats ---------------------------------------------------------------------------------------


async def test_missing_required_column_is_a_file_error_naming_it(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = write_csv(
        tmp_path, "ch_1,2026-01-31T14:30:00Z,sale,terminal", header="reference,time,kind,payment_type"
    )

    with pytest.raises(ImportFileError) as caught:
        await import_transactions(db, practice, path)

    assert caught.value.field == "gross"
    assert "the header has no gross column" in caught.value.message
    await assert_nothing_written(db)


async def test_excel_file_with_bom_semicolons_and_crlf_is_read(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = tmp_path / "excel.csv"
    lines = [
        " Reference ; TIME ;Kind;Payment Type;Gross;Fee;Patient ID;First Name;Description",
        'ch_1;2026-01-31 08:30;ACCEPTED;terminal;"1,234.50";1.50;pat-1;Zoë;"café; visit"',
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))

    result = await import_transactions(db, practice, path)

    assert (result.imported, result.errors) == (1, [])
    sale = (await by_reference(db, practice))["ch_1"]
    assert (sale.gross_cents, sale.net_cents, sale.description) == (123450, 123300, "café; visit")
    assert (await patients(db, practice))["pat-1"].first_name == "Zoë"


async def test_windows_1252_file_with_tabs_is_read(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = tmp_path / "legacy.csv"
    lines = [
        "reference\ttime\tkind\tpayment_type\tgross\tpatient_id\tlast_name",
        "ch_1\t2026-01-31\tsale\tonline\t5\tp1\tMuñoz",
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))

    result = await import_transactions(db, practice, path)

    assert (result.imported, result.errors) == (1, [])
    assert (await patients(db, practice))["p1"].last_name == "Muñoz"


async def test_jsonl_line_that_is_not_an_object_is_reported_by_line(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    path = tmp_path / "export.ndjson"
    good = {
        "reference": "ch_1",
        "time": "2026-01-31T10:00:00Z",
        "kind": "sale",
        "payment_type": "terminal",
        "gross": "1",
        "patient_id": "p1",
    }
    path.write_text(json.dumps(good) + "\n\n{not json\n[1, 2]\n" + json.dumps(good | {"gross": True}) + "\n")

    result = await import_transactions(db, practice, path)

    assert [(e.row, e.column) for e in result.errors] == [(3, ""), (4, ""), (5, "gross")]
    assert result.rows == 4 and not result.applied
    await assert_nothing_written(db)


async def test_format_comes_from_the_extension_unless_given(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)
    renamed = write_csv(tmp_path, SALE, name="export.txt")

    with pytest.raises(ImportFileError, match="cannot tell the format"):
        await import_transactions(sqlite_db, practice, renamed)
    with pytest.raises(ImportFileError, match="unknown file format"):
        await import_transactions(sqlite_db, practice, renamed, file_format="xlsx")
    result = await import_transactions(sqlite_db, practice, renamed, file_format="csv")
    assert result.imported == 1


async def test_unreadable_file_is_a_file_error(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)

    with pytest.raises(ImportFileError, match="cannot read"):
        await import_transactions(sqlite_db, practice, tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ImportFileError, match="has no header"):
        await import_transactions(sqlite_db, practice, tmp_path / "empty.csv")


async def test_header_only_file_imports_nothing_and_succeeds(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)

    result = await import_transactions(sqlite_db, practice, write_csv(tmp_path))

    assert result == TransactionImportResult(rows=0, imported=0, already_imported=0, errors=[], applied=True)


async def test_excel_unicode_text_export_in_utf16_is_read(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)
    path = tmp_path / "unicode.csv"
    lines = [
        "reference\ttime\tkind\tpayment_type\tgross\tpatient_id",
        "ch_1\t2026-01-31\tsale\tonline\t5\tp1",
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-16"))

    result = await import_transactions(sqlite_db, practice, path)

    assert (result.imported, result.errors) == (1, [])


async def test_blank_rows_are_skipped_but_keep_the_spreadsheet_row_numbers(
    sqlite_db: Database, tmp_path: Path
) -> None:
    practice, _ = await make_practice(sqlite_db)
    path = write_csv(
        tmp_path, SALE, "", ",,,,,,,,,,,", "ch_3,2026-01-31T10:00:00Z,sale,terminal,1.001,,,,p,,,"
    )

    result = await import_transactions(sqlite_db, practice, path)

    assert result.rows == 2
    assert [(e.row, e.column) for e in result.errors] == [(5, "gross")]


async def test_a_row_with_more_values_than_the_header_is_refused(sqlite_db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(sqlite_db)
    path = write_csv(tmp_path, SALE, SALE_2 + ",surplus")

    result = await import_transactions(sqlite_db, practice, path)

    error = only_error(result)
    assert (error.row, error.column) == (3, "column 13")
    assert "the row has 13 values but the header names 12 columns" in error.reason
