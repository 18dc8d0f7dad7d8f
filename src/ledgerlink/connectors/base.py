"""The connector interface: what the engine needs from any PMS, and nothing more.

A connector writes one entry per call or a batch per call (it declares which through `limits`), and tells the
engine three kinds of failure apart, because exactly-once depends on it:

- `PmsRejected`: the PMS answered no. Nothing was written; retrying unchanged will fail again.
- `PmsUnavailable`: nothing was written (connection refused, 429, 503 before processing). Retry later.
- `PmsOutcomeUnknown`: the request may have been applied (timeout after sending, connection lost while
  waiting for the answer). The engine must look the write up by its idempotency key before writing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol, runtime_checkable

from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents


@dataclass(frozen=True, slots=True)
class ConnectorLimits:
    requests_per_second: float | None  # None: no limit (or the connector paces its own requests)
    batch_size: int  # entries per post call; 1 for PMSs that take one row per request
    # How long one call may take before its outcome is unknown. A connector that makes several paced
    # requests per call (a refund and its note at one request per 5 s) needs longer than a fast one.
    call_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class PmsPatient:
    pms_id: str
    account_number: str
    first_name: str
    last_name: str
    birth_date: date | None


def same_name(a: str, b: str) -> bool:
    """Names as staff would compare them: ignoring case and surrounding spaces."""
    return a.strip().casefold() == b.strip().casefold()


def is_suggestion(patient: PmsPatient, last_name: str, first_name: str, birth_date: date | None) -> bool:
    """Whether a PMS patient answers `search_patients`: same last name, and the same first name or birth date."""
    if not last_name.strip() or not same_name(patient.last_name, last_name):
        return False
    return same_name(patient.first_name, first_name) or (
        birth_date is not None and patient.birth_date == birth_date
    )


@dataclass(frozen=True, slots=True)
class PaymentEntry:
    idempotency_key: str  # travels into the PMS record so an uncertain write can be found again
    account_number: str
    amount_cents: Cents
    fee_cents: Cents  # a separate fee entry when > 0 (gross plus fee)
    posting_date: date
    payment_type: str
    note: str


@dataclass(frozen=True, slots=True)
class ReversalEntry:
    idempotency_key: str
    account_number: str
    original_pms_ref: str
    amount_cents: Cents  # positive; the PMS records it as a negative payment
    is_full: bool
    posting_date: date
    note: str
    # > 0: also take back the original's separate fee entry (a void under gross plus fee).
    fee_cents: Cents = 0
    # The account the original payment was posted to: a refund row may name another (or no) patient.
    original_account_number: str = ""


@dataclass(frozen=True, slots=True)
class PmsWrite:
    """A write the PMS confirmed (or that was found there after an uncertain outcome)."""

    pms_ref: str
    amount_cents: Cents


@dataclass(frozen=True, slots=True)
class PmsAlert:
    title: str
    message: str
    account_number: str | None = None  # when set, the note also lands on the patient


class PmsError(Exception):
    def __init__(self, message: str, code: LoadErrorCode = LoadErrorCode.PMS_REJECTED) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PmsRejected(PmsError):
    """The PMS refused the write; nothing was written."""


class PmsUnavailable(PmsError):
    """The PMS could not be reached or asked us to slow down; nothing was written."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message, LoadErrorCode.PMS_UNREACHABLE)
        self.retry_after = retry_after


class PmsOutcomeUnknown(PmsError):
    """The write may or may not have happened."""

    def __init__(self, message: str) -> None:
        super().__init__(message, LoadErrorCode.PMS_UNREACHABLE)


WriteResult = PmsWrite | PmsError
"""Per-entry result of a batch: the confirmed write, or the error for that entry alone."""


@runtime_checkable
class PmsConnector(Protocol):
    limits: ConnectorLimits

    async def find_patient(self, account_number: str) -> PmsPatient | None:
        """The patient with this account number, or None when the PMS has no such (active) patient."""
        ...

    async def search_patients(
        self, last_name: str, first_name: str, birth_date: date | None
    ) -> list[PmsPatient]:
        """The PMS's active patients with this last name and either this first name or this birth date
        (names compared ignoring case and surrounding spaces; no birth date: by name only), each with the
        account number ledgerlink would use for them. For staff picking the patient of an Invalid Patient
        ID: a suggestion, never a match ledgerlink acts on by itself."""
        ...

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        """Post up to `limits.batch_size` payments; one result per entry, in order.

        Raises `PmsUnavailable` or `PmsOutcomeUnknown` when the whole call failed.
        """
        ...

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        """Post negative payments linked to their originals; same contract as `post_payments`."""
        ...

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        """An earlier write of this entry (found by its idempotency key), or None when the PMS has none.

        The whole entry is passed because where to look differs by PMS and kind: a payment sits on the
        account it names, a reversal on the patient of its original payment, whatever the refund row says.
        """
        ...

    async def raise_alert(self, alert: PmsAlert) -> None:
        """Leave a task for the office and, for a known patient, a note on the patient."""
        ...

    async def close(self) -> None: ...
