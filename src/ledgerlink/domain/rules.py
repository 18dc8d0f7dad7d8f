"""The writeback decision: what one transaction means for one PMS connection.

This is the one place that maps a transaction to a ledger entry (SPEC section 3). It is pure: the engine
gathers the facts (the transaction, the connection's rules, the patient's account number, the state of the
original posting) and acts on the returned decision.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, time
from zoneinfo import ZoneInfo

from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents
from ledgerlink.domain.report import ReportCategory
from ledgerlink.domain.transactions import PaymentType, Transaction, TransactionKind


class AmountMode(enum.StrEnum):
    NET = "net"  # default: what reaches the bank (seed 004)
    GROSS = "gross"
    GROSS_PLUS_FEE = "gross_plus_fee"  # gross payment plus a separate fee entry


class TypeHandling(enum.StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"  # staff post these by hand; ledgerlink lists them as held
    OFF = "off"


class Timing(enum.StrEnum):
    INSTANT = "instant"
    DAILY = "daily"


class SkipReason(enum.StrEnum):
    DECLINED = "declined"
    BEFORE_START_DATE = "before_start_date"
    TYPE_DISABLED = "type_disabled"
    HELD_FOR_MANUAL = "held_for_manual"
    VOIDED_BEFORE_POSTING = "voided_before_posting"
    CHARGEBACKS_DISABLED = "chargebacks_disabled"
    ORIGINAL_NOT_WRITTEN_BACK = "original_not_written_back"
    NOTHING_TO_POST = "nothing_to_post"

    @property
    def description(self) -> str:
        return _SKIP_DESCRIPTIONS[self]


_SKIP_DESCRIPTIONS = {
    SkipReason.DECLINED: "Declined: nothing to post",
    SkipReason.BEFORE_START_DATE: "Before the connection's start date",
    SkipReason.TYPE_DISABLED: "Writeback is off for this payment type",
    SkipReason.HELD_FOR_MANUAL: "Held for manual posting by staff",
    SkipReason.VOIDED_BEFORE_POSTING: "Voided before it was posted: nothing posted",
    SkipReason.CHARGEBACKS_DISABLED: "Chargeback writeback is off for this connection",
    SkipReason.ORIGINAL_NOT_WRITTEN_BACK: "The original payment was not written back by ledgerlink",
    SkipReason.NOTHING_TO_POST: "Nothing to post: the amount after fees is zero",
}


@dataclass(frozen=True, slots=True)
class WritebackRules:
    """A connection's writeback settings (SPEC section 2, seeds 002 and 004)."""

    timezone: str = "America/New_York"
    start_date: date | None = None
    amount_mode: AmountMode = AmountMode.NET
    chargebacks_enabled: bool = True
    timing: Timing = Timing.INSTANT
    daily_time: time = time(18, 0)
    type_handling: dict[PaymentType, TypeHandling] = field(default_factory=dict)

    def handling_for(self, payment_type: PaymentType) -> TypeHandling:
        return self.type_handling.get(payment_type, TypeHandling.AUTOMATIC)

    def local_date(self, txn: Transaction) -> date:
        """The posting date: the transaction's date in the practice's time zone, not UTC's."""
        return txn.occurred_at.astimezone(ZoneInfo(self.timezone)).date()


class OriginalState(enum.Enum):
    """Where the original payment of a refund, void or chargeback stands on this connection."""

    UNKNOWN = "unknown"  # no such transaction
    NOT_YET_POSTED = "not_yet_posted"  # pending or failed: it may still be posted
    IN_FLIGHT = "in_flight"  # a write is under way or its outcome is uncertain
    POSTED = "posted"
    HANDLED_ELSEWHERE = "handled_elsewhere"  # cleared (posted by hand) or skipped


@dataclass(frozen=True, slots=True)
class OriginalPosting:
    state: OriginalState
    writeback_id: int | None = None
    pms_ref: str | None = None
    posted_cents: Cents = 0
    reversed_cents: Cents = 0
    category: ReportCategory | None = None
    fee_cents: Cents = 0  # the separate fee entry posted with it (gross plus fee)

    @property
    def remaining_cents(self) -> Cents:
        return self.posted_cents - self.reversed_cents


@dataclass(frozen=True, slots=True)
class PostPayment:
    amount_cents: Cents
    fee_cents: Cents  # separate fee entry (gross plus fee), else 0
    posting_date: date
    category: ReportCategory


@dataclass(frozen=True, slots=True)
class PostReversal:
    amount_cents: Cents  # positive; the ledger entry is negative
    original_writeback_id: int
    original_pms_ref: str
    is_full: bool
    posting_date: date
    category: ReportCategory
    fee_cents: Cents = 0  # the original's fee entry to take back too: a voided payment was never charged one


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason
    category: ReportCategory
    amount_cents: Cents
    cancels_original_writeback_id: int | None = None  # a void of an unposted sale cancels the sale too


@dataclass(frozen=True, slots=True)
class Fail:
    code: LoadErrorCode
    message: str
    category: ReportCategory
    amount_cents: Cents


@dataclass(frozen=True, slots=True)
class Defer:
    """Wait: the original is being written right now; decide again once its outcome is recorded."""

    reason: str


Decision = PostPayment | PostReversal | Skip | Fail | Defer


def ledger_amount(txn: Transaction, mode: AmountMode) -> Cents:
    """The amount that goes on the ledger under the connection's net/gross rule."""
    return txn.net_cents if mode is AmountMode.NET else txn.gross_cents


def category_of(txn: Transaction) -> ReportCategory:
    """The sync report line a transaction belongs to when it is written back (seed 000)."""
    match txn.kind:
        case TransactionKind.SALE:
            return ReportCategory.RECURRING if txn.payment_type.is_recurring else ReportCategory.SALES
        case TransactionKind.REFUND:
            return ReportCategory.REFUNDS
        case TransactionKind.VOID:
            return ReportCategory.VOIDS
        case TransactionKind.CHARGEBACK:
            return ReportCategory.CHARGEBACKS
        case TransactionKind.DECLINE:
            return ReportCategory.DECLINED


def decide(
    txn: Transaction,
    rules: WritebackRules,
    *,
    account_number: str | None,
    original: OriginalPosting | None = None,
) -> Decision:
    """Decide what to write for `txn` on a connection with `rules`.

    `account_number` is the patient's PMS account number on this connection (None when missing).
    `original` describes the original posting for refunds, voids and chargebacks.
    """
    amount = ledger_amount(txn, rules.amount_mode)
    if txn.kind is TransactionKind.DECLINE:
        return Skip(SkipReason.DECLINED, ReportCategory.DECLINED, txn.gross_cents)

    posting_date = rules.local_date(txn)
    if rules.start_date is not None and posting_date < rules.start_date:
        return Skip(SkipReason.BEFORE_START_DATE, ReportCategory.SKIPPED_BY_SETTINGS, amount)

    handling = rules.handling_for(txn.payment_type)
    if handling is TypeHandling.OFF:
        return Skip(SkipReason.TYPE_DISABLED, ReportCategory.SKIPPED_BY_SETTINGS, amount)

    if txn.kind is TransactionKind.SALE:
        if handling is TypeHandling.MANUAL:
            return Skip(SkipReason.HELD_FOR_MANUAL, ReportCategory.HELD_FOR_MANUAL, amount)
        if not account_number:
            return Fail(
                LoadErrorCode.INVALID_PATIENT_ID,
                "The patient has no PMS account number",
                ReportCategory.INVALID_PATIENT_ID,
                amount,
            )
        if amount <= 0:  # no PMS takes a zero payment; an entry of nothing is not a failure either
            return Skip(SkipReason.NOTHING_TO_POST, ReportCategory.SKIPPED_BY_SETTINGS, amount)
        fee = txn.fee_cents if rules.amount_mode is AmountMode.GROSS_PLUS_FEE else 0
        return PostPayment(amount, fee, posting_date, category_of(txn))

    return _decide_reversal(txn, rules, amount, posting_date, handling, original)


def _decide_reversal(
    txn: Transaction,
    rules: WritebackRules,
    amount: Cents,
    posting_date: date,
    handling: TypeHandling,
    original: OriginalPosting | None,
) -> Decision:
    category = category_of(txn)
    if txn.kind is TransactionKind.CHARGEBACK and not rules.chargebacks_enabled:
        return Skip(SkipReason.CHARGEBACKS_DISABLED, ReportCategory.SKIPPED_BY_SETTINGS, amount)
    if original is None or original.state is OriginalState.UNKNOWN:
        return Fail(
            LoadErrorCode.ORIGINAL_NOT_FOUND,
            f"The original payment of this {txn.kind.value} is not known to ledgerlink",
            category,
            amount,
        )
    if original.state is OriginalState.IN_FLIGHT:
        return Defer("the original payment is being written")
    if original.state is OriginalState.HANDLED_ELSEWHERE:
        # The original was posted by hand or deliberately not written back: its reversal belongs to
        # the same person, or the ledger would show a refund of a payment that is not there.
        return Skip(SkipReason.ORIGINAL_NOT_WRITTEN_BACK, ReportCategory.HELD_FOR_MANUAL, amount)
    if original.state is OriginalState.NOT_YET_POSTED:
        if txn.kind is TransactionKind.VOID:
            return Skip(
                SkipReason.VOIDED_BEFORE_POSTING,
                category,
                amount,
                cancels_original_writeback_id=original.writeback_id,
            )
        return Fail(
            LoadErrorCode.ORIGINAL_NOT_POSTED,
            f"The original payment of this {txn.kind.value} was never posted to the PMS",
            category,
            amount,
        )
    if handling is TypeHandling.MANUAL:
        return Skip(SkipReason.HELD_FOR_MANUAL, ReportCategory.HELD_FOR_MANUAL, amount)

    assert original.writeback_id is not None and original.pms_ref is not None
    remaining = original.remaining_cents
    if remaining <= 0:
        return Fail(
            LoadErrorCode.REFUND_EXCEEDS_ORIGINAL,
            "The original payment has already been fully reversed",
            category,
            amount,
        )
    # A void reverses whatever is left; refunds and chargebacks reverse their own amount, capped at what is
    # left so that the processor's fee arithmetic can never push a ledger below zero for one payment.
    reverse = remaining if txn.kind is TransactionKind.VOID else min(amount, remaining)
    if reverse <= 0:
        return Skip(SkipReason.NOTHING_TO_POST, ReportCategory.SKIPPED_BY_SETTINGS, amount)
    return PostReversal(
        amount_cents=reverse,
        original_writeback_id=original.writeback_id,
        original_pms_ref=original.pms_ref,
        is_full=reverse == original.posted_cents and original.reversed_cents == 0,
        posting_date=posting_date,
        category=category,
        # Processors keep their fee on refunds and chargebacks, so the fee entry stays for those.
        fee_cents=original.fee_cents if txn.kind is TransactionKind.VOID else 0,
    )
