"""What the payment platform processed: transaction kinds, payment types and the transaction itself."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from ledgerlink.domain.money import Cents


class TransactionKind(enum.StrEnum):
    SALE = "sale"
    REFUND = "refund"
    VOID = "void"
    CHARGEBACK = "chargeback"
    DECLINE = "decline"

    @property
    def reverses_original(self) -> bool:
        """Refunds, voids and chargebacks act on an earlier sale rather than standing alone."""
        return self in (TransactionKind.REFUND, TransactionKind.VOID, TransactionKind.CHARGEBACK)


class PaymentType(enum.StrEnum):
    """The channel a payment came through; writeback rules are set per payment type (seed 004)."""

    TERMINAL = "terminal"
    PAYMENT_PLAN = "payment_plan"
    INSURANCE = "insurance"
    MEMBERSHIP = "membership"
    COLLECTION = "collection"
    ONLINE = "online"

    @property
    def is_recurring(self) -> bool:
        """Plan and membership auto-debits are the report's "Recurring Payments" (seed 000)."""
        return self in (PaymentType.PAYMENT_PLAN, PaymentType.MEMBERSHIP)

    @property
    def label(self) -> str:
        return _PAYMENT_TYPE_LABELS[self]


_PAYMENT_TYPE_LABELS = {
    PaymentType.TERMINAL: "Card terminal",
    PaymentType.PAYMENT_PLAN: "Payment plan",
    PaymentType.INSURANCE: "Insurance",
    PaymentType.MEMBERSHIP: "Membership",
    PaymentType.COLLECTION: "Balance collection",
    PaymentType.ONLINE: "Online",
}


@dataclass(frozen=True, slots=True)
class Transaction:
    """A processed transaction as the writeback rules see it (amounts are positive cents)."""

    id: int
    kind: TransactionKind
    payment_type: PaymentType
    gross_cents: Cents
    fee_cents: Cents
    net_cents: Cents
    occurred_at: datetime  # timezone-aware, UTC
    processor_ref: str
    original_id: int | None = None
