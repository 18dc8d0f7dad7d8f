"""Every ledger rule of SPEC section 3, end to end: the real engine writing into the sandbox PMS.

Each test runs on SQLite and on PostgreSQL (the `db` fixture) and ends by checking the sandbox's Open Dental
office with Open Dental's own integrity checks and that no writeback's marker is in it twice.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from ledgerlink.connectors.base import (
    PaymentEntry,
    PmsAlert,
    PmsConnector,
    PmsOutcomeUnknown,
    PmsPatient,
    PmsRejected,
    PmsUnavailable,
    PmsWrite,
    ReversalEntry,
    WriteResult,
)
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine import sync as sync_engine
from ledgerlink.engine.sync import idempotency_key, run_sync
from ledgerlink.opendental.money import decimal_to_cents
from ledgerlink.opendental.office import NewOdPayment, OpenDentalOffice
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database
from ledgerlink.store.models import Alert, Connection, Patient, Practice, Transaction, Writeback
from tests.factories import add_patient, add_transaction, paid_cents, reversed_pay_num, sandbox_patient

DAY = date(2026, 3, 10)
NOON = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)  # 12:00 in Chicago
MARKER = re.compile(r"\[(ll-wb-\d+)\]")


@dataclass
class Office:
    """One practice with one sandbox connection, as a test sees it."""

    db: Database
    practice: Practice
    connection: Connection
    pms: SandboxConnector

    @property
    def ledger(self) -> OpenDentalOffice:
        """The PMS side: the sandbox's Open Dental office."""
        return self.pms.office

    def paid(self, pat_num: int) -> int:
        """What the patient's account has been credited in the PMS, in cents."""
        return paid_cents(self.ledger, pat_num)

    async def patient(self, ref: str, *, with_account: bool = True) -> tuple[Patient, int]:
        """A patient known to both sides; returns the patient and its PatNum (0 when it has no account)."""
        account = sandbox_patient(self.ledger, ref.title()) if with_account else None
        patient = await add_patient(self.db, self.practice, self.connection, ref, account)
        return patient, int(account or 0)

    async def sync(self, connector: PmsConnector | None = None) -> SyncReport:
        outcome = await run_sync(self.db, self.connection.id, connector or self.pms, since=DAY)
        return outcome.report

    async def writeback(self, ref: str) -> Writeback:
        async with self.db.sessions() as session:
            found = await session.scalar(
                select(Writeback)
                .join(Transaction, Transaction.id == Writeback.transaction_id)
                .where(Transaction.processor_ref == ref, Writeback.connection_id == self.connection.id)
            )
        assert found is not None, f"no writeback for {ref}"
        return found

    async def unsettled(self) -> int:
        async with self.db.sessions() as session:
            return int(
                await session.scalar(
                    select(func.count())
                    .select_from(Writeback)
                    .where(Writeback.status.in_(("pending", "in_flight")))
                )
                or 0
            )

    async def sync_until_settled(self, max_runs: int = 40) -> None:
        """Sync, making backed-off retries due at once between runs, until nothing is left pending."""
        for _ in range(max_runs):
            await self.sync()
            async with self.db.sessions.begin() as session:
                await session.execute(update(Writeback).values(next_attempt_at=None))
            if not await self.unsettled():
                return
        raise AssertionError(f"writebacks still pending after {max_runs} runs")

    def adjustments(self, pat_num: int) -> list[int]:
        """AdjAmt of the patient's adjustments, in cents."""
        return [decimal_to_cents(adjustment.adj_amt) for adjustment in self.ledger.adjustments(pat_num)]

    def markers(self) -> list[str]:
        return [m for p in self.ledger.payments() for m in MARKER.findall(p.pay_note)]

    async def close_checking_the_ledger(self) -> None:
        problems = self.ledger.integrity_problems()
        markers = self.markers()
        await self.pms.close()
        assert problems == []
        assert [m for m, n in Counter(markers).items() if n > 1] == [], "a writeback was posted twice"


async def open_office(
    db: Database,
    tmp_path: Path,
    *,
    start_date: date | None = None,
    amount_mode: str = "net",
    chargebacks_enabled: bool = True,
    type_handling: dict[str, str] | None = None,
    failure_rate: float = 0.0,
    lost_response_rate: float = 0.0,
    batch_size: int = 200,
    seed: int | None = None,
) -> Office:
    async with db.sessions.begin() as session:
        practice = await create_practice(
            session, slug="smile", name="Smile Dental", timezone="America/Chicago"
        )
        connection = await add_connection(
            session,
            practice,
            name="pms",
            kind="sandbox",
            start_date=start_date,
            amount_mode=amount_mode,
            chargebacks_enabled=chargebacks_enabled,
            type_handling=type_handling,
        )
    settings = SandboxSettings(
        path=tmp_path / "pms.db",
        failure_rate=failure_rate,
        lost_response_rate=lost_response_rate,
        batch_size=batch_size,
        seed=seed,
    )
    return Office(db, practice, connection, SandboxConnector(settings))


async def sale(
    office: Office,
    ref: str,
    patient: Patient | None,
    *,
    gross: int = 10000,
    fee: int = 300,
    payment_type: str = "terminal",
    kind: str = "sale",
    at: datetime = NOON,
) -> Transaction:
    return await add_transaction(
        office.db,
        office.practice,
        ref,
        kind=kind,
        payment_type=payment_type,
        gross=gross,
        fee=fee,
        patient=patient,
        at=at,
    )


async def reversal(
    office: Office, kind: str, ref: str, original: str, patient: Patient | None, amount: int
) -> Transaction:
    """A refund, void or chargeback of `amount` (processors return no fee on it: net equals gross)."""
    return await add_transaction(
        office.db,
        office.practice,
        ref,
        kind=kind,
        gross=amount,
        fee=0,
        patient=patient,
        original=original,
        at=NOON,
    )


# --- sales -----------------------------------------------------------------------------------------------


async def test_sale_posts_the_net_amount_on_the_practice_local_date(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    late_evening = datetime(2026, 3, 11, 4, 30, tzinfo=UTC)  # 22:30 in Chicago on March 10th
    await sale(office, "ch_1", patient, gross=10000, fee=300, at=late_evening)

    report = await office.sync()

    [payment] = office.ledger.payments()
    assert (payment.pat_num, payment.amount_cents, payment.pay_date) == (pat_num, 9700, date(2026, 3, 10))
    wb = await office.writeback("ch_1")
    assert (wb.status, wb.category, wb.pms_ref) == ("posted", "sales", str(payment.pay_num))
    assert f"[{idempotency_key(wb.id)}]" in payment.pay_note
    sales = report.line(ReportCategory.SALES)
    assert (sales.count, sales.total_cents) == (1, 9700)
    assert office.paid(pat_num) == 9700
    await office.close_checking_the_ledger()


async def test_plan_and_membership_payments_are_reported_as_recurring(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "plan_1", patient, payment_type="payment_plan", gross=5000, fee=150)
    await sale(office, "member_1", patient, payment_type="membership", gross=3000, fee=90)
    await sale(office, "ch_1", patient, payment_type="terminal", gross=10000, fee=300)

    report = await office.sync()

    assert report.line(ReportCategory.RECURRING).count == 2
    assert report.line(ReportCategory.RECURRING).total_cents == 4850 + 2910
    assert report.line(ReportCategory.SALES).count == 1
    assert office.paid(pat_num) == 4850 + 2910 + 9700
    await office.close_checking_the_ledger()


async def test_gross_mode_posts_the_gross_amount_without_a_fee_entry(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path, amount_mode="gross")
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)

    await office.sync()

    assert [p.amount_cents for p in office.ledger.payments()] == [10000]
    assert office.ledger.count("adjustment") == 0
    assert office.paid(pat_num) == 10000
    await office.close_checking_the_ledger()


async def test_gross_plus_fee_posts_the_gross_amount_and_a_fee_adjustment(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, amount_mode="gross_plus_fee")
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await sale(office, "ch_2", patient, gross=2000, fee=0)

    await office.sync()

    assert [p.amount_cents for p in office.ledger.payments()] == [10000, 2000]
    assert office.ledger.count("adjustment") == 1  # no fee, no fee entry
    assert office.paid(pat_num) == 12000
    assert office.adjustments(pat_num) == [300]
    wb = await office.writeback("ch_1")
    assert (wb.amount_cents, wb.fee_cents) == (10000, 300)
    await office.close_checking_the_ledger()


async def test_void_under_gross_plus_fee_leaves_nothing_on_the_patients_account(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, amount_mode="gross_plus_fee")
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync()
    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)

    await office.sync()

    assert office.paid(pat_num) == 0
    assert sum(office.adjustments(pat_num)) == 0
    await office.close_checking_the_ledger()


async def test_sale_with_nothing_left_after_fees_does_not_stop_the_other_payments(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1")
    await sale(office, "ch_zero", patient, gross=300, fee=300)
    await sale(office, "ch_1", patient, gross=10000, fee=300)

    await office.sync()

    assert [p.amount_cents for p in office.ledger.payments()] == [9700]
    assert (await office.writeback("ch_zero")).status in ("skipped", "failed")
    await office.close_checking_the_ledger()


# --- refunds ---------------------------------------------------------------------------------------------


async def test_partial_refund_then_the_rest_leaves_the_patient_at_zero(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync()
    original = office.ledger.payments()[0]

    await reversal(office, "refund", "re_1", "ch_1", patient, 5000)
    first = await office.sync()
    assert office.paid(pat_num) == 4700
    assert first.line(ReportCategory.REFUNDS).total_cents == 5000

    # The processor refunds the gross that is left; the net payment only had 4700 left on the ledger.
    await reversal(office, "refund", "re_2", "ch_1", patient, 5000)
    second = await office.sync()

    assert office.paid(pat_num) == 0
    assert second.line(ReportCategory.REFUNDS).total_cents == 4700
    refunds = office.ledger.payments()[1:]
    assert [(p.amount_cents, reversed_pay_num(p.pay_note)) for p in refunds] == [
        (-5000, original.pay_num),
        (-4700, original.pay_num),
    ]
    assert (await office.writeback("ch_1")).reversed_cents == 9700
    await office.close_checking_the_ledger()


async def test_refund_arriving_with_its_sale_is_posted_in_the_same_sync(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await reversal(office, "refund", "re_1", "ch_1", patient, 2500)

    report = await office.sync()

    assert [p.amount_cents for p in office.ledger.payments()] == [9700, -2500]
    assert report.line(ReportCategory.SALES).count == 1
    assert report.line(ReportCategory.REFUNDS).count == 1
    assert office.paid(pat_num) == 7200
    await office.close_checking_the_ledger()


async def test_refund_beyond_what_is_left_fails_refund_exceeds_original(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await reversal(office, "refund", "re_1", "ch_1", patient, 10000)
    await office.sync()
    await reversal(office, "refund", "re_2", "ch_1", patient, 100)

    await office.sync()

    wb = await office.writeback("re_2")
    assert (wb.status, wb.error_code) == ("failed", "REFUND_EXCEEDS_ORIGINAL")
    assert office.paid(pat_num) == 0
    await office.close_checking_the_ledger()


async def test_refund_of_a_sale_that_failed_is_a_failure_original_not_posted(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1", with_account=False)
    await sale(office, "ch_1", patient)
    await office.sync()
    assert (await office.writeback("ch_1")).error_code == "INVALID_PATIENT_ID"

    await reversal(office, "refund", "re_1", "ch_1", patient, 2500)
    report = await office.sync()

    wb = await office.writeback("re_1")
    assert (wb.status, wb.error_code, wb.category) == ("failed", "ORIGINAL_NOT_POSTED", "in_error")
    assert report.line(ReportCategory.IN_ERROR).count == 1
    assert office.ledger.payments() == []
    async with db.sessions() as session:
        codes = set(await session.scalars(select(Alert.code)))
    assert codes == {"INVALID_PATIENT_ID", "ORIGINAL_NOT_POSTED"}
    await office.close_checking_the_ledger()


async def test_refund_of_a_payment_ledgerlink_never_saw_fails_original_not_found(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1")
    await reversal(office, "refund", "re_1", "ch_unknown", patient, 2500)

    await office.sync()

    wb = await office.writeback("re_1")
    assert (wb.status, wb.error_code) == ("failed", "ORIGINAL_NOT_FOUND")
    assert office.ledger.payments() == []
    await office.close_checking_the_ledger()


# --- voids -----------------------------------------------------------------------------------------------


async def test_void_after_posting_posts_a_full_reversal_of_the_original(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync()
    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)

    report = await office.sync()

    original, void = office.ledger.payments()
    assert (void.amount_cents, reversed_pay_num(void.pay_note), void.pat_num) == (
        -9700,
        original.pay_num,
        pat_num,
    )
    assert office.paid(pat_num) == 0
    voids = report.line(ReportCategory.VOIDS)
    assert (voids.count, voids.total_cents) == (1, 9700)
    await office.close_checking_the_ledger()


async def test_void_after_a_partial_refund_reverses_only_what_is_left(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await reversal(office, "refund", "re_1", "ch_1", patient, 2000)
    await office.sync()
    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)

    await office.sync()

    assert [p.amount_cents for p in office.ledger.payments()] == [9700, -2000, -7700]
    assert office.paid(pat_num) == 0
    await office.close_checking_the_ledger()


async def test_void_of_unposted_sale_posts_nothing(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)

    report = await office.sync()

    assert office.ledger.payments() == []
    original = await office.writeback("ch_1")
    void = await office.writeback("vo_1")
    assert (original.status, original.category, original.skip_reason) == (
        "skipped",
        "cancelled_by_void",
        "voided_before_posting",
    )
    assert (void.status, void.category, void.skip_reason) == ("skipped", "voids", "voided_before_posting")
    assert report.line(ReportCategory.VOIDS).count == 1
    assert report.line(ReportCategory.CANCELLED_BY_VOID).count == 1
    assert report.line(ReportCategory.SALES).count == 0
    assert original.attempts == 0
    await office.close_checking_the_ledger()


async def test_void_of_a_sale_that_failed_for_invalid_patient_id_cancels_it(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1", with_account=False)
    await sale(office, "ch_1", patient)
    first = await office.sync()
    assert first.line(ReportCategory.INVALID_PATIENT_ID).count == 1

    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)
    await office.sync()

    original = await office.writeback("ch_1")
    assert (original.status, original.category, original.error_code) == ("skipped", "cancelled_by_void", None)
    assert (await office.writeback("vo_1")).status == "skipped"
    assert office.ledger.payments() == []
    await office.close_checking_the_ledger()


# --- chargebacks -----------------------------------------------------------------------------------------


async def test_chargeback_posts_a_reversal_when_enabled(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync()
    await reversal(office, "chargeback", "cb_1", "ch_1", patient, 10000)

    report = await office.sync()

    original, chargeback = office.ledger.payments()
    assert (chargeback.amount_cents, reversed_pay_num(chargeback.pay_note)) == (-9700, original.pay_num)
    assert report.line(ReportCategory.CHARGEBACKS).count == 1
    assert office.paid(pat_num) == 0
    await office.close_checking_the_ledger()


async def test_chargeback_is_skipped_when_the_connection_has_chargebacks_off(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, chargebacks_enabled=False)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync()
    await reversal(office, "chargeback", "cb_1", "ch_1", patient, 10000)

    report = await office.sync()

    wb = await office.writeback("cb_1")
    assert (wb.status, wb.skip_reason, wb.category) == (
        "skipped",
        "chargebacks_disabled",
        "skipped_by_settings",
    )
    assert report.line(ReportCategory.SKIPPED_BY_SETTINGS).count == 1
    assert office.paid(pat_num) == 9700
    await office.close_checking_the_ledger()


# --- declines --------------------------------------------------------------------------------------------


async def test_decline_is_counted_and_never_posted(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path)
    patient, _ = await office.patient("p1")
    await sale(office, "dc_1", patient, kind="decline", gross=4500, fee=0)
    await sale(office, "dc_2", None, kind="decline", gross=1500, fee=0)

    report = await office.sync()

    assert office.ledger.payments() == []
    assert office.ledger.tasks() == []
    line = report.line(ReportCategory.DECLINED)
    assert (line.count, line.total_cents) == (2, 6000)
    wb = await office.writeback("dc_1")
    assert (wb.status, wb.skip_reason) == ("skipped", "declined")
    await office.close_checking_the_ledger()


# --- settings: payment types, start date -----------------------------------------------------------------


async def test_payment_type_set_to_manual_is_held_and_others_post(db: Database, tmp_path: Path) -> None:
    office = await open_office(db, tmp_path, type_handling={"terminal": "manual", "insurance": "off"})
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_terminal", patient, payment_type="terminal")
    await sale(office, "ch_insurance", patient, payment_type="insurance")
    await sale(office, "ch_plan", patient, payment_type="payment_plan", gross=5000, fee=150)

    report = await office.sync()

    held = await office.writeback("ch_terminal")
    assert (held.status, held.category, held.skip_reason) == ("skipped", "held_for_manual", "held_for_manual")
    off = await office.writeback("ch_insurance")
    assert (off.status, off.category, off.skip_reason) == ("skipped", "skipped_by_settings", "type_disabled")
    assert report.line(ReportCategory.HELD_FOR_MANUAL).count == 1
    assert report.line(ReportCategory.SKIPPED_BY_SETTINGS).count == 1
    assert [p.amount_cents for p in office.ledger.payments()] == [4850]
    assert office.paid(pat_num) == 4850
    await office.close_checking_the_ledger()


async def test_refund_of_a_payment_held_for_manual_posting_is_left_to_staff(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, type_handling={"terminal": "manual"})
    patient, _ = await office.patient("p1")
    await sale(office, "ch_1", patient)
    await reversal(office, "refund", "re_1", "ch_1", patient, 2500)

    await office.sync()

    wb = await office.writeback("re_1")
    assert (wb.status, wb.category) == ("skipped", "held_for_manual")
    assert office.ledger.payments() == []
    await office.close_checking_the_ledger()


async def test_nothing_before_the_start_date_is_written_back_in_practice_local_time(
    db: Database, tmp_path: Path
) -> None:
    office = await open_office(db, tmp_path, start_date=date(2026, 3, 2))
    patient, _ = await office.patient("p1")
    await sale(office, "ch_before", patient, at=datetime(2026, 3, 2, 5, 30, tzinfo=UTC))  # 23:30 March 1st
    await sale(office, "ch_after", patient, at=datetime(2026, 3, 2, 6, 30, tzinfo=UTC))  # 00:30 March 2nd

    await office.sync()

    before = await office.writeback("ch_before")
    assert (before.status, before.skip_reason, before.category) == (
        "skipped",
        "before_start_date",
        "skipped_by_settings",
    )
    [payment] = office.ledger.payments()
    assert (payment.amount_cents, payment.pay_date) == (9700, date(2026, 3, 2))
    await office.close_checking_the_ledger()


# --- exactly once under PMS failures ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_flaky_pms_still_ends_with_exactly_one_posting_per_sale(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0, 0.0, 0.0))
    office = await open_office(
        db, tmp_path, failure_rate=0.5, lost_response_rate=0.5, batch_size=3, seed=seed
    )
    patients = [await office.patient(f"p{i}") for i in range(3)]
    expected: Counter[int] = Counter()
    for n in range(15):
        patient, pat_num = patients[n % 3]
        gross = 1000 + 100 * n
        await sale(office, f"ch_{n}", patient, gross=gross, fee=30)
        expected[pat_num] += gross - 30

    await office.sync_until_settled()

    async with db.sessions() as session:
        statuses = Counter(await session.scalars(select(Writeback.status)))
    assert statuses == {"posted": 15}
    payments = office.ledger.payments()
    assert len(payments) == 15
    assert len(set(office.markers())) == 15
    for pat_num, total in expected.items():
        assert office.paid(pat_num) == total
    await office.close_checking_the_ledger()


class PassThrough:
    """The sandbox as it is; the wrappers below change one behaviour each (no real PMS loses answers on
    demand, so these are the one place the tests stand in for the PMS)."""

    def __init__(self, inner: SandboxConnector) -> None:
        self.inner = inner
        self.limits = inner.limits

    async def find_patient(self, account_number: str) -> PmsPatient | None:
        return await self.inner.find_patient(account_number)

    async def search_patients(
        self, last_name: str, first_name: str, birth_date: date | None
    ) -> list[PmsPatient]:
        return await self.inner.search_patients(last_name, first_name, birth_date)

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        return await self.inner.post_payments(entries)

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        return await self.inner.post_reversals(entries)

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        return await self.inner.find_write(entry)

    async def raise_alert(self, alert: PmsAlert) -> None:
        await self.inner.raise_alert(alert)

    async def close(self) -> None:
        """The wrapped sandbox is closed by its owner."""


class LosesReversalOutcomes(PassThrough):
    """After committing a reversal the answer is lost and the PMS then goes down for lookups: the
    reversal is in the PMS but ledgerlink cannot know it yet."""

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        await self.inner.post_reversals(entries)
        raise PmsOutcomeUnknown("connection reset after the request was sent")

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        raise PmsUnavailable("PMS is down")


async def test_second_refund_waits_for_an_uncertain_first_refund_of_the_same_payment(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0, 0.0, 0.0))
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=0)
    await office.sync()
    await reversal(office, "refund", "re_1", "ch_1", patient, 10000)
    await office.sync(LosesReversalOutcomes(office.pms))
    first = await office.writeback("re_1")
    assert (first.status, first.uncertain) == ("pending", True)

    await reversal(office, "refund", "re_2", "ch_1", patient, 5000)
    await office.sync()
    await office.sync_until_settled()

    assert office.paid(pat_num) == 0
    await office.close_checking_the_ledger()


async def test_uncertain_refund_is_found_on_the_original_patient_whatever_the_refund_row_names(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0, 0.0, 0.0))
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=0)
    await office.sync()
    # The processor named another customer on the refund: the import made a patient with no account number.
    stub, _ = await office.patient("p1-refund", with_account=False)
    await reversal(office, "refund", "re_1", "ch_1", stub, 2500)
    await office.sync(LosesReversalOutcomes(office.pms))

    await office.sync_until_settled()

    assert office.paid(pat_num) == 7500
    await office.close_checking_the_ledger()


class LosesPaymentOutcomes(PassThrough):
    """After committing payments the answer is lost and lookups fail: the payments are in the PMS but
    ledgerlink cannot know it yet."""

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        await self.inner.post_payments(entries)
        raise PmsOutcomeUnknown("connection reset after the request was sent")

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        raise PmsUnavailable("PMS is down")


async def test_uncertain_payment_keeps_the_amount_it_was_attempted_with_when_the_settings_change(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0,))
    office = await open_office(db, tmp_path)  # net
    patient, _ = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync(LosesPaymentOutcomes(office.pms))
    assert (await office.writeback("ch_1")).uncertain
    async with db.sessions.begin() as session:
        await session.execute(
            update(Connection).where(Connection.id == office.connection.id).values(amount_mode="gross")
        )

    await office.sync_until_settled()

    wb = await office.writeback("ch_1")
    assert (wb.status, wb.amount_cents) == ("posted", 9700)  # what the PMS holds, not the new gross amount
    assert [p.amount_cents for p in office.ledger.payments()] == [9700]
    await office.close_checking_the_ledger()


async def test_uncertain_payment_whose_patient_lost_the_account_number_fails_and_is_looked_up_on_retry(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledgerlink.engine.operations import retry_writebacks
    from ledgerlink.store.models import PatientAccount

    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0,))
    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=300)
    await office.sync(LosesPaymentOutcomes(office.pms))
    async with db.sessions.begin() as session:
        account = await session.scalar(select(PatientAccount).where(PatientAccount.patient_id == patient.id))
        assert account is not None
        account.account_number = ""

    await office.sync_until_settled()

    wb = await office.writeback("ch_1")
    assert (wb.status, wb.error_code, wb.uncertain) == ("failed", "MAY_BE_IN_PMS", True)
    async with db.sessions.begin() as session:
        account = await session.scalar(select(PatientAccount).where(PatientAccount.patient_id == patient.id))
        assert account is not None
        account.account_number = str(pat_num)
        [result] = await retry_writebacks(session, office.practice.id, [wb.id], actor="test")
        assert result.ok
    await office.sync_until_settled()

    wb = await office.writeback("ch_1")
    assert (wb.status, wb.uncertain) == ("posted", False)
    assert [p.amount_cents for p in office.ledger.payments()] == [9700]  # found, not posted again
    await office.close_checking_the_ledger()


async def test_a_refund_posted_by_hand_and_cleared_counts_as_reversed_when_the_payment_is_voided(
    db: Database, tmp_path: Path
) -> None:
    from ledgerlink.engine.operations import clear_writebacks

    office = await open_office(db, tmp_path)
    patient, pat_num = await office.patient("p1")
    await sale(office, "ch_1", patient, gross=10000, fee=0)
    await office.sync()
    await reversal(office, "refund", "re_1", "ch_1", patient, 4000)
    await office.sync(RejectsReversals(office.pms))
    refund = await office.writeback("re_1")
    assert (refund.status, refund.error_code) == ("failed", "PMS_REJECTED")
    # Staff post the refund by hand, then clear it.
    original = (await office.writeback("ch_1")).pms_ref
    assert original is not None
    paid = office.ledger.payment(int(original))
    assert paid is not None
    office.ledger.create_payment(  # a negative payment, as Open Dental's UI posts a refund
        NewOdPayment(
            pat_num,
            Decimal("-40.00"),
            pay_type=paid.pay_type,
            pay_date=DAY,
            pay_note=f"refund by hand (reverses PayNum {original})",
        )
    )
    async with db.sessions.begin() as session:
        [result] = await clear_writebacks(session, office.practice.id, [refund.id], actor="test")
        assert result.ok
    await reversal(office, "void", "vo_1", "ch_1", patient, 10000)

    await office.sync()

    assert office.paid(pat_num) == 0  # the void reverses the 6,000 left, not 10,000
    assert (await office.writeback("vo_1")).amount_cents == 6000
    await office.close_checking_the_ledger()


class RejectsReversals(PassThrough):
    """The PMS refuses every reversal (nothing is written)."""

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        return [PmsRejected("refunds are locked for this period") for _ in entries]
