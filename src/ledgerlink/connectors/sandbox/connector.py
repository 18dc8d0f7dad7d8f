"""The sandbox connector: an Open Dental office in process, with knobs that make it behave like a real one.

The office is `OpenDentalOffice` (ledgerlink.opendental.office): Open Dental's own schema and write rules, on
a SQLite file (the default) or a MariaDB database (`database_url`). The connector adds only what a
connector does: turning account numbers into patients, payment and adjustment type names into
definitions, and ledgerlink's entries into Open Dental writes carrying the writeback's marker:

- a payment: `create_payments`, one transaction per batch, PayNote = note + " [ll-wb-<id>]";
- a reversal (full or partial): a NEGATIVE payment on the original payment's patient, with the original's
  PayType and a note naming it ("... (reverses PayNum 123) [ll-wb-9]"), as Open Dental's own UI refund
  posts "the credit as a negative payment";
- a fee under gross plus fee: an adjustment of a '+' type (a '-' type to take it back on a void), AdjNote
  carrying the marker. Open Dental writes it in a transaction of its own, after the payment's: see
  `find_write`, which completes an entry whose fee adjustment is missing;
- an alert: a task in the task list (and a commlog on the patient when the alert names a known account).

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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Engine, bindparam, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ledgerlink.clock import time_zone
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
    is_suggestion,
)
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents
from ledgerlink.opendental import tables as t
from ledgerlink.opendental.money import cents_to_decimal
from ledgerlink.opendental.office import (
    DEF_CAT_ADJ_TYPES,
    DEF_CAT_PAYMENT_TYPES,
    PAT_STATUS_DELETED,
    NewOdPayment,
    OdDefinition,
    OdError,
    OdNotFound,
    OdPayment,
    OpenDentalOffice,
)

DEFAULT_PAYMENT_TYPE_NAMES = {
    "terminal": "Credit Card",
    "payment_plan": "Payment Plan",
    "insurance": "Insurance",
    "membership": "Membership",
    "collection": "Collection",
    "online": "Online Payment",
}
ALERT_USER_NUM: Final = 1  # the office's Admin user (schema.sql seeds user 1, whose inbox is task list 1)
_MAX_PAT_NUM: Final = 2**63 - 1  # PatNum is a bigint
_IN_CHUNK: Final = 500  # values per `IN (...)` list


class SandboxSettings(BaseModel):
    """A sandbox connection's settings (stored on the connection as JSON)."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None  # the office's SQLite file (the registry makes it absolute)
    database_url: str | None = None  # instead of `path`: an office on MariaDB, `mysql+pymysql://...`
    account_number: Literal["patnum", "chartnumber"] = "patnum"
    # The office's time zone: its "today" decides what is a future PayDate. `connection add` sets the
    # practice's zone; None: this machine's.
    timezone: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return value if value is None else time_zone(value).key

    payment_type_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PAYMENT_TYPE_NAMES))
    # Adjustment types (definition Category 1) for gross-plus-fee fee entries: a '+' type for the fee, a
    # '-' type to take it back on a void (Open Dental requires an adjustment's sign to match its type).
    fee_adjustment_type_name: str = Field(default="Misc Pos Adjustment", min_length=1)
    fee_reversal_adjustment_type_name: str = Field(default="Misc Neg Adjustment", min_length=1)
    task_list_num: int = Field(default=1, gt=0)  # where alerts land
    batch_size: int = Field(default=200, ge=1, le=5000)
    requests_per_second: float | None = None
    latency_ms: float = Field(default=0.0, ge=0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    lost_response_rate: float = Field(default=0.0, ge=0, le=1)
    crash_after_writes: int | None = None
    seed: int | None = None

    @field_validator("database_url")
    @classmethod
    def _open_dental_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL, e.g. mysql+pymysql://user:password@host/opendental"
            ) from None
        if backend not in ("sqlite", "mysql"):
            raise ValueError(f"the sandbox office runs on SQLite or MariaDB/MySQL, not {backend}")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> SandboxSettings:
        if self.path is None and self.database_url is None:
            raise ValueError("give the office's SQLite file (path) or a database_url")
        return self

    @property
    def url(self) -> str:
        """The office's SQLAlchemy URL: `database_url` when given, else the SQLite file at `path`."""
        if self.database_url is not None:
            return self.database_url
        assert self.path is not None  # the validator makes sure of one of them
        return f"sqlite:///{self.path}"


def open_sandbox_office(url: str, timezone: str | None = None) -> OpenDentalOffice:
    """The sandbox's office at `url`, created when missing, with ledgerlink's default payment types.

    Open Dental's seed has Check, Cash and Credit Card; the sandbox office also has a type for each of
    ledgerlink's payment types (`DEFAULT_PAYMENT_TYPE_NAMES`), added once, so that the default mapping
    posts. A name mapped to a type the office lacks is still a configuration error, as in a real office.
    """
    office = OpenDentalOffice.open(url, create=True, tz=ZoneInfo(timezone) if timezone else None)
    try:
        present = {d.item_name for d in office.definitions(DEF_CAT_PAYMENT_TYPES)}
        for name in dict.fromkeys(DEFAULT_PAYMENT_TYPE_NAMES.values()):
            if name not in present:
                office.add_definition(DEF_CAT_PAYMENT_TYPES, name)
    except BaseException:
        office.close()
        raise
    return office


def marker(idempotency_key: str) -> str:
    """The text that carries a writeback's key inside the PMS record's note."""
    return f"[{idempotency_key}]"


def payment_note(note: str, idempotency_key: str) -> str:
    return f"{note} {marker(idempotency_key)}" if note else marker(idempotency_key)


def reversal_note(note: str, original_pay_num: int, idempotency_key: str) -> str:
    """A reversal's PayNote: Open Dental has no column linking a negative payment to the one it reverses,
    so the note names it."""
    return payment_note(f"{note} (reverses PayNum {original_pay_num})".lstrip(), idempotency_key)


def _bad_amount(amount_cents: int, fee_cents: int) -> str:
    """Refused before Open Dental sees it: a negative payment entry would post as a refund."""
    return f"the PMS refused the amounts: payment {amount_cents} cents, fee {fee_cents} cents"


@dataclass(frozen=True, slots=True)
class _Original:
    """What a reversal needs of the payment it reverses."""

    pay_num: int
    pat_num: int
    pay_type: int
    clinic_num: int


@dataclass(frozen=True, slots=True)
class _Fee:
    """A fee adjustment to add after its payment committed (negative cents: a fee taken back)."""

    position: int
    key: str
    pat_num: int
    cents: int
    adj_type: int
    day: date


_PATIENTS_BY_NUM: Final = select(t.patient.c.PatNum, t.patient.c.PatStatus).where(
    t.patient.c.PatNum.in_(bindparam("values", expanding=True))
)
_PATIENTS_BY_CHART: Final = select(t.patient.c.PatNum, t.patient.c.ChartNumber).where(
    t.patient.c.ChartNumber.in_(bindparam("values", expanding=True)),
    t.patient.c.PatStatus != PAT_STATUS_DELETED,
)
_ORIGINALS: Final = select(
    t.payment.c.PayNum, t.payment.c.PatNum, t.payment.c.PayType, t.payment.c.ClinicNum
).where(t.payment.c.PayNum.in_(bindparam("values", expanding=True)))


class SandboxConnector:
    def __init__(self, settings: SandboxSettings, *, office: OpenDentalOffice | None = None) -> None:
        """`office`: an office opened by the caller (the direct-database mode opens a real office's
        database as it is); by default the sandbox's own office, created when missing."""
        self.settings = settings
        self.limits = ConnectorLimits(settings.requests_per_second, settings.batch_size)
        self.office = office if office is not None else open_sandbox_office(settings.url, settings.timezone)
        # The batch look-ups the office has no method for (patients by many PatNums or ChartNumbers, payments
        # by many PayNums): read-only, on a small engine of their own so the office stays untouched.
        self._reader = _read_engine(settings.url)
        self._random = random.Random(settings.seed)
        self._writes = 0
        self._definitions: dict[int, list[OdDefinition]] = {}  # by Category, read once per connector
        self._pay_types: dict[str, int] = {}  # ledgerlink payment type -> PayType (DefNum)
        self._fees_done: set[str] = set()  # keys whose fee entry was written (or refused and reported)

    async def close(self) -> None:
        self._reader.dispose()
        self.office.close()

    # --- the knobs ------------------------------------------------------------------------------------

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

    # --- names and numbers ------------------------------------------------------------------------------

    def _definitions_of(self, category: int) -> list[OdDefinition]:
        if category not in self._definitions:
            with _before_writing():
                self._definitions[category] = self.office.definitions(category)
        return self._definitions[category]

    def _named(self, category: int, name: str) -> OdDefinition | None:
        """The definition with this name: a visible one first, then a hidden one (still valid in Open Dental),
        then ignoring case. The Open Dental connector matches names the same way."""
        definitions = self._definitions_of(category)
        for candidates in (
            [d for d in definitions if d.item_name == name and not d.is_hidden],
            [d for d in definitions if d.item_name == name],
            [d for d in definitions if d.item_name.casefold() == name.casefold()],
        ):
            if candidates:
                return candidates[0]
        return None

    def _pay_type(self, payment_type: str) -> int:
        found = self._pay_types.get(payment_type)
        if found is None:
            found = self._pay_types[payment_type] = self._find_pay_type(payment_type)
        return found

    def _find_pay_type(self, payment_type: str) -> int:
        name = self.settings.payment_type_names.get(payment_type)
        if name is None:
            raise PmsRejected(
                f"no PMS payment type configured for {payment_type!r}", LoadErrorCode.PMS_CONFIGURATION
            )
        found = self._named(DEF_CAT_PAYMENT_TYPES, name)
        if found is None:
            raise PmsRejected(
                f"payment type {name!r} is not defined in the PMS", LoadErrorCode.PMS_CONFIGURATION
            )
        return found.def_num

    def _adjustment_type(self, *, reversal: bool) -> int:
        """The adjustment type for a fee entry, checked against Open Dental's rule that an adjustment's sign
        matches its type's '+' or '-' before anything is written."""
        if reversal:
            setting, name, sign = (
                "fee_reversal_adjustment_type_name",
                self.settings.fee_reversal_adjustment_type_name,
                "-",
            )
        else:
            setting, name, sign = "fee_adjustment_type_name", self.settings.fee_adjustment_type_name, "+"
        found = self._named(DEF_CAT_ADJ_TYPES, name)
        if found is None or found.item_value != sign:
            problem = (
                f"the PMS has no adjustment type named {name!r}"
                if found is None
                else f"adjustment type {name!r} is a {found.item_value or 'no-sign'!r} type"
            )
            raise PmsRejected(
                f"{problem}; {setting} must name a '{sign}' adjustment type", LoadErrorCode.PMS_CONFIGURATION
            )
        return found.def_num

    def _resolve_accounts(self, account_numbers: Sequence[str]) -> dict[str, tuple[int | None, str]]:
        """PatNum for each statement account number, or None and the reason it matches no single patient.

        PatNum mode: digits naming an existing, not deleted patient. ChartNumber mode: EXACTLY one
        non-deleted patient with that ChartNumber (Open Dental does not keep it unique). One query per
        chunk of numbers, not one per entry.
        """
        numbers = {raw: raw.strip() for raw in account_numbers}
        by_chart = self.settings.account_number == "chartnumber"
        with _before_writing():
            if by_chart:
                charts: dict[str, list[int]] = {}
                rows = self._read(_PATIENTS_BY_CHART, sorted(set(numbers.values())))
                for pat_num, chart in rows:  # compared again here: MariaDB's IN ignores case
                    charts.setdefault(str(chart), []).append(int(pat_num))
                return {raw: _chart_match(number, charts.get(number, [])) for raw, number in numbers.items()}
            wanted = sorted({int(n) for n in numbers.values() if _is_key(n)})
            statuses = {int(pat_num): int(status) for pat_num, status in self._read(_PATIENTS_BY_NUM, wanted)}
        return {raw: _pat_num_match(number, statuses) for raw, number in numbers.items()}

    def _resolve_account(self, account_number: str) -> tuple[int | None, str]:
        return self._resolve_accounts([account_number])[account_number]

    def _originals(self, refs: Sequence[str]) -> dict[int, _Original]:
        wanted = sorted({int(ref) for ref in refs if _is_key(ref)})
        with _before_writing():
            rows = self._read(_ORIGINALS, wanted)
        return {int(row[0]): _Original(int(row[0]), int(row[1]), int(row[2]), int(row[3])) for row in rows}

    def _read(self, statement: Any, values: Sequence[Any]) -> list[Any]:
        found: list[Any] = []
        with self._reader.connect() as conn:
            for start in range(0, len(values), _IN_CHUNK):
                found.extend(conn.execute(statement, {"values": list(values[start : start + _IN_CHUNK])}))
        return found

    # --- the connector ------------------------------------------------------------------------------------

    async def find_patient(self, account_number: str) -> PmsPatient | None:
        await self._call()
        pat_num, _ = self._resolve_account(account_number)
        with _before_writing():
            patient = self.office.patient(pat_num) if pat_num else None
        if patient is None:
            return None
        return PmsPatient(
            str(patient.pat_num), account_number, patient.first_name, patient.last_name, patient.birthdate
        )

    async def search_patients(
        self, last_name: str, first_name: str, birth_date: date | None
    ) -> list[PmsPatient]:
        await self._call()
        if not last_name.strip():
            return []
        with _before_writing():
            candidates = self.office.patients_matching(last_name=last_name.strip())
        found = []
        for patient in candidates:
            account = (
                str(patient.pat_num) if self.settings.account_number == "patnum" else patient.chart_number
            )
            pms = PmsPatient(
                str(patient.pat_num),
                account.strip(),
                patient.first_name,
                patient.last_name,
                patient.birthdate,
            )
            if (
                patient.pat_status != PAT_STATUS_DELETED
                and pms.account_number
                and is_suggestion(pms, last_name, first_name, birth_date)
            ):
                found.append(pms)
        return found

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        await self._call()
        results: list[WriteResult] = []
        accepted: list[tuple[int, PaymentEntry, NewOdPayment]] = []  # (position in results, entry, payment)
        fee_types: dict[int, int] = {}  # position -> adjustment type, for entries with a fee
        accounts = self._resolve_accounts([entry.account_number for entry in entries])
        for entry in entries:
            pat_num, why = accounts[entry.account_number]
            if pat_num is None:
                results.append(PmsRejected(why, LoadErrorCode.INVALID_PATIENT_ID))
                continue
            if entry.amount_cents < 0 or entry.fee_cents < 0:
                results.append(PmsRejected(_bad_amount(entry.amount_cents, entry.fee_cents)))
                continue
            try:
                pay_type = self._pay_type(entry.payment_type)
                if entry.fee_cents:
                    fee_types[len(results)] = self._adjustment_type(reversal=False)
            except PmsError as exc:
                results.append(exc)
                continue
            payment = NewOdPayment(
                pat_num=pat_num,
                pay_amt=cents_to_decimal(entry.amount_cents),
                pay_type=pay_type,
                pay_date=entry.posting_date,
                pay_note=payment_note(entry.note, entry.idempotency_key),
            )
            accepted.append((len(results), entry, payment))
            results.append(PmsRejected("not written"))  # a placeholder, replaced below
        fees: list[_Fee] = []
        written = 0
        for (position, entry, _), made in zip(accepted, self._create(accepted), strict=True):
            results[position] = self._result(made, entry.amount_cents, "payment")
            written += isinstance(made, OdPayment)
            if isinstance(made, OdPayment) and position in fee_types:
                fee = _Fee(
                    position,
                    entry.idempotency_key,
                    made.pat_num,
                    entry.fee_cents,
                    fee_types[position],
                    entry.posting_date,
                )
                fees.append(fee)
        self._add_fees(fees, results)
        self._committed(written)
        return results

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        await self._call()
        results: list[WriteResult] = []
        accepted: list[tuple[int, ReversalEntry, NewOdPayment]] = []
        fee_types: dict[int, int] = {}
        originals = self._originals([entry.original_pms_ref for entry in entries])
        for entry in entries:
            ref = entry.original_pms_ref
            original = originals.get(int(ref)) if _is_key(ref) else None
            if original is None:
                results.append(PmsRejected(f"payment {ref} not found in the PMS"))
                continue
            if entry.amount_cents <= 0 or entry.fee_cents < 0:
                results.append(PmsRejected(_bad_amount(entry.amount_cents, entry.fee_cents)))
                continue
            if entry.fee_cents:
                try:
                    fee_types[len(results)] = self._adjustment_type(reversal=True)
                except PmsError as exc:
                    results.append(exc)
                    continue
            # Open Dental's UI refund: "the credit is posted as a negative payment", on the original's patient.
            payment = NewOdPayment(
                pat_num=original.pat_num,
                pay_amt=-cents_to_decimal(entry.amount_cents),
                pay_type=original.pay_type,
                pay_date=entry.posting_date,
                pay_note=reversal_note(entry.note, original.pay_num, entry.idempotency_key),
                clinic_num=original.clinic_num,
            )
            accepted.append((len(results), entry, payment))
            results.append(PmsRejected("not written"))  # a placeholder, replaced below
        fees: list[_Fee] = []
        written = 0
        for (position, entry, _), made in zip(accepted, self._create(accepted), strict=True):
            results[position] = self._result(made, -entry.amount_cents, "reversal")
            written += isinstance(made, OdPayment)
            if isinstance(made, OdPayment) and position in fee_types:
                # A void takes the processing fee back too: the fee entry is mirrored, as the payment is.
                fee = _Fee(
                    position,
                    entry.idempotency_key,
                    made.pat_num,
                    -entry.fee_cents,
                    fee_types[position],
                    entry.posting_date,
                )
                fees.append(fee)
        self._add_fees(fees, results)
        self._committed(written)
        return results

    def _create(self, accepted: Sequence[tuple[int, Any, NewOdPayment]]) -> list[OdPayment | OdError]:
        """The payments, in one transaction (the office's batch path); one result per payment."""
        if not accepted:
            return []
        try:
            return self.office.create_payments([payment for _, _, payment in accepted])
        except SQLAlchemyError as exc:  # the commit may or may not have happened
            raise PmsOutcomeUnknown(f"the sandbox PMS failed while writing: {exc}") from None

    @staticmethod
    def _result(made: OdPayment | OdError, cents: Cents, what: str) -> WriteResult:
        if isinstance(made, OdPayment):
            return PmsWrite(str(made.pay_num), cents)
        if isinstance(made, OdNotFound):  # the patient is unknown or deleted: "Patient not found."
            return PmsRejected(
                f"the PMS refused the {what} of {cents} cents: {made.message}",
                LoadErrorCode.INVALID_PATIENT_ID,
            )
        return PmsRejected(f"the PMS refused the {what} of {cents} cents: {made.message}")

    def _add_fees(self, fees: Sequence[_Fee], results: list[WriteResult]) -> None:
        """The fee adjustments of payments that just committed.

        Open Dental writes each adjustment in its own transaction, so a payment can be in the PMS without its
        fee entry (a crash in between); `find_write` completes it. When the write of one fails in a way that
        may or may not have committed, that entry's result becomes `PmsOutcomeUnknown` and the engine's
        lookup completes it.
        """
        for fee in fees:
            try:
                self._add_fee(fee)
            except SQLAlchemyError as exc:
                results[fee.position] = PmsOutcomeUnknown(
                    f"payment {_pms_ref(results[fee.position])} was written, but its fee entry may not have "
                    f"been: {exc}"
                )

    def _add_fee(self, fee: _Fee) -> None:
        what = "Processing fee returned" if fee.cents < 0 else "Processing fee"
        try:
            self.office.create_adjustment(
                fee.pat_num, fee.adj_type, cents_to_decimal(fee.cents), fee.day, f"{what} {marker(fee.key)}"
            )
            self._fees_done.add(fee.key)
        except OdError as exc:
            self._fees_done.add(fee.key)  # reported once, not again at every lookup
            # Refused (the patient was deleted a moment ago...): the payment stays written, posting it again
            # would double it, so staff are asked to add the fee by hand (best effort, as every alert).
            with suppress(PmsError):
                self._tell_staff(
                    "Fee entry not posted",
                    f"the PMS refused the fee adjustment of {fee.cents} cents for writeback {marker(fee.key)}: "
                    f"{exc.message}. The payment itself is posted; add the adjustment by hand.",
                    fee.pat_num,
                )

    def _fee_present(self, key: str, pat_num: int) -> bool:
        return any(marker(key) in adjustment.adj_note for adjustment in self.office.adjustments(pat_num))

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        """The earlier write of this entry, found by its marker among its patient's payments (the one with the
        expected amount first); None when there is none. A found write whose fee adjustment is missing (the
        process died between the two commits) gets it now.

        A payment is looked for on the account it names; a reversal on its original payment's patient,
        whatever account the refund row names.
        """
        await self._call()
        key = entry.idempotency_key
        with _before_writing():
            if isinstance(entry, ReversalEntry):
                ref = entry.original_pms_ref
                original = self.office.payment(int(ref)) if _is_key(ref) else None
                pat_num = original.pat_num if original is not None else None
                cents = -entry.amount_cents
            else:
                pat_num, _ = self._resolve_account(entry.account_number)
                cents = entry.amount_cents
            if pat_num is None:
                return None  # no patient to post to: nothing can have been posted
            found = _marked(self.office.payments(pat_num=pat_num), key, cents)
            if found is None:
                return None
            fee_missing = (
                entry.fee_cents > 0 and key not in self._fees_done and not self._fee_present(key, pat_num)
            )
        if fee_missing:
            reversal = isinstance(entry, ReversalEntry)
            fee_cents = -entry.fee_cents if reversal else entry.fee_cents
            fee = _Fee(
                0, key, pat_num, fee_cents, self._adjustment_type(reversal=reversal), entry.posting_date
            )
            try:
                self._add_fee(fee)
            except SQLAlchemyError as exc:
                raise PmsUnavailable(f"the missing fee entry could not be written: {exc}") from None
        return PmsWrite(str(found.pay_num), found.amount_cents)

    async def raise_alert(self, alert: PmsAlert) -> None:
        await self._call()
        pat_num = None
        if alert.account_number:
            pat_num, _ = self._resolve_account(alert.account_number)
        self._tell_staff(alert.title, alert.message, pat_num)

    def _tell_staff(self, title: str, message: str, pat_num: int | None) -> None:
        """A task in the alerts' task list (on the patient when known) and a commlog on the patient."""
        try:
            self.office.create_task(
                self.settings.task_list_num, f"{title}: {message}", ALERT_USER_NUM, pat_num=pat_num or 0
            )
            if pat_num:
                self.office.create_commlog(pat_num, f"ledgerlink: {title}. {message}")
        except OdError as exc:
            raise PmsRejected(
                f"the PMS refused the alert: {exc.message}", LoadErrorCode.PMS_CONFIGURATION
            ) from None
        except SQLAlchemyError as exc:
            raise PmsUnavailable(f"the sandbox PMS failed while writing the alert: {exc}") from None


# --- helpers ----------------------------------------------------------------------------------------------


@contextmanager
def _before_writing() -> Iterator[None]:
    """Database errors while reading, before anything is written: the PMS is unavailable, retry later."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise PmsUnavailable(f"the sandbox PMS could not be read: {exc}") from None


def _read_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
    return create_engine(
        parsed, connect_args={"charset": "utf8mb4"}, pool_size=2, pool_pre_ping=True, pool_recycle=3600
    )


def _is_key(number: str) -> bool:
    """A key Open Dental could hold (a PatNum, a PayNum): ASCII digits, within a bigint, not 0."""
    return number.isascii() and number.isdigit() and 0 < int(number) <= _MAX_PAT_NUM


def _pat_num_match(number: str, statuses: dict[int, int]) -> tuple[int | None, str]:
    if not _is_key(number):
        return None, f"{number!r} is not a PatNum (PatNums are numbers)"
    pat_num = int(number)
    status = statuses.get(pat_num)
    if status is None:
        return None, f"no patient has PatNum {number}"
    if status == PAT_STATUS_DELETED:
        return None, f"patient {number} is deleted in the PMS"
    return pat_num, ""


def _chart_match(number: str, matches: list[int]) -> tuple[int | None, str]:
    if not matches:
        return None, f"no patient has ChartNumber {number!r}"
    if len(matches) > 1:
        return None, f"ChartNumber {number!r} belongs to {len(matches)} patients"
    return matches[0], ""


def _marked(payments: Sequence[OdPayment], key: str, cents: int) -> OdPayment | None:
    """The payment carrying the marker, the one with the expected amount first.

    A marked payment with another amount (edited in the PMS) is still this writeback's: posting again would
    put the writeback on the ledger twice.
    """
    marked = [p for p in payments if marker(key) in p.pay_note]
    for payment in marked:
        if payment.amount_cents == cents:
            return payment
    return marked[0] if marked else None


def _pms_ref(result: WriteResult) -> str:
    return result.pms_ref if isinstance(result, PmsWrite) else "?"
