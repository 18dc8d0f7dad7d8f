"""The sandbox connector on its own: the answers the engine relies on for exactly-once, written through Open
Dental's office logic (`OpenDentalOffice`) on SQLite and on MariaDB."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from ledgerlink.connectors.base import (
    PaymentEntry,
    PmsAlert,
    PmsOutcomeUnknown,
    PmsRejected,
    PmsWrite,
    ReversalEntry,
)
from ledgerlink.connectors.registry import sandbox_settings
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.errors import InvalidInput
from ledgerlink.opendental.money import decimal_to_cents
from ledgerlink.opendental.office import DEF_CAT_ADJ_TYPES, PAT_STATUS_DELETED, NewOdPayment, OdNotFound
from tests.factories import paid_cents, reversed_pay_num

DAY = date(2026, 3, 10)


def payment(
    key: str, account: str, amount: int, fee: int = 0, payment_type: str = "terminal"
) -> PaymentEntry:
    return PaymentEntry(key, account, amount, fee, DAY, payment_type, "Card payment")


def adjustment_cents(pms: SandboxConnector, pat_num: int) -> list[int]:
    return [decimal_to_cents(a.adj_amt) for a in pms.office.adjustments(pat_num)]


def credit_card(pms: SandboxConnector) -> int:
    [def_num] = [d.def_num for d in pms.office.definitions(10) if d.item_name == "Credit Card"]
    return def_num


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def office_settings(request: pytest.FixtureRequest, tmp_path: Path) -> SandboxSettings:
    """The sandbox on a SQLite file (the default) and on a MariaDB database."""
    if request.param == "sqlite":
        return SandboxSettings(path=tmp_path / "pms.db")
    return SandboxSettings(database_url=str(request.getfixturevalue("mariadb_url")))


async def test_a_reversal_is_found_on_its_original_patient_whatever_account_it_names(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings)
    pat_num = str(pms.office.add_patient("Doe", "Jane"))
    [sale] = await pms.post_payments([payment("ll-wb-1", pat_num, 10000)])
    assert isinstance(sale, PmsWrite)
    refund = ReversalEntry("ll-wb-2", "", sale.pms_ref, 2500, False, DAY, "Refund")
    assert await pms.find_write(refund) is None

    [written] = await pms.post_reversals([refund])

    assert isinstance(written, PmsWrite)
    assert await pms.find_write(refund) == written
    assert await pms.find_write(ReversalEntry("ll-wb-3", pat_num, sale.pms_ref, 2500, False, DAY, "")) is None
    await pms.close()


async def test_a_payment_and_its_reversal_are_open_dental_payments(office_settings: SandboxSettings) -> None:
    pms = SandboxConnector(office_settings)
    pat_num = pms.office.add_patient("Doe", "Jane")
    [sale] = await pms.post_payments([payment("ll-wb-1", str(pat_num), 10000, payment_type="online")])
    assert isinstance(sale, PmsWrite)

    [refund] = await pms.post_reversals(
        [ReversalEntry("ll-wb-2", str(pat_num), sale.pms_ref, 2500, False, DAY, "Refund")]
    )

    assert isinstance(refund, PmsWrite) and refund.amount_cents == -2500
    original, negative = pms.office.payments(pat_num=pat_num)
    online = [d.def_num for d in pms.office.definitions(10) if d.item_name == "Online Payment"]
    assert (original.pay_amt, original.pay_date, original.pay_type) == (Decimal("100.00"), DAY, online[0])
    assert original.pay_note == "Card payment [ll-wb-1]"
    assert (negative.pay_amt, negative.pay_type, negative.pat_num) == (Decimal("-25.00"), online[0], pat_num)
    assert negative.pay_note == f"Refund (reverses PayNum {original.pay_num}) [ll-wb-2]"
    assert reversed_pay_num(negative.pay_note) == original.pay_num
    assert [s.split_amt for s in pms.office.paysplits(pay_num=negative.pay_num)] == [Decimal("-25.00")]
    assert paid_cents(pms.office, pat_num) == 7500
    assert pms.office.integrity_problems() == []
    await pms.close()


async def test_a_bad_entry_is_refused_alone_and_the_rest_of_the_batch_is_written(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings)
    pat_num = str(pms.office.add_patient("Doe", "Jane"))

    results = await pms.post_payments(
        [payment("ll-wb-1", pat_num, 1000), payment("ll-wb-2", pat_num, 0), payment("ll-wb-3", pat_num, 500)]
    )

    assert isinstance(results[0], PmsWrite) and isinstance(results[2], PmsWrite)
    assert isinstance(results[1], PmsRejected) and "0 cents" in results[1].message
    assert results[1].code is LoadErrorCode.PMS_REJECTED
    assert "PayAmt is required and cannot be 0." in results[1].message  # Open Dental's own answer
    assert [p.amount_cents for p in pms.office.payments()] == [1000, 500]
    assert pms.office.integrity_problems() == []
    await pms.close()


async def test_a_void_with_a_fee_mirrors_the_fee_entry(office_settings: SandboxSettings) -> None:
    pms = SandboxConnector(office_settings)
    pat_num = str(pms.office.add_patient("Doe", "Jane"))
    [sale] = await pms.post_payments([payment("ll-wb-1", pat_num, 10000, fee=300)])
    assert isinstance(sale, PmsWrite)

    [void] = await pms.post_reversals(
        [ReversalEntry("ll-wb-2", pat_num, sale.pms_ref, 10000, True, DAY, "Void", fee_cents=300)]
    )

    assert isinstance(void, PmsWrite)
    assert paid_cents(pms.office, int(pat_num)) == 0
    assert adjustment_cents(pms, int(pat_num)) == [300, -300]
    signs = {d.def_num: d.item_value for d in pms.office.definitions(DEF_CAT_ADJ_TYPES)}
    fee, returned = pms.office.adjustments(int(pat_num))
    assert (signs[fee.adj_type], signs[returned.adj_type]) == ("+", "-")
    assert (fee.adj_note, returned.adj_note) == (
        "Processing fee [ll-wb-1]",
        "Processing fee returned [ll-wb-2]",
    )
    await pms.close()


async def test_a_payment_found_without_its_fee_entry_gets_it_once(tmp_path: Path) -> None:
    # The process died after the payment's commit and before the fee adjustment's (two transactions in
    # Open Dental): the lookup finds the payment by its marker and adds the fee entry, once.
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = pms.office.add_patient("Doe", "Jane")
    entry = payment("ll-wb-1", str(pat_num), 10000, fee=300)
    made = pms.office.create_payment(
        NewOdPayment(
            pat_num,
            Decimal("100.00"),
            pay_type=credit_card(pms),
            pay_date=DAY,
            pay_note="Card payment [ll-wb-1]",
        )
    )

    found = await pms.find_write(entry)
    again = await pms.find_write(entry)

    assert found == again == PmsWrite(str(made.pay_num), 10000)
    assert adjustment_cents(pms, pat_num) == [300]
    assert [a.adj_note for a in pms.office.adjustments(pat_num)] == ["Processing fee [ll-wb-1]"]
    await pms.close()


async def test_a_void_found_without_its_returned_fee_gets_it(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = pms.office.add_patient("Doe", "Jane")
    [sale] = await pms.post_payments([payment("ll-wb-1", str(pat_num), 10000, fee=300)])
    assert isinstance(sale, PmsWrite)
    void = ReversalEntry("ll-wb-2", "", sale.pms_ref, 10000, True, DAY, "Void", fee_cents=300)
    pms.office.create_payment(
        NewOdPayment(
            pat_num,
            Decimal("-100.00"),
            pay_type=credit_card(pms),
            pay_date=DAY,
            pay_note=f"Void (reverses PayNum {sale.pms_ref}) [ll-wb-2]",
        )
    )

    found = await pms.find_write(void)

    assert found is not None and found.amount_cents == -10000
    assert adjustment_cents(pms, pat_num) == [300, -300]
    await pms.close()


async def test_a_fee_entry_refused_after_its_payment_committed_leaves_the_payment_and_a_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = pms.office.add_patient("Doe", "Jane")

    def refuse(*_: object, **__: object) -> int:
        raise OdNotFound("Patient not found.")

    monkeypatch.setattr(pms.office, "create_adjustment", refuse)
    [result] = await pms.post_payments([payment("ll-wb-1", str(pat_num), 10000, fee=300)])

    assert isinstance(result, PmsWrite)  # posted: posting it again would double it
    [task] = pms.office.tasks()
    assert task.descript.startswith("Fee entry not posted: ") and "[ll-wb-1]" in task.descript
    assert task.key_num == pat_num
    await pms.close()


async def test_a_fee_entry_whose_write_failed_makes_the_entry_uncertain_and_the_lookup_completes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = pms.office.add_patient("Doe", "Jane")
    entries = [payment("ll-wb-1", str(pat_num), 10000, fee=300), payment("ll-wb-2", str(pat_num), 5000)]

    def fail(*_: object, **__: object) -> int:
        raise OperationalError("INSERT INTO adjustment ...", {}, Exception("disk I/O error"))

    with monkeypatch.context() as patch:
        patch.setattr(pms.office, "create_adjustment", fail)
        first, second = await pms.post_payments(entries)

    assert isinstance(first, PmsOutcomeUnknown) and isinstance(second, PmsWrite)
    found = await pms.find_write(entries[0])
    assert found is not None and found.amount_cents == 10000
    assert adjustment_cents(pms, pat_num) == [300]
    assert len(pms.office.payments()) == 2
    await pms.close()


async def test_account_numbers_as_patnums_name_one_active_patient(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    active = pms.office.add_patient("Doe", "Jane")
    deleted = pms.office.add_patient("Roe", "Rick")
    pms.office.set_patient_status(deleted, PAT_STATUS_DELETED)

    results = await pms.post_payments(
        [
            payment("ll-wb-1", f" {active} ", 1000),
            payment("ll-wb-2", str(deleted), 1000),
            payment("ll-wb-3", "999999", 1000),
            payment("ll-wb-4", "A-12", 1000),
        ]
    )

    assert isinstance(results[0], PmsWrite)
    rejected = results[1:]
    assert all(isinstance(r, PmsRejected) and r.code is LoadErrorCode.INVALID_PATIENT_ID for r in rejected)
    assert [str(r) for r in rejected] == [
        f"patient {deleted} is deleted in the PMS",
        "no patient has PatNum 999999",
        "'A-12' is not a PatNum (PatNums are numbers)",
    ]
    assert await pms.find_patient(str(deleted)) is None
    found = await pms.find_patient(str(active))
    assert found is not None and (found.pms_id, found.last_name) == (str(active), "Doe")
    await pms.close()


async def test_account_numbers_as_chart_numbers_must_match_exactly_one_active_patient(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings.model_copy(update={"account_number": "chartnumber"}))
    one = pms.office.add_patient("Doe", "Jane", chart_number="A100")
    pms.office.add_patient("Doe", "John", chart_number="A1001")  # a prefix match only
    pms.office.add_patient("Twin", "One", chart_number="B7")
    pms.office.add_patient("Twin", "Two", chart_number="B7")
    gone = pms.office.add_patient("Gone", "Old", chart_number="C3")
    pms.office.set_patient_status(gone, PAT_STATUS_DELETED)

    results = await pms.post_payments(
        [
            payment("ll-wb-1", "A100", 1000),
            payment("ll-wb-2", "B7", 1000),
            payment("ll-wb-3", "C3", 1000),
            payment("ll-wb-4", "a100", 1000),  # ChartNumbers are compared exactly, case included
        ]
    )

    assert isinstance(results[0], PmsWrite)
    assert [p.pat_num for p in pms.office.payments()] == [one]
    rejected = results[1:]
    assert all(isinstance(r, PmsRejected) and r.code is LoadErrorCode.INVALID_PATIENT_ID for r in rejected)
    assert [str(r) for r in rejected] == [
        "ChartNumber 'B7' belongs to 2 patients",
        "no patient has ChartNumber 'C3'",
        "no patient has ChartNumber 'a100'",
    ]
    await pms.close()


async def test_a_payment_type_or_fee_type_missing_in_the_pms_is_a_configuration_error(tmp_path: Path) -> None:
    settings = SandboxSettings(
        path=tmp_path / "pms.db",
        payment_type_names={"terminal": "Credit Card", "online": "Bitcoin"},
        fee_adjustment_type_name="Professional Discount",  # a '-' type cannot carry a fee
    )
    pms = SandboxConnector(settings)
    pat_num = str(pms.office.add_patient("Doe", "Jane"))

    results = await pms.post_payments(
        [
            payment("ll-wb-1", pat_num, 1000, payment_type="online"),
            payment("ll-wb-2", pat_num, 1000, payment_type="insurance"),
            payment("ll-wb-3", pat_num, 1000, fee=30),
            payment("ll-wb-4", pat_num, 1000),
        ]
    )

    assert [type(r) for r in results] == [PmsRejected, PmsRejected, PmsRejected, PmsWrite]
    assert all(r.code is LoadErrorCode.PMS_CONFIGURATION for r in results[:3] if isinstance(r, PmsRejected))
    assert "'Bitcoin' is not defined in the PMS" in str(results[0])
    assert "no PMS payment type configured for 'insurance'" in str(results[1])
    assert "'Professional Discount' is a '-' type" in str(results[2])
    assert len(pms.office.payments()) == 1
    await pms.close()


async def test_a_reversal_of_an_unknown_payment_is_refused(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pms.office.add_patient("Doe", "Jane")

    results = await pms.post_reversals(
        [
            ReversalEntry("ll-wb-1", "1", "424242", 100, False, DAY, "Refund"),
            ReversalEntry("ll-wb-2", "1", "ch_123", 100, False, DAY, "Refund"),
        ]
    )

    assert [(type(r), r.code) for r in results if isinstance(r, PmsRejected)] == [
        (PmsRejected, LoadErrorCode.PMS_REJECTED),
        (PmsRejected, LoadErrorCode.PMS_REJECTED),
    ]
    assert pms.office.payments() == []
    await pms.close()


async def test_an_alert_is_a_task_for_the_office_and_a_commlog_on_a_known_patient(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings)
    pat_num = pms.office.add_patient("Doe", "Jane")

    await pms.raise_alert(PmsAlert("Payment not posted", "ch_1: no such patient"))
    await pms.raise_alert(PmsAlert("Payment not posted", "ch_2: refused", str(pat_num)))

    first, second = pms.office.tasks()
    assert (first.task_list_num, first.user_num, first.key_num) == (1, 1, 0)
    assert first.descript == "Payment not posted: ch_1: no such patient"
    assert (second.task_list_num, second.user_num, second.key_num, second.object_type) == (1, 1, pat_num, 1)
    [commlog] = pms.office.commlogs(pat_num)
    assert commlog.note == "ledgerlink: Payment not posted. ch_2: refused"
    await pms.close()


def test_the_sandbox_sits_on_a_sqlite_file_or_a_mariadb_database(tmp_path: Path) -> None:
    on_file = sandbox_settings({"path": "smile.db"}, tmp_path)
    assert on_file.url == f"sqlite:///{tmp_path / 'sandbox' / 'smile.db'}"
    url = "mysql+pymysql://ll:secret@db.example/opendental"
    assert sandbox_settings({"database_url": url}, tmp_path).url == url
    with pytest.raises(InvalidInput, match="SQLite or MariaDB"):
        sandbox_settings({"database_url": "postgresql+psycopg://localhost/od"}, tmp_path)
    with pytest.raises(ValueError, match="path"):
        SandboxSettings()


async def test_search_patients_suggests_active_patients_by_name_and_birth_date(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings)
    born = date(1971, 4, 2)
    same = pms.office.add_patient("Quinn", "Tess", birthdate=born)
    other_birthday = pms.office.add_patient("QUINN ", "tess", birthdate=date(1980, 1, 1))
    nickname = pms.office.add_patient("Quinn", "Teresa", birthdate=born)
    pms.office.add_patient("Quinn", "Sam", birthdate=date(1990, 5, 5))  # another first name and birthday
    pms.office.add_patient("Quinnell", "Tess", birthdate=born)  # a longer last name: not the same
    deleted = pms.office.add_patient("Quinn", "Tess", birthdate=born)
    pms.office.set_patient_status(deleted, PAT_STATUS_DELETED)

    found = await pms.search_patients(" quinn", "Tess ", born)
    assert sorted(int(p.pms_id) for p in found) == [same, other_birthday, nickname]
    assert {p.account_number for p in found} == {str(same), str(other_birthday), str(nickname)}
    by_id = {int(p.pms_id): p for p in found}
    assert by_id[same].birth_date == born and by_id[nickname].first_name == "Teresa"

    assert sorted(int(p.pms_id) for p in await pms.search_patients("Quinn", "Tess", None)) == [
        same,
        other_birthday,
    ]
    assert await pms.search_patients("  ", "Tess", born) == []
    await pms.close()


async def test_search_patients_in_chart_number_mode_offers_chart_numbers(
    office_settings: SandboxSettings,
) -> None:
    pms = SandboxConnector(office_settings.model_copy(update={"account_number": "chartnumber"}))
    charted = pms.office.add_patient("Diaz", "Ana", chart_number="D-17")
    pms.office.add_patient("Diaz", "Ana")  # no chart number: nothing to offer as an account number
    found = await pms.search_patients("Diaz", "Ana", None)
    assert [(p.pms_id, p.account_number) for p in found] == [(str(charted), "D-17")]
    await pms.close()
