"""The sandbox connector: writes into a `SandboxLedger`, with knobs that make it behave like a real office.

The knobs exist to prove exactly-once: `failure_rate` refuses calls before anything is written,
`lost_response_rate` commits and then loses the answer (the worst case for duplicates), `latency_ms` slows
every call, and `crash_after_writes` kills the whole process with SIGKILL right after the Nth committed
write, before ledgerlink can record it (used by the crash tests; never set it in real use).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from ledgerlink.connectors.base import (
    ConnectorLimits,
    PaymentEntry,
    PmsAlert,
    PmsError,
    PmsOutcomeUnknown,
    PmsPatient,
    PmsRejected,
    PmsUnavailable,
    PmsWrite,
    ReversalEntry,
    WriteResult,
)
from ledgerlink.connectors.sandbox.ledger import LedgerRuleViolation, NewPayment, SandboxLedger
from ledgerlink.domain.errors import LoadErrorCode

DEFAULT_PAYMENT_TYPE_NAMES = {
    "terminal": "Credit Card",
    "payment_plan": "Payment Plan",
    "insurance": "Insurance",
    "membership": "Membership",
    "collection": "Collection",
    "online": "Online Payment",
}


class SandboxSettings(BaseModel):
    """A sandbox connection's settings (stored on the connection as JSON)."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    account_number: Literal["patnum", "chartnumber"] = "patnum"
    payment_type_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PAYMENT_TYPE_NAMES))
    batch_size: int = Field(default=200, ge=1, le=5000)
    requests_per_second: float | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    lost_response_rate: float = Field(default=0.0, ge=0, le=1)
    crash_after_writes: int | None = None
    seed: int | None = None


def _bad_amount(amount_cents: int, fee_cents: int) -> str:
    """Open Dental refuses such entries; the sandbox answers for the one entry instead of failing the batch."""
    return f"the PMS refused the amounts: payment {amount_cents} cents, fee {fee_cents} cents"


def marker(idempotency_key: str) -> str:
    """The text that carries a writeback's key inside the PMS record's note."""
    return f"[{idempotency_key}]"


class SandboxConnector:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.limits = ConnectorLimits(settings.requests_per_second, settings.batch_size)
        self.ledger = SandboxLedger(settings.path)
        self._random = random.Random(settings.seed)
        self._writes = 0
        self._pay_types: dict[str, int] = {}

    async def close(self) -> None:
        self.ledger.close()

    async def _call(self) -> None:
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
        if self.settings.failure_rate and self._random.random() < self.settings.failure_rate:
            raise PmsUnavailable("sandbox PMS unavailable (injected failure)")

    def _committed(self, writes: int) -> None:
        self._writes += writes
        limit = self.settings.crash_after_writes
        if limit is not None and self._writes >= limit:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.settings.lost_response_rate and self._random.random() < self.settings.lost_response_rate:
            raise PmsOutcomeUnknown("sandbox PMS committed the write but the response was lost (injected)")

    def _pay_type(self, payment_type: str) -> int:
        if payment_type not in self._pay_types:
            name = self.settings.payment_type_names.get(payment_type)
            if name is None:
                raise PmsError(
                    f"no PMS payment type configured for {payment_type!r}", LoadErrorCode.PMS_CONFIGURATION
                )
            try:
                self._pay_types[payment_type] = self.ledger.payment_type_num(name)
            except LedgerRuleViolation as exc:
                raise PmsError(str(exc), LoadErrorCode.PMS_CONFIGURATION) from None
        return self._pay_types[payment_type]

    async def find_patient(self, account_number: str) -> PmsPatient | None:
        await self._call()
        pat_num, _ = self.ledger.resolve_account(account_number, self.settings.account_number)
        patient = self.ledger.patient(pat_num) if pat_num else None
        if patient is None:
            return None
        return PmsPatient(
            str(patient.pat_num), account_number, patient.first_name, patient.last_name, patient.birth_date
        )

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        await self._call()
        results: list[WriteResult | None] = []
        accepted: list[tuple[int, PaymentEntry, NewPayment]] = []  # (position in results, entry, payment)
        with self.ledger.transaction() as db:
            accounts = self.ledger.resolve_accounts(
                [entry.account_number for entry in entries], self.settings.account_number
            )
            for entry in entries:
                pat_num, why = accounts[entry.account_number]
                if pat_num is None:
                    results.append(PmsRejected(why, LoadErrorCode.INVALID_PATIENT_ID))
                    continue
                if entry.amount_cents <= 0 or entry.fee_cents < 0:
                    results.append(PmsRejected(_bad_amount(entry.amount_cents, entry.fee_cents)))
                    continue
                try:
                    pay_type = self._pay_type(entry.payment_type)
                except PmsError as exc:
                    results.append(exc)
                    continue
                note = f"{entry.note} {marker(entry.idempotency_key)}"
                payment = NewPayment(pat_num, entry.amount_cents, entry.posting_date, pay_type, note)
                accepted.append((len(results), entry, payment))
                results.append(None)
            pay_nums = self.ledger.insert_payments(db, [payment for _, _, payment in accepted])
            for (position, entry, payment), pay_num in zip(accepted, pay_nums, strict=True):
                if entry.fee_cents:
                    self.ledger.insert_adjustment(
                        db,
                        payment.pat_num,
                        entry.fee_cents,
                        entry.posting_date,
                        f"Processing fee {marker(entry.idempotency_key)}",
                    )
                results[position] = PmsWrite(str(pay_num), entry.amount_cents)
        self._committed(len(accepted))
        return cast(list[WriteResult], results)  # every placeholder was filled above

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        await self._call()
        results: list[WriteResult | None] = []
        accepted: list[tuple[int, ReversalEntry, NewPayment]] = []
        with self.ledger.transaction() as db:
            for entry in entries:
                original = (
                    self.ledger.payment(int(entry.original_pms_ref))
                    if entry.original_pms_ref.isdigit()
                    else None
                )
                if original is None:
                    results.append(PmsRejected(f"payment {entry.original_pms_ref} not found in the PMS"))
                    continue
                if entry.amount_cents <= 0 or entry.fee_cents < 0:
                    results.append(PmsRejected(_bad_amount(entry.amount_cents, entry.fee_cents)))
                    continue
                note = f"{entry.note} {marker(entry.idempotency_key)}"
                payment = NewPayment(
                    original.pat_num,
                    -entry.amount_cents,
                    entry.posting_date,
                    original.pay_type,
                    note,
                    refund_of=original.pay_num,
                )
                accepted.append((len(results), entry, payment))
                results.append(None)
            pay_nums = self.ledger.insert_payments(db, [payment for _, _, payment in accepted])
            for (position, entry, payment), pay_num in zip(accepted, pay_nums, strict=True):
                if entry.fee_cents:
                    # A void takes the processing fee back too: the fee entry is mirrored, as the payment is.
                    self.ledger.insert_adjustment(
                        db,
                        payment.pat_num,
                        -entry.fee_cents,
                        entry.posting_date,
                        f"Processing fee returned {marker(entry.idempotency_key)}",
                    )
                results[position] = PmsWrite(str(pay_num), -entry.amount_cents)
        self._committed(len(accepted))
        return cast(list[WriteResult], results)  # every placeholder was filled above

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        await self._call()
        pat_num: int | None
        if isinstance(entry, ReversalEntry):
            # A reversal lands on its original payment's patient, whichever account the refund row named.
            ref = entry.original_pms_ref
            original = self.ledger.payment(int(ref)) if ref.isdigit() else None
            pat_num = original.pat_num if original is not None else None
        else:
            pat_num, _ = self.ledger.resolve_account(entry.account_number, self.settings.account_number)
        if pat_num is None:
            return None
        found = self.ledger.find_payment_by_marker(pat_num, marker(entry.idempotency_key))
        return None if found is None else PmsWrite(str(found.pay_num), found.amount_cents)

    async def raise_alert(self, alert: PmsAlert) -> None:
        await self._call()
        pat_num = None
        if alert.account_number:
            pat_num, _ = self.ledger.resolve_account(alert.account_number, self.settings.account_number)
        self.ledger.add_task(f"{alert.title}: {alert.message}", pat_num)
        if pat_num:
            self.ledger.add_commlog(pat_num, f"ledgerlink: {alert.title}. {alert.message}")
