"""The writeback decision, rule by rule: what one transaction means for one PMS connection (SPEC section 3)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory
from ledgerlink.domain.rules import (
    AmountMode,
    Defer,
    Fail,
    OriginalPosting,
    OriginalState,
    PostPayment,
    PostReversal,
    Skip,
    SkipReason,
    TypeHandling,
    WritebackRules,
    decide,
)
from ledgerlink.domain.transactions import PaymentType, Transaction, TransactionKind

NOON_UTC = datetime(2026, 3, 10, 17, 0, tzinfo=UTC)  # 12:00 in Chicago, same date everywhere in the US
ACCOUNT = "1042"
ORIGINAL_WB = 7
ORIGINAL_REF = "5001"
REVERSAL_KINDS = [TransactionKind.REFUND, TransactionKind.VOID, TransactionKind.CHARGEBACK]
REPORT_LINE = {
    TransactionKind.REFUND: ReportCategory.REFUNDS,
    TransactionKind.VOID: ReportCategory.VOIDS,
    TransactionKind.CHARGEBACK: ReportCategory.CHARGEBACKS,
}


def txn(
    kind: TransactionKind = TransactionKind.SALE,
    *,
    payment_type: PaymentType = PaymentType.TERMINAL,
    gross: int = 10000,
    fee: int = 300,
    at: datetime = NOON_UTC,
    original_id: int | None = None,
) -> Transaction:
    if kind.reverses_original and original_id is None:
        original_id = 1
    return Transaction(
        id=2 if kind.reverses_original else 1,
        kind=kind,
        payment_type=payment_type,
        gross_cents=gross,
        fee_cents=fee,
        net_cents=gross - fee,
        occurred_at=at,
        processor_ref=f"{kind.value}_1",
        original_id=original_id,
    )


def refund(
    amount: int,
    kind: TransactionKind = TransactionKind.REFUND,
    *,
    payment_type: PaymentType = PaymentType.TERMINAL,
    at: datetime = NOON_UTC,
) -> Transaction:
    """A refund (or void, or chargeback) of `amount`; processors return no fee on it, so net equals gross."""
    return txn(kind, payment_type=payment_type, gross=amount, fee=0, at=at)


def posted(amount: int = 9700, reversed_cents: int = 0) -> OriginalPosting:
    return OriginalPosting(
        OriginalState.POSTED,
        writeback_id=ORIGINAL_WB,
        pms_ref=ORIGINAL_REF,
        posted_cents=amount,
        reversed_cents=reversed_cents,
    )


CHICAGO = WritebackRules(timezone="America/Chicago")


# --- sales: amounts --------------------------------------------------------------------------------------


def test_sale_posts_the_net_amount_by_default() -> None:
    assert WritebackRules().amount_mode is AmountMode.NET
    decision = decide(txn(gross=10000, fee=300), CHICAGO, account_number=ACCOUNT)
    assert decision == PostPayment(
        amount_cents=9700, fee_cents=0, posting_date=date(2026, 3, 10), category=ReportCategory.SALES
    )


def test_gross_mode_posts_the_gross_amount_and_no_fee_entry() -> None:
    rules = WritebackRules(timezone="America/Chicago", amount_mode=AmountMode.GROSS)
    decision = decide(txn(gross=10000, fee=300), rules, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert (decision.amount_cents, decision.fee_cents) == (10000, 0)


def test_gross_plus_fee_posts_the_gross_amount_and_a_separate_fee_entry() -> None:
    rules = WritebackRules(timezone="America/Chicago", amount_mode=AmountMode.GROSS_PLUS_FEE)
    decision = decide(txn(gross=10000, fee=300), rules, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert (decision.amount_cents, decision.fee_cents) == (10000, 300)


def test_gross_plus_fee_with_no_fee_posts_no_fee_entry() -> None:
    rules = WritebackRules(amount_mode=AmountMode.GROSS_PLUS_FEE)
    decision = decide(txn(gross=5000, fee=0), rules, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert (decision.amount_cents, decision.fee_cents) == (5000, 0)


@pytest.mark.parametrize("kind", [TransactionKind.SALE, TransactionKind.REFUND])
def test_nothing_left_after_fees_posts_nothing(kind: TransactionKind) -> None:
    zero = txn(kind, gross=300, fee=300)
    decision = decide(zero, CHICAGO, account_number=ACCOUNT, original=posted())
    assert isinstance(decision, Skip) and decision.reason is SkipReason.NOTHING_TO_POST


# --- sales: report lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("payment_type", [PaymentType.PAYMENT_PLAN, PaymentType.MEMBERSHIP])
def test_plan_and_membership_auto_debits_are_recurring_payments(payment_type: PaymentType) -> None:
    decision = decide(txn(payment_type=payment_type), CHICAGO, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert decision.category is ReportCategory.RECURRING


@pytest.mark.parametrize(
    "payment_type",
    [PaymentType.TERMINAL, PaymentType.INSURANCE, PaymentType.COLLECTION, PaymentType.ONLINE],
)
def test_one_off_payments_are_sales(payment_type: PaymentType) -> None:
    decision = decide(txn(payment_type=payment_type), CHICAGO, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert decision.category is ReportCategory.SALES


@pytest.mark.parametrize("payment_type", [PaymentType.PAYMENT_PLAN, PaymentType.MEMBERSHIP])
def test_refund_of_a_recurring_payment_is_a_refund(payment_type: PaymentType) -> None:
    decision = decide(
        refund(1000, payment_type=payment_type), CHICAGO, account_number=ACCOUNT, original=posted()
    )
    assert isinstance(decision, PostReversal)
    assert decision.category is ReportCategory.REFUNDS


# --- declines --------------------------------------------------------------------------------------------


def test_decline_is_counted_with_its_gross_amount_and_never_posted() -> None:
    decision = decide(txn(TransactionKind.DECLINE, gross=4500, fee=0), CHICAGO, account_number=ACCOUNT)
    assert decision == Skip(SkipReason.DECLINED, ReportCategory.DECLINED, 4500)


def test_decline_counts_its_gross_amount_even_under_the_net_rule() -> None:
    decision = decide(txn(TransactionKind.DECLINE, gross=4500, fee=150), CHICAGO, account_number=ACCOUNT)
    assert decision == Skip(SkipReason.DECLINED, ReportCategory.DECLINED, 4500)


@pytest.mark.parametrize(
    "rules",
    [
        WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.OFF}),
        WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.MANUAL}),
        WritebackRules(start_date=date(2030, 1, 1)),
    ],
    ids=["type_off", "type_manual", "before_start_date"],
)
def test_decline_is_always_counted_as_declined(rules: WritebackRules) -> None:
    decision = decide(txn(TransactionKind.DECLINE, gross=4500, fee=0), rules, account_number=None)
    assert isinstance(decision, Skip)
    assert (decision.reason, decision.category) == (SkipReason.DECLINED, ReportCategory.DECLINED)


def test_decline_without_a_patient_account_is_still_just_declined() -> None:
    decision = decide(txn(TransactionKind.DECLINE), CHICAGO, account_number=None)
    assert isinstance(decision, Skip) and decision.reason is SkipReason.DECLINED


# --- start date and the practice-local posting date ------------------------------------------------------


def test_sale_on_the_start_date_is_posted() -> None:
    rules = WritebackRules(timezone="America/Chicago", start_date=date(2026, 3, 10))
    assert isinstance(decide(txn(), rules, account_number=ACCOUNT), PostPayment)


def test_sale_before_the_start_date_is_skipped_by_settings() -> None:
    rules = WritebackRules(timezone="America/Chicago", start_date=date(2026, 3, 11))
    decision = decide(txn(gross=10000, fee=300), rules, account_number=ACCOUNT)
    assert decision == Skip(SkipReason.BEFORE_START_DATE, ReportCategory.SKIPPED_BY_SETTINGS, 9700)


def test_sale_at_2330_local_the_day_before_the_start_date_is_skipped_though_utc_is_already_the_start_date() -> (
    None
):
    at = datetime(2026, 3, 2, 5, 30, tzinfo=UTC)  # 23:30 CST on March 1st
    assert at.date() == date(2026, 3, 2)
    rules = WritebackRules(timezone="America/Chicago", start_date=date(2026, 3, 2))
    decision = decide(txn(at=at), rules, account_number=ACCOUNT)
    assert isinstance(decision, Skip) and decision.reason is SkipReason.BEFORE_START_DATE


def test_sale_just_after_local_midnight_on_the_start_date_is_posted_though_utc_is_still_the_day_before() -> (
    None
):
    at = datetime(2026, 1, 14, 11, 30, tzinfo=UTC)  # 00:30 NZDT on January 15th
    rules = WritebackRules(timezone="Pacific/Auckland", start_date=date(2026, 1, 15))
    decision = decide(txn(at=at), rules, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert decision.posting_date == date(2026, 1, 15)


def test_sale_at_2330_in_auckland_the_day_before_the_start_date_is_skipped() -> None:
    at = datetime(2026, 1, 14, 10, 30, tzinfo=UTC)  # 23:30 NZDT on January 14th
    rules = WritebackRules(timezone="Pacific/Auckland", start_date=date(2026, 1, 15))
    decision = decide(txn(at=at), rules, account_number=ACCOUNT)
    assert isinstance(decision, Skip) and decision.reason is SkipReason.BEFORE_START_DATE


@pytest.mark.parametrize(
    ("timezone", "at", "local"),
    [
        ("America/Chicago", datetime(2026, 3, 2, 5, 59, tzinfo=UTC), date(2026, 3, 1)),  # 23:59 CST
        ("America/Chicago", datetime(2026, 3, 2, 6, 0, tzinfo=UTC), date(2026, 3, 2)),  # 00:00 CST
        ("America/Chicago", datetime(2026, 7, 2, 4, 59, tzinfo=UTC), date(2026, 7, 1)),  # 23:59 CDT
        ("America/Chicago", datetime(2026, 7, 2, 5, 0, tzinfo=UTC), date(2026, 7, 2)),  # 00:00 CDT
        (
            "America/Chicago",
            datetime(2026, 3, 8, 5, 30, tzinfo=UTC),
            date(2026, 3, 7),
        ),  # night of spring forward
        ("America/Chicago", datetime(2026, 11, 1, 6, 30, tzinfo=UTC), date(2026, 11, 1)),  # the repeated hour
        ("Pacific/Auckland", datetime(2026, 1, 14, 10, 59, tzinfo=UTC), date(2026, 1, 14)),  # 23:59 NZDT
        ("Pacific/Auckland", datetime(2026, 1, 14, 11, 0, tzinfo=UTC), date(2026, 1, 15)),  # 00:00 NZDT
        ("Pacific/Auckland", datetime(2026, 7, 14, 11, 59, tzinfo=UTC), date(2026, 7, 14)),  # 23:59 NZST
        ("Pacific/Auckland", datetime(2026, 7, 14, 12, 0, tzinfo=UTC), date(2026, 7, 15)),  # 00:00 NZST
    ],
)
def test_posting_date_is_the_practice_local_date_around_midnight(
    timezone: str, at: datetime, local: date
) -> None:
    decision = decide(txn(at=at), WritebackRules(timezone=timezone), account_number=ACCOUNT)
    assert isinstance(decision, PostPayment)
    assert decision.posting_date == local


def test_reversal_is_dated_on_its_own_local_date_not_the_originals() -> None:
    at = datetime(2026, 3, 12, 3, 0, tzinfo=UTC)  # 22:00 CDT on March 11th
    decision = decide(refund(1000, at=at), CHICAGO, account_number=ACCOUNT, original=posted())
    assert isinstance(decision, PostReversal)
    assert decision.posting_date == date(2026, 3, 11)


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_dated_before_the_start_date_is_skipped(kind: TransactionKind) -> None:
    rules = WritebackRules(timezone="America/Chicago", start_date=date(2026, 4, 1))
    decision = decide(refund(1000, kind), rules, account_number=ACCOUNT, original=posted())
    assert isinstance(decision, Skip) and decision.reason is SkipReason.BEFORE_START_DATE
    assert decision.category is ReportCategory.SKIPPED_BY_SETTINGS


# --- per payment type: off and manual --------------------------------------------------------------------


def test_payment_type_switched_off_is_skipped_by_settings() -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.OFF})
    decision = decide(txn(gross=10000, fee=300), rules, account_number=ACCOUNT)
    assert decision == Skip(SkipReason.TYPE_DISABLED, ReportCategory.SKIPPED_BY_SETTINGS, 9700)


def test_payment_type_held_for_manual_posting_is_listed_not_posted() -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.MANUAL})
    decision = decide(txn(gross=10000, fee=300), rules, account_number=ACCOUNT)
    assert decision == Skip(SkipReason.HELD_FOR_MANUAL, ReportCategory.HELD_FOR_MANUAL, 9700)


def test_manual_sale_without_an_account_number_is_held_not_failed() -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.MANUAL})
    decision = decide(txn(), rules, account_number=None)
    assert isinstance(decision, Skip) and decision.reason is SkipReason.HELD_FOR_MANUAL


def test_rules_for_one_payment_type_leave_the_others_automatic() -> None:
    rules = WritebackRules(
        type_handling={PaymentType.TERMINAL: TypeHandling.MANUAL, PaymentType.INSURANCE: TypeHandling.OFF}
    )
    assert rules.handling_for(PaymentType.PAYMENT_PLAN) is TypeHandling.AUTOMATIC
    decision = decide(txn(payment_type=PaymentType.PAYMENT_PLAN), rules, account_number=ACCOUNT)
    assert isinstance(decision, PostPayment) and decision.category is ReportCategory.RECURRING


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_of_a_payment_type_switched_off_is_skipped_by_settings(kind: TransactionKind) -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.OFF})
    decision = decide(refund(1000, kind), rules, account_number=ACCOUNT, original=posted())
    assert isinstance(decision, Skip) and decision.reason is SkipReason.TYPE_DISABLED


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_of_a_posted_payment_of_a_manual_type_is_held_for_manual(kind: TransactionKind) -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.MANUAL})
    decision = decide(refund(1000, kind), rules, account_number=ACCOUNT, original=posted())
    assert decision == Skip(SkipReason.HELD_FOR_MANUAL, ReportCategory.HELD_FOR_MANUAL, 1000)


# --- Invalid Patient ID ----------------------------------------------------------------------------------


@pytest.mark.parametrize("account_number", [None, ""])
def test_sale_for_a_patient_without_an_account_number_fails_invalid_patient_id(
    account_number: str | None,
) -> None:
    decision = decide(txn(gross=10000, fee=300), CHICAGO, account_number=account_number)
    assert isinstance(decision, Fail)
    assert decision.code is LoadErrorCode.INVALID_PATIENT_ID
    assert decision.category is ReportCategory.INVALID_PATIENT_ID
    assert decision.amount_cents == 9700
    assert "account number" in decision.message


def test_sale_skipped_by_settings_does_not_need_an_account_number() -> None:
    rules = WritebackRules(type_handling={PaymentType.TERMINAL: TypeHandling.OFF})
    assert isinstance(decide(txn(), rules, account_number=None), Skip)


def test_reversal_is_written_against_the_original_posting_without_the_refund_rows_account_number() -> None:
    decision = decide(refund(1000), CHICAGO, account_number=None, original=posted())
    assert isinstance(decision, PostReversal)


# --- refunds ---------------------------------------------------------------------------------------------


def test_partial_refund_of_a_posted_payment_reverses_the_refund_amount() -> None:
    decision = decide(refund(2500), CHICAGO, account_number=ACCOUNT, original=posted(9700))
    assert decision == PostReversal(
        amount_cents=2500,
        original_writeback_id=ORIGINAL_WB,
        original_pms_ref=ORIGINAL_REF,
        is_full=False,
        posting_date=date(2026, 3, 10),
        category=ReportCategory.REFUNDS,
    )


def test_full_refund_of_a_posted_payment_is_a_full_reversal() -> None:
    decision = decide(refund(9700), CHICAGO, account_number=ACCOUNT, original=posted(9700))
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (9700, True)


def test_refund_of_the_gross_amount_of_a_payment_posted_net_is_capped_at_what_was_posted() -> None:
    decision = decide(refund(10000), CHICAGO, account_number=ACCOUNT, original=posted(9700))
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (9700, True)


def test_second_refund_is_capped_at_the_remaining_amount() -> None:
    decision = decide(
        refund(5000), CHICAGO, account_number=ACCOUNT, original=posted(9700, reversed_cents=5000)
    )
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (4700, False)


def test_refund_within_the_remaining_amount_is_not_capped() -> None:
    decision = decide(
        refund(1000), CHICAGO, account_number=ACCOUNT, original=posted(9700, reversed_cents=5000)
    )
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (1000, False)


def test_refund_uses_its_gross_amount_under_the_gross_rule() -> None:
    rules = WritebackRules(amount_mode=AmountMode.GROSS)
    decision = decide(
        txn(TransactionKind.REFUND, gross=3000, fee=90), rules, account_number=ACCOUNT, original=posted(10000)
    )
    assert isinstance(decision, PostReversal) and decision.amount_cents == 3000


def test_refund_uses_its_net_amount_under_the_net_rule() -> None:
    decision = decide(
        txn(TransactionKind.REFUND, gross=3000, fee=90), CHICAGO, account_number=ACCOUNT, original=posted()
    )
    assert isinstance(decision, PostReversal) and decision.amount_cents == 2910


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_of_a_fully_reversed_payment_fails_refund_exceeds_original(kind: TransactionKind) -> None:
    decision = decide(
        refund(1000, kind), CHICAGO, account_number=ACCOUNT, original=posted(9700, reversed_cents=9700)
    )
    assert isinstance(decision, Fail)
    assert decision.code is LoadErrorCode.REFUND_EXCEEDS_ORIGINAL
    assert decision.category is REPORT_LINE[kind]
    assert decision.amount_cents == 1000


@pytest.mark.parametrize("kind", [TransactionKind.REFUND, TransactionKind.CHARGEBACK])
def test_reversal_of_a_payment_never_posted_fails_original_not_posted(kind: TransactionKind) -> None:
    original = OriginalPosting(OriginalState.NOT_YET_POSTED, writeback_id=ORIGINAL_WB)
    decision = decide(refund(1000, kind), CHICAGO, account_number=ACCOUNT, original=original)
    assert isinstance(decision, Fail)
    assert decision.code is LoadErrorCode.ORIGINAL_NOT_POSTED
    assert "never posted" in decision.message


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
@pytest.mark.parametrize(
    "original", [None, OriginalPosting(OriginalState.UNKNOWN)], ids=["no_original", "unknown_original"]
)
def test_reversal_of_an_unknown_payment_fails_original_not_found(
    kind: TransactionKind, original: OriginalPosting | None
) -> None:
    decision = decide(refund(1000, kind), CHICAGO, account_number=ACCOUNT, original=original)
    assert isinstance(decision, Fail)
    assert decision.code is LoadErrorCode.ORIGINAL_NOT_FOUND
    assert decision.amount_cents == 1000


# --- voids -----------------------------------------------------------------------------------------------


def test_void_of_a_posted_sale_reverses_it_in_full() -> None:
    void = txn(TransactionKind.VOID, gross=10000, fee=300)
    decision = decide(void, CHICAGO, account_number=ACCOUNT, original=posted(9700))
    assert decision == PostReversal(
        amount_cents=9700,
        original_writeback_id=ORIGINAL_WB,
        original_pms_ref=ORIGINAL_REF,
        is_full=True,
        posting_date=date(2026, 3, 10),
        category=ReportCategory.VOIDS,
    )


def test_void_after_a_partial_refund_reverses_only_the_remainder() -> None:
    void = txn(TransactionKind.VOID, gross=10000, fee=300)
    decision = decide(void, CHICAGO, account_number=ACCOUNT, original=posted(9700, reversed_cents=2000))
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (7700, False)


def test_void_reverses_what_was_posted_whatever_its_own_amount() -> None:
    void = txn(TransactionKind.VOID, gross=1, fee=0)
    decision = decide(void, CHICAGO, account_number=ACCOUNT, original=posted(9700))
    assert isinstance(decision, PostReversal) and decision.amount_cents == 9700


def test_void_of_unposted_sale_posts_nothing_and_cancels_the_sale() -> None:
    void = txn(TransactionKind.VOID, gross=10000, fee=300)
    original = OriginalPosting(OriginalState.NOT_YET_POSTED, writeback_id=ORIGINAL_WB)
    decision = decide(void, CHICAGO, account_number=ACCOUNT, original=original)
    assert decision == Skip(
        SkipReason.VOIDED_BEFORE_POSTING,
        ReportCategory.VOIDS,
        9700,
        cancels_original_writeback_id=ORIGINAL_WB,
    )


def test_void_of_unposted_sale_needs_no_account_number() -> None:
    original = OriginalPosting(OriginalState.NOT_YET_POSTED, writeback_id=ORIGINAL_WB)
    decision = decide(txn(TransactionKind.VOID), CHICAGO, account_number=None, original=original)
    assert isinstance(decision, Skip) and decision.reason is SkipReason.VOIDED_BEFORE_POSTING


# --- chargebacks -----------------------------------------------------------------------------------------


def test_chargeback_of_a_posted_payment_is_reversed_when_enabled() -> None:
    assert WritebackRules().chargebacks_enabled
    decision = decide(
        refund(9700, TransactionKind.CHARGEBACK), CHICAGO, account_number=ACCOUNT, original=posted()
    )
    assert isinstance(decision, PostReversal)
    assert decision.category is ReportCategory.CHARGEBACKS
    assert (decision.amount_cents, decision.is_full) == (9700, True)


def test_partial_chargeback_reverses_its_amount() -> None:
    decision = decide(
        refund(1200, TransactionKind.CHARGEBACK), CHICAGO, account_number=ACCOUNT, original=posted()
    )
    assert isinstance(decision, PostReversal)
    assert (decision.amount_cents, decision.is_full) == (1200, False)


@pytest.mark.parametrize(
    "original",
    [posted(), None, OriginalPosting(OriginalState.NOT_YET_POSTED, writeback_id=ORIGINAL_WB)],
    ids=["posted", "unknown", "not_posted"],
)
def test_chargeback_is_skipped_by_settings_when_chargebacks_are_disabled(
    original: OriginalPosting | None,
) -> None:
    rules = WritebackRules(chargebacks_enabled=False)
    decision = decide(
        refund(9700, TransactionKind.CHARGEBACK), rules, account_number=ACCOUNT, original=original
    )
    assert decision == Skip(SkipReason.CHARGEBACKS_DISABLED, ReportCategory.SKIPPED_BY_SETTINGS, 9700)


@pytest.mark.parametrize("kind", [TransactionKind.REFUND, TransactionKind.VOID])
def test_disabling_chargebacks_leaves_refunds_and_voids_alone(kind: TransactionKind) -> None:
    rules = WritebackRules(chargebacks_enabled=False)
    decision = decide(refund(1000, kind), rules, account_number=ACCOUNT, original=posted())
    assert isinstance(decision, PostReversal)


# --- originals that are not settled ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_waits_while_its_original_is_being_written(kind: TransactionKind) -> None:
    original = OriginalPosting(OriginalState.IN_FLIGHT, writeback_id=ORIGINAL_WB)
    assert isinstance(decide(refund(1000, kind), CHICAGO, account_number=ACCOUNT, original=original), Defer)


@pytest.mark.parametrize("kind", REVERSAL_KINDS)
def test_reversal_of_a_payment_posted_by_hand_or_skipped_is_left_to_staff(kind: TransactionKind) -> None:
    original = OriginalPosting(OriginalState.HANDLED_ELSEWHERE, writeback_id=ORIGINAL_WB)
    decision = decide(refund(1000, kind), CHICAGO, account_number=ACCOUNT, original=original)
    assert decision == Skip(SkipReason.ORIGINAL_NOT_WRITTEN_BACK, ReportCategory.HELD_FOR_MANUAL, 1000)


# --- explanations the front desk reads -------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(SkipReason))
def test_every_skip_reason_has_a_description(reason: SkipReason) -> None:
    assert reason.description


@pytest.mark.parametrize("code", list(LoadErrorCode))
def test_every_load_error_code_tells_staff_what_to_do(code: LoadErrorCode) -> None:
    assert code.explanation.endswith(".")
