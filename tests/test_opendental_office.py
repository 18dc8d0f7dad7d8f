"""OpenDentalOffice against real databases: every scenario on SQLite and on MariaDB (strict sql_mode).

After every scenario the office must pass Open Dental's own integrity checks (`integrity_problems() == []`,
asserted by the `office` fixture's teardown and again where a test wants it in view).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy import types as satypes

from ledgerlink.opendental import tables as t
from ledgerlink.opendental.money import MoneyError, cents_to_double, double_to_cents, from_double, to_double
from ledgerlink.opendental.office import (
    PAYMENT_SOURCE_API,
    NewOdPayment,
    OdBadRequest,
    OdError,
    OdNotFound,
    OdPayment,
    OpenDentalOffice,
    split_sql,
)

START = datetime(2025, 3, 14, 10, 30, 0)
TODAY = START.date()
CHECK, CASH, CREDIT_CARD, NOT_USED_HIDDEN = 69, 70, 71, 72
PREPAYMENT = 283
MISC_NEG_ADJ, MISC_POS_ADJ = 1, 2
COMMLOG_MISC, COMMLOG_FINANCIAL = 239, 237


class Clock:
    """The office clock, moved by tests."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def office_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/od.db"
    return str(request.getfixturevalue("mariadb_url"))


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def office(office_url: str, clock: Clock) -> Iterator[OpenDentalOffice]:
    opened = OpenDentalOffice.open(office_url, create=True, clock=clock)
    try:
        yield opened
        assert opened.integrity_problems() == []
    finally:
        opened.close()


@pytest.fixture
def raw(office_url: str, office: OpenDentalOffice) -> Iterator[Engine]:
    """A second, plain engine on the same database, to look at and tamper with rows as another program would."""
    engine = create_engine(office_url)
    try:
        yield engine
    finally:
        engine.dispose()


def row_of(engine: Engine, table: Any, **where: Any) -> dict[str, Any]:
    query = select(table).where(*(table.c[name] == value for name, value in where.items()))
    with engine.connect() as conn:
        return dict(conn.execute(query).one()._mapping)


def rows_of(engine: Engine, table: Any, **where: Any) -> list[dict[str, Any]]:
    query = select(table).where(*(table.c[name] == value for name, value in where.items()))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


# --- the schema ------------------------------------------------------------------------------------------


_TYPE_FAMILIES = {
    "bigint": satypes.BigInteger,
    "tinyint": satypes.SmallInteger,
    "smallint": satypes.SmallInteger,
    "integer": satypes.Integer,
    "double": satypes.Double,
    "varchar": satypes.String,
    "text": satypes.Text,
    "date": satypes.Date,
    "datetime": satypes.DateTime,
    "timestamp": satypes.DateTime,
}


@pytest.mark.mariadb
def test_tables_py_matches_the_faithful_ddl(mariadb_url: str) -> None:
    """tables.py and schema.sql describe the same columns, in the same order, nullable alike, same types."""
    office = OpenDentalOffice.open(mariadb_url, create=True)
    office.close()
    engine = create_engine(mariadb_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) == set(t.metadata.tables)
        for name, table in t.metadata.tables.items():
            live = inspector.get_columns(name)
            assert [(c["name"], c["nullable"]) for c in live] == [
                (c.name, c.nullable) for c in table.columns
            ], name
            for live_column, column in zip(live, table.columns, strict=True):
                family = type(live_column["type"]).__name__.lower()
                assert type(column.type) is _TYPE_FAMILIES[family], (
                    f"{name}.{column.name}: {family} vs {column.type!r}"
                )
                if isinstance(column.type, satypes.String) and not isinstance(column.type, satypes.Text):
                    live_type: Any = live_column["type"]
                    assert live_type.length == column.type.length, f"{name}.{column.name}"
    finally:
        engine.dispose()


def test_open_seeds_a_working_office_and_is_idempotent(office_url: str, clock: Clock) -> None:
    first = OpenDentalOffice.open(office_url, create=True, clock=clock)
    pat_num = first.add_patient("Smith", "Anna")
    first.close()
    again = OpenDentalOffice.open(office_url, create=True, clock=clock)  # tables exist: nothing re-seeded
    try:
        assert [(d.def_num, d.item_name, d.is_hidden) for d in again.definitions(10)] == [
            (CHECK, "Check", False),
            (CASH, "Cash", False),
            (CREDIT_CARD, "Credit Card", False),
            (NOT_USED_HIDDEN, "Not used", True),
        ]
        assert {(d.def_num, d.item_value) for d in again.definitions(1)} >= {(1, "-"), (2, "+")}
        assert again.preference("ApiPaymentType") == "69"
        assert again.preference("RigorousAccounting") == "1"
        with pytest.raises(KeyError):
            again.preference("NoSuchPreference")
        assert again.count("definition") == 19
        assert again.patient(pat_num) is not None
        assert again.integrity_problems() == []
    finally:
        again.close()


def test_add_patient_is_its_own_guarantor_with_the_default_provider(office: OpenDentalOffice) -> None:
    head = office.add_patient("Smith", "Anna", chart_number="A100", birthdate=date(1980, 5, 1))
    child = office.add_patient("Smith", "Ben", guarantor=head, pri_prov=2)
    anna, ben = office.patient(head), office.patient(child)
    assert anna is not None and ben is not None
    assert (anna.guarantor, anna.pri_prov, anna.birthdate, anna.chart_number) == (
        head,
        1,
        date(1980, 5, 1),
        "A100",
    )
    assert (ben.guarantor, ben.pri_prov, ben.birthdate) == (head, 2, None)
    office.set_patient_status(child, 4)
    assert office.patient(child).pat_status == 4  # type: ignore[union-attr]
    assert office.patient(9999) is None


# --- POST /payments ---------------------------------------------------------------------------------------


def test_payment_is_one_row_one_split_and_a_securitylog_entry(office: OpenDentalOffice, raw: Engine) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    made = office.create_payment(
        NewOdPayment(pat_num=pat_num, pay_amt=Decimal("129.99"), pay_note="[wb:pi_1]", pay_type=CREDIT_CARD),
        user_num=1,
    )
    assert made == office.payment(made.pay_num)
    assert (made.pay_amt, made.pay_type, made.pay_date, made.date_entry) == (
        Decimal("129.99"),
        71,
        TODAY,
        TODAY,
    )
    assert (made.payment_source, made.pay_note, made.clinic_num, made.amount_cents) == (
        13,
        "[wb:pi_1]",
        0,
        12999,
    )

    payment = row_of(raw, t.payment, PayNum=made.pay_num)
    assert payment["PayAmt"] == 129.99 and payment["PaymentSource"] == PAYMENT_SOURCE_API
    assert (
        payment["SecUserNumEntry"],
        payment["DepositNum"],
        payment["ProcessStatus"],
        payment["IsSplit"],
    ) == (1, 0, 0, 0)
    assert as_date(payment["RecurringChargeDate"]) == date(1, 1, 1)

    (split,) = rows_of(raw, t.paysplit, PayNum=made.pay_num)
    assert split["SplitAmt"] == 129.99 and split["PatNum"] == pat_num
    assert as_date(split["DatePay"]) == TODAY and as_date(split["DateEntry"]) == TODAY
    # RigorousAccounting 1 (AutoSplitOnly): unallocated prepayment split, no provider (CreateSinglePaySplitForWeb)
    assert (split["ProvNum"], split["UnearnedType"], split["ProcNum"], split["PayPlanNum"]) == (
        0,
        PREPAYMENT,
        0,
        0,
    )
    assert split["SecurityHash"] == "" and as_date(split["ProcDate"]) == date(1, 1, 1)

    (log,) = office.securitylog(pat_num=pat_num)
    assert (log.perm_type, log.log_source, log.fkey, log.user_num, log.log_date_time) == (
        15,
        23,
        made.pay_num,
        1,
        START,
    )
    assert (
        log.log_text
        == "Payment created through API for Smith, Anna with payment type 'Credit Card', amount '$129.99'"
    )
    assert office.paid_total(pat_num) == Decimal("129.99")
    assert office.integrity_problems() == []


def test_dont_enforce_credits_the_patients_provider_then_the_practice_default_then_the_first(
    office: OpenDentalOffice,
) -> None:
    office.set_preference("RigorousAccounting", "2")
    with_prov = office.add_patient("Smith", "Anna", pri_prov=2)
    without = office.add_patient("Jones", "Carl", pri_prov=0)
    splits = [
        office.paysplits(
            pay_num=office.create_payment(NewOdPayment(pat_num=p, pay_amt=Decimal("10"))).pay_num
        )[0]
        for p in (with_prov, without)
    ]
    assert [(s.prov_num, s.unearned_type) for s in splits] == [(2, 0), (1, 0)]
    office.set_preference("PracticeDefaultProv", "0")
    hidden_first = office.add_provider("ZZZ", hidden=True)
    payment = office.create_payment(NewOdPayment(pat_num=without, pay_amt=Decimal("10")))
    assert office.paysplits(pay_num=payment.pay_num)[0].prov_num == 1  # first shown provider (DOC)
    assert hidden_first > 2


def test_defaults_come_from_preferences_and_the_patient(office: OpenDentalOffice) -> None:
    clinic = office.add_clinic("EAST")
    pat_num = office.add_patient("Smith", "Anna", clinic_num=clinic)
    office.set_preference("ApiPaymentType", str(CASH))
    made = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("5.00")))
    assert (made.pay_type, made.clinic_num) == (CASH, clinic)
    assert office.paysplits(pay_num=made.pay_num)[0].clinic_num == clinic
    other = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("5.00"), clinic_num=0))
    assert other.clinic_num == 0


def test_payment_refusals_carry_open_dentals_answers(office: OpenDentalOffice, clock: Clock) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    deleted = office.add_patient("Gone", "Greg", pat_status=4)

    def refused(**fields: Any) -> OdError:
        with pytest.raises(OdError) as caught:
            office.create_payment(NewOdPayment(**{"pat_num": pat_num, "pay_amt": Decimal("10"), **fields}))
        return caught.value

    assert isinstance(refused(pat_num=424242), OdNotFound)
    assert refused(pat_num=deleted).message == "Patient not found."
    assert isinstance(refused(pay_amt=Decimal("0")), OdBadRequest)
    assert isinstance(refused(pay_amt=Decimal("1.005")), OdBadRequest)
    assert isinstance(refused(pay_type=PREPAYMENT), OdBadRequest)  # a definition, but not Category 10
    assert isinstance(refused(pay_type=999999), OdBadRequest)
    assert refused(pay_date=TODAY + timedelta(days=1)).message == "Payment Date must not be a future date."
    assert refused(pay_date=date(1879, 12, 31)).message == "Invalid Payment Date"
    assert isinstance(refused(clinic_num=77), OdBadRequest)
    assert office.count("payment") == office.count("paysplit") == office.count("securitylog") == 0

    hidden = office.create_payment(
        NewOdPayment(pat_num=pat_num, pay_amt=Decimal("1"), pay_type=NOT_USED_HIDDEN)
    )
    assert hidden.pay_type == NOT_USED_HIDDEN  # hidden payment types stay valid
    office.set_preference("FutureTransDatesAllowed", "1")
    future = office.create_payment(
        NewOdPayment(pat_num=pat_num, pay_amt=Decimal("1"), pay_date=TODAY + timedelta(days=3))
    )
    assert office.paysplits(pay_num=future.pay_num)[0].date_pay == TODAY + timedelta(days=3)
    clock.advance(days=1)
    backdated = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("1"), pay_date=TODAY))
    assert (backdated.pay_date, backdated.date_entry) == (TODAY, TODAY + timedelta(days=1))


def test_a_negative_payment_has_one_negative_unallocated_split(office: OpenDentalOffice) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    made = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("-20.50")))
    (split,) = office.paysplits(pay_num=made.pay_num)
    assert (made.pay_amt, split.split_amt, split.prov_num, split.unearned_type) == (
        Decimal("-20.50"),
        Decimal("-20.50"),
        0,
        PREPAYMENT,
    )
    assert office.paid_total(pat_num) == Decimal("-20.50")


def test_a_batch_keeps_order_and_a_refused_entry_does_not_stop_the_others(office: OpenDentalOffice) -> None:
    pats = [office.add_patient(f"P{i}", "X") for i in range(3)]
    batch = [
        NewOdPayment(pat_num=pats[0], pay_amt=Decimal("0.10")),
        NewOdPayment(pat_num=999999, pay_amt=Decimal("1")),
        NewOdPayment(pat_num=pats[1], pay_amt=Decimal("0.20")),
        NewOdPayment(pat_num=pats[2], pay_amt=Decimal("0")),
        NewOdPayment(pat_num=pats[2], pay_amt=Decimal("1234567.89"), pay_type=CASH),
    ]
    results = office.create_payments(batch, user_num=1)
    assert [type(r).__name__ for r in results] == [
        "OdPayment",
        "OdNotFound",
        "OdPayment",
        "OdBadRequest",
        "OdPayment",
    ]
    made = [r for r in results if isinstance(r, OdPayment)]
    assert [p.pay_num for p in made] == sorted(p.pay_num for p in made)
    assert [office.payment(p.pay_num) for p in made] == made
    assert office.count("payment") == office.count("paysplit") == office.count("securitylog") == 3
    assert sum((office.paid_total(p) for p in pats), Decimal(0)) == Decimal("1234568.19")
    assert office.create_payments([]) == []
    assert office.integrity_problems() == []


def test_many_threads_share_one_office(office: OpenDentalOffice) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    made: list[OdPayment] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(10):
                made.append(
                    office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal(f"{worker}.{i:02d}")))
                )
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({p.pay_num for p in made}) == 80 == office.count("payment") == office.count("paysplit")
    assert office.paid_total(pat_num) == sum((p.pay_amt for p in made), Decimal(0))


# --- POST /payments/Refund and PUT /payments ------------------------------------------------------------------


def test_refund_mirrors_the_original_with_negated_splits_and_no_note(
    office: OpenDentalOffice, clock: Clock, raw: Engine
) -> None:
    office.set_preference("RigorousAccounting", "2")
    pat_num = office.add_patient("Smith", "Anna", pri_prov=2)
    original = office.create_payment(
        NewOdPayment(pat_num=pat_num, pay_amt=Decimal("129.99"), pay_type=CREDIT_CARD, pay_note="[wb:pi_1]"),
        user_num=1,
    )
    clock.advance(days=2)
    refund = office.refund_payment(original.pay_num, user_num=1)
    later = TODAY + timedelta(days=2)
    assert (refund.pay_amt, refund.pay_type, refund.pat_num, refund.clinic_num) == (
        Decimal("-129.99"),
        71,
        pat_num,
        0,
    )
    assert (refund.pay_date, refund.date_entry, refund.pay_note, refund.payment_source) == (
        later,
        later,
        "",
        0,
    )
    (split,) = office.paysplits(pay_num=refund.pay_num)
    assert (split.split_amt, split.pat_num, split.prov_num, split.unearned_type, split.date_pay) == (
        Decimal("-129.99"),
        pat_num,
        2,
        0,
        later,
    )
    refund_row = row_of(raw, t.payment, PayNum=refund.pay_num)
    assert (refund_row["CheckNum"], refund_row["BankBranch"], refund_row["MerchantFee"]) == ("", "", 0)
    assert office.payment(original.pay_num) == original  # the original is never changed
    assert office.paid_total(pat_num) == Decimal("0.00")
    logs = office.securitylog(pat_num=pat_num)
    assert [(log.perm_type, log.fkey) for log in logs] == [(15, original.pay_num), (15, refund.pay_num)]

    with pytest.raises(OdBadRequest):
        office.refund_payment(refund.pay_num)  # a refund of a refund
    second = office.refund_payment(original.pay_num)  # Open Dental allows it (research §9.1)
    assert second.pay_amt == Decimal("-129.99")
    assert office.paid_total(pat_num) == Decimal("-129.99")
    with pytest.raises(OdNotFound):
        office.refund_payment(424242)
    assert office.integrity_problems() == []


def test_a_payment_on_a_payment_plan_cannot_be_refunded(office: OpenDentalOffice, raw: Engine) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    made = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("50")))
    with raw.begin() as conn:
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == made.pay_num).values(PayPlanNum=7))
    with pytest.raises(OdBadRequest):
        office.refund_payment(made.pay_num)
    assert office.count("payment") == 1


def test_put_overwrites_the_note_and_logs_an_edit(office: OpenDentalOffice) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    made = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("10"), pay_note="old"))
    edited = office.update_payment_note(made.pay_num, "[wb:re_1] refund", user_num=1)
    assert edited.pay_note == "[wb:re_1] refund"
    assert {k: v for k, v in vars_of(edited).items() if k != "pay_note"} == {
        k: v for k, v in vars_of(made).items() if k != "pay_note"
    }
    assert office.securitylog()[-1].perm_type == 16
    with pytest.raises(OdNotFound):
        office.update_payment_note(424242, "x")


def vars_of(payment: OdPayment) -> dict[str, Any]:
    return {name: getattr(payment, name) for name in payment.__slots__}


def test_get_payments_filters_on_patient_and_entry_date_in_paynum_order(
    office: OpenDentalOffice, clock: Clock
) -> None:
    anna, carl = office.add_patient("Smith", "Anna"), office.add_patient("Jones", "Carl")
    first = office.create_payment(NewOdPayment(pat_num=anna, pay_amt=Decimal("1")))
    clock.advance(days=1)
    second = office.create_payment(NewOdPayment(pat_num=carl, pay_amt=Decimal("2")))
    third = office.create_payment(NewOdPayment(pat_num=anna, pay_amt=Decimal("3"), pay_date=TODAY))
    assert office.payments() == [first, second, third]
    assert office.payments(pat_num=anna) == [first, third]
    assert office.payments(date_entry_from=TODAY + timedelta(days=1)) == [second, third]
    assert office.payments(pat_num=anna, date_entry_from=TODAY + timedelta(days=1)) == [third]
    assert office.payments(limit=1, offset=1) == [second]


def test_chart_number_search_is_a_prefix_match_including_deleted_patients(office: OpenDentalOffice) -> None:
    exact = office.add_patient("A", "One", chart_number="A100")
    longer = office.add_patient("A", "Two", chart_number="A1001")
    deleted = office.add_patient("A", "Three", chart_number="A100", pat_status=4)
    office.add_patient("B", "Four", chart_number="B100")
    office.add_patient("C", "Five", chart_number="A1X0")
    assert [p.pat_num for p in office.patients_by_chart_number("A100")] == [exact, longer, deleted]
    assert office.patients_by_chart_number("A1_0") == []  # no SQL wildcards leak through
    assert office.patients_by_chart_number("Z") == []


# --- POST /adjustments, /tasks, /commlogs -----------------------------------------------------------------------


def test_adjustment_sign_must_match_its_type(office: OpenDentalOffice) -> None:
    pat_num = office.add_patient("Smith", "Anna", pri_prov=2)
    adj_num = office.create_adjustment(pat_num, MISC_NEG_ADJ, Decimal("-3.50"), TODAY, "card fee", user_num=1)
    (adjustment,) = office.adjustments(pat_num)
    assert (adjustment.adj_num, adjustment.adj_amt, adjustment.adj_type, adjustment.adj_note) == (
        adj_num,
        Decimal("-3.50"),
        MISC_NEG_ADJ,
        "card fee",
    )
    assert (adjustment.prov_num, adjustment.clinic_num, adjustment.proc_date, adjustment.date_entry) == (
        2,
        0,
        TODAY,
        TODAY,
    )
    assert office.securitylog()[-1].perm_type == 17
    office.create_adjustment(pat_num, MISC_POS_ADJ, Decimal("2.00"), TODAY - timedelta(days=5), "")
    for adj_type, amount in (
        (MISC_NEG_ADJ, "3.50"),
        (MISC_POS_ADJ, "-2.00"),
        (MISC_POS_ADJ, "0"),
        (CHECK, "1"),
    ):
        with pytest.raises(OdBadRequest):
            office.create_adjustment(pat_num, adj_type, Decimal(amount), TODAY, "")
    with pytest.raises(OdBadRequest):
        office.create_adjustment(pat_num, MISC_POS_ADJ, Decimal("1"), TODAY + timedelta(days=1), "")
    with pytest.raises(OdNotFound):
        office.create_adjustment(424242, MISC_POS_ADJ, Decimal("1"), TODAY, "")
    assert len(office.adjustments(pat_num)) == 2


def test_task_on_a_patient_marks_the_list_owners_unread(office: OpenDentalOffice) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    billing = office.add_task_list("Billing")
    clerk = office.add_user("clerk", task_list_in_box=billing)
    task_num = office.create_task(billing, "Refund of unknown payment pi_9", 1, pat_num=pat_num)
    (task,) = office.tasks(task_list_num=billing)
    assert (task.task_num, task.object_type, task.key_num, task.user_num, task.task_status) == (
        task_num,
        1,
        pat_num,
        1,
        0,
    )
    assert (task.date_time_entry, task.priority_def_num) == (START, 258)
    assert office.task_unread_users(task_num) == [clerk]
    plain = office.create_task(
        1, "Check the deposit", 1
    )  # Admin's own inbox, written as Admin: nobody to notify
    assert office.tasks(task_list_num=1)[0].object_type == 0
    assert office.task_unread_users(plain) == []
    assert office.task_unread_users(office.create_task(1, "For Admin", 1, acting_user_num=clerk)) == [1]
    with pytest.raises(OdNotFound):
        office.create_task(424242, "x", 1)
    with pytest.raises(OdNotFound):
        office.create_task(billing, "x", 424242)
    with pytest.raises(OdBadRequest):
        office.create_task(billing, "", 1)


def test_commlog_defaults_are_the_apis(office: OpenDentalOffice, raw: Engine) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    default = office.create_commlog(pat_num, "Payment of $10.00 posted", user_num=1)
    financial = office.create_commlog(pat_num, "Refund posted", comm_type=COMMLOG_FINANCIAL, mode=0)
    logs = office.commlogs(pat_num)
    assert [(c.commlog_num, c.comm_type, c.mode, c.sent_or_received, c.comm_source) for c in logs] == [
        (default, COMMLOG_MISC, 3, 1, 7),
        (financial, COMMLOG_FINANCIAL, 0, 1, 7),
    ]
    assert logs[0].comm_date_time == START and logs[0].user_num == 1
    assert row_of(raw, t.commlog, CommlogNum=default)["Signature"] == ""
    with pytest.raises(OdBadRequest):
        office.create_commlog(pat_num, "x", comm_type=CHECK)
    with pytest.raises(OdBadRequest):
        office.create_commlog(pat_num, "")
    with pytest.raises(OdNotFound):
        office.create_commlog(424242, "x")


# --- the integrity checks themselves ---------------------------------------------------------------------------


def test_integrity_problems_finds_what_open_dentals_maintenance_finds(
    office: OpenDentalOffice, raw: Engine
) -> None:
    pat_num = office.add_patient("Smith", "Anna")
    sums = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("10.00")))
    dated = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("5.00")))
    bare = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("1.00")))
    rounding = office.create_payment(NewOdPayment(pat_num=pat_num, pay_amt=Decimal("0.30")))
    with raw.begin() as conn:
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == sums.pay_num).values(SplitAmt=9.99))
        conn.execute(
            t.paysplit.update().where(t.paysplit.c.PayNum == dated.pay_num).values(DatePay=date(2020, 1, 1))
        )
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == bare.pay_num).values(PayNum=424242))
        # 0.1 + 0.2 != 0.3 as doubles, but Open Dental compares ROUND(x, 2): not a problem
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == rounding.pay_num).values(SplitAmt=0.1))
    with raw.begin() as conn:
        split = dict(
            conn.execute(select(t.paysplit).where(t.paysplit.c.PayNum == rounding.pay_num)).one()._mapping
        )
        split.pop("SplitNum")
        conn.execute(t.paysplit.insert().values({**split, "SplitAmt": 0.2}))
    problems = office.integrity_problems()
    assert len(problems) == 4, problems
    assert any(f"payment {bare.pay_num} has no paysplit" in p for p in problems)
    assert any(f"payment {sums.pay_num}: PayAmt 10.00 but its splits sum to 9.99" in p for p in problems)
    assert any("has no payment" in p for p in problems)
    assert any("DatePay 2020-01-01" in p for p in problems)
    with raw.begin() as conn:  # repair, so the fixture's closing check passes
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == sums.pay_num).values(SplitAmt=10.0))
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == dated.pay_num).values(DatePay=TODAY))
        conn.execute(t.paysplit.update().where(t.paysplit.c.PayNum == 424242).values(PayNum=bare.pay_num))
    assert office.integrity_problems() == []


# --- MyISAM: what older offices run ------------------------------------------------------------------------------


@pytest.mark.mariadb
def test_myisam_office_takes_payments_and_refunds(mariadb_url: str, clock: Clock) -> None:
    office = OpenDentalOffice.open(mariadb_url, create=True, storage_engine="MyISAM", clock=clock)
    engine = create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            engines = set(
                conn.execute(
                    text("SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
                ).scalars()
            )
        assert engines == {"MyISAM"}
        pat_num = office.add_patient("Smith", "Anna")
        results = office.create_payments(
            [
                NewOdPayment(pat_num=pat_num, pay_amt=Decimal("10")),
                NewOdPayment(pat_num=1, pay_amt=Decimal("0")),
            ]
        )
        made = results[0]
        assert isinstance(made, OdPayment) and isinstance(results[1], OdError)
        office.refund_payment(made.pay_num)
        assert office.paid_total(pat_num) == Decimal("0.00")
        assert office.count("payment") == office.count("paysplit") == 2
        assert office.integrity_problems() == []
    finally:
        engine.dispose()
        office.close()


# --- small pieces ------------------------------------------------------------------------------------------------


def test_money_round_trips_every_cent_through_a_double() -> None:
    for cents in (*range(-100_000, 100_001, 7), 10**11 + 1, -(10**11) - 99):
        amount = (Decimal(cents) / 100).quantize(Decimal("0.01"))
        assert to_double(amount) == cents_to_double(cents)
        assert from_double(to_double(amount)) == amount
        assert double_to_cents(cents_to_double(cents)) == cents
    assert from_double(0.1 + 0.2) == Decimal("0.30")
    for bad in (Decimal("1.001"), Decimal("NaN"), Decimal("Infinity")):
        with pytest.raises(MoneyError):
            to_double(bad)


def test_split_sql_keeps_quoted_semicolons_and_drops_comments() -> None:
    script = "CREATE TABLE a (x int); -- a comment; with a semicolon\nINSERT INTO a VALUES ('x;y', 'it''s -- not'),\n (1);"
    assert split_sql(script) == [
        "CREATE TABLE a (x int)",
        "INSERT INTO a VALUES ('x;y', 'it''s -- not'),\n (1)",
    ]


def test_now_follows_the_clock_or_the_projects_utc_clock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from datetime import UTC

    office = OpenDentalOffice.open(f"sqlite:///{tmp_path}/clock.db", tz=UTC)
    try:
        monkeypatch.setattr(
            "ledgerlink.opendental.office.utcnow", lambda: datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
        )
        assert office.now() == datetime(2025, 1, 2, 3, 4, 5)
        office.clock = lambda: START
        assert office.now() == START and office.today() == TODAY
    finally:
        office.close()
