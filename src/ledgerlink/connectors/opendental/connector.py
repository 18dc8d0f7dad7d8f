"""The Open Dental connector: payments, refunds, fee entries and alerts through Open Dental's REST API.

What lands where (docs/connectors/opendental.md has the office's view):

- a sale: `POST /payments` on the patient the account number names, PayType resolved by name from the
  office's payment types, PayNote = the entry's note + " [ll-wb-<id>]" (the writeback's marker);
- a fee under gross plus fee: `POST /adjustments` with the configured adjustment type, AdjNote with the marker;
- a full reversal: `POST /payments/Refund` (Open Dental's own mirror of the original), then
  `PUT /payments/{PayNum}` to put the note and marker on it, because a refund copies no note (research §9.5);
- a partial reversal: a negative `POST /payments` carrying the marker (or, with `partial_refunds=task`, a
  task for staff: see `_held_for_staff`);
- an alert: `POST /tasks` into the configured task list, and `POST /commlogs` on the patient.

Exactly once: Open Dental has no idempotency key, so every write carries the marker, any failure after a
write's first request may have reached Open Dental is `PmsOutcomeUnknown`, and `find_write` finds the
write by its marker (and, for a refund whose note never got its marker, by the unmarked-refund rule),
then completes whatever part of it is missing (the note, the fee entry) before reporting it written.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeVar

import httpx

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
from ledgerlink.connectors.opendental.client import (
    OdAnswer,
    OdParseError,
    OpenDentalClient,
    as_bool,
    as_cents,
    as_date,
    as_int,
    as_text,
    dollars,
)
from ledgerlink.connectors.opendental.settings import OpenDentalSettings
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents, format_cents
from ledgerlink.log import get_logger
from ledgerlink.secrets import SecretBox

log = get_logger(__name__)
E = TypeVar("E", PaymentEntry, ReversalEntry)

CATEGORY_ADJUSTMENT_TYPES = 1
CATEGORY_PAYMENT_TYPES = 10
PAT_STATUS_DELETED = 4
LOOKUP_SLACK = timedelta(days=1)  # the office's clock may be a day behind the practice's local date
_PATIENT_PROBLEM = re.compile(
    r"\bpatnum\b|patient (?:not found|is deleted|was deleted|does not exist|is archived)"
    r"|invalid patient|no patient|deleted patient",
    re.IGNORECASE,
)


def marker(idempotency_key: str) -> str:
    """The text that carries a writeback's key inside an Open Dental note."""
    return f"[{idempotency_key}]"


@dataclass(frozen=True, slots=True)
class _Payment:
    """The fields of an Open Dental payment row that writing back and finding writes need."""

    pay_num: int
    pat_num: int
    pay_type: int
    amount_cents: Cents
    note: str
    date_entry: date | None

    @classmethod
    def parse(cls, row: Any) -> _Payment:
        if not isinstance(row, dict):
            raise OdParseError("a payment is not a JSON object")
        return cls(
            pay_num=as_int(row.get("PayNum")),
            pat_num=as_int(row.get("PatNum")),
            pay_type=as_int(row.get("PayType", 0)),
            amount_cents=as_cents(row.get("PayAmt")),
            note=as_text(row.get("PayNote")),
            date_entry=as_date(row.get("DateEntry")),
        )


@dataclass(frozen=True, slots=True)
class _Definition:
    def_num: int
    name: str
    value: str  # ItemValue: for adjustment types '+' or '-', the sign Open Dental requires of the amount
    hidden: bool


def _is_deleted(patient: dict[str, Any]) -> bool:
    status = patient.get("PatStatus")
    return str(status).strip().lower() in ("deleted", str(PAT_STATUS_DELETED))


def _pms_patient(patient: dict[str, Any], account_number: str) -> PmsPatient:
    return PmsPatient(
        pms_id=str(as_int(patient.get("PatNum"))),
        account_number=account_number,
        first_name=as_text(patient.get("FName")),
        last_name=as_text(patient.get("LName")),
        birth_date=as_date(patient.get("Birthdate")),
    )


def _patient_refusal(message: str) -> bool:
    return bool(_PATIENT_PROBLEM.search(message))


@contextmanager
def _understood() -> Iterator[None]:
    """A value in one of Open Dental's answers that cannot be read is a refusal, not a crash of the sync.

    Only reads get here (an unreadable answer to a write is `PmsOutcomeUnknown` where it is parsed), so
    nothing was written: the entry fails with the reason, and retrying unchanged would fail again.
    """
    try:
        yield
    except OdParseError as exc:
        raise PmsRejected(f"Open Dental answered something ledgerlink cannot read: {exc}") from None


class OpenDentalConnector:
    """`PmsConnector` for one Open Dental office through its REST API.

    `limits` declares no engine-side rate and one entry per call. The connector paces every HTTP request
    itself (`OpenDentalClient`: per key, exact, lookups and alerts included), because one entry can take
    several requests (a refund and its note, a payment and its fee entry) and the engine's limiter, which
    spaces connector *calls*, would either double the wait or let those inner requests burst. Open Dental
    takes one row per request, so a batch would only be a loop here.

    Caches for the connector's life (one sync run): the office's payment and adjustment types (one
    `GET /definitions` per category), ChartNumber resolutions, and the payments it wrote or read as
    originals of reversals.
    """

    def __init__(
        self,
        settings: OpenDentalSettings,
        *,
        secret_box: SecretBox | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        # One engine call may be several paced requests (a refund, its note, a fee adjustment) plus the
        # client's retries: the engine's timeout must cover that, or a slow plan would turn every refund
        # into an uncertain outcome and a lookup.
        interval = 1.0 / settings.requests_per_second if settings.requests_per_second else 0.0
        self.limits = ConnectorLimits(
            requests_per_second=None,
            batch_size=1,
            call_timeout_s=max(30.0, 4 * (interval + settings.timeout_s) + 20.0),
        )
        developer_key, customer_key = settings.opened_keys(secret_box)
        self.client = OpenDentalClient(
            settings.base_url,
            developer_key,
            customer_key,
            requests_per_second=settings.requests_per_second,
            timeout_s=settings.timeout_s,
            http=http,
        )
        self._definitions: dict[int, list[_Definition]] = {}
        self._chart_numbers: dict[str, int | str] = {}  # ChartNumber -> PatNum, or why it names no patient
        self._payments: dict[int, _Payment] = {}  # PayNum -> payment written or read as an original
        self._unmarked: dict[str, _Payment] = {}  # key -> refund written whose note is not yet marked
        self._fees_done: set[str] = set()  # keys whose fee adjustment is known to be in Open Dental

    async def close(self) -> None:
        await self.client.close()

    # --- patients ------------------------------------------------------------------------------------------

    async def find_patient(self, account_number: str) -> PmsPatient | None:
        """The active patient an account number names; None when there is none.

        Raises `PmsRejected` (INVALID_PATIENT_ID) when a ChartNumber names several patients: guessing one
        would post to a stranger's ledger.
        """
        with _understood():
            return await self._find_patient(account_number)

    async def _find_patient(self, account_number: str) -> PmsPatient | None:
        account = account_number.strip()
        if self.settings.account_number == "chartnumber":
            matches = await self._chart_number_patients(account)
            if len(matches) > 1:
                raise PmsRejected(self._ambiguous(account, len(matches)), LoadErrorCode.INVALID_PATIENT_ID)
            return _pms_patient(matches[0], account) if matches else None
        if not account.isdigit():
            return None
        try:
            patient = await self.client.get(f"patients/{int(account)}")
        except OdAnswer as exc:
            if exc.status in (400, 404):
                return None
            raise PmsRejected(f"Open Dental refused the patient lookup: {exc.message}") from None
        if not isinstance(patient, dict) or _is_deleted(patient):
            return None
        return _pms_patient(patient, account)

    async def search_patients(
        self, last_name: str, first_name: str, birth_date: date | None
    ) -> list[PmsPatient]:
        """Two searches of `GET /patients` (Patients GET multiple): LName with FName, then LName with
        Birthdate. Relied on from Open Dental's API documentation: LName and FName are optional filters
        matched from the start of the name, ignoring case, and Birthdate is an exact yyyy-MM-dd filter;
        deleted patients can be listed. Some list filters are silently ignored by some versions
        (research §3.3), so every row is checked here again and only exact names count."""
        last = last_name.strip()
        if not last:
            return []
        searches: list[dict[str, Any]] = [{"LName": last, "FName": first_name.strip()}]
        if birth_date is not None:
            searches.append({"LName": last, "Birthdate": birth_date.isoformat()})
        found: dict[int, PmsPatient] = {}
        with _understood():
            for params in searches:
                try:
                    rows = await self.client.get_list("patients", {k: v for k, v in params.items() if v})
                except OdAnswer as exc:
                    if exc.status == 404:
                        continue
                    raise PmsRejected(f"Open Dental refused the patient search: {exc.message}") from None
                for row in rows:
                    if _is_deleted(row):
                        continue
                    account = (
                        str(as_int(row.get("PatNum")))
                        if self.settings.account_number == "patnum"
                        else as_text(row.get("ChartNumber")).strip()
                    )
                    patient = _pms_patient(row, account)
                    if account and is_suggestion(patient, last_name, first_name, birth_date):
                        found.setdefault(as_int(row.get("PatNum")), patient)
        return list(found.values())

    async def _chart_number_patients(self, chart_number: str) -> list[dict[str, Any]]:
        """Non-deleted patients whose ChartNumber is exactly this (Open Dental's search is a prefix match)."""
        if not chart_number:
            return []
        try:
            rows = await self.client.get_list("patients", {"ChartNumber": chart_number})
        except OdAnswer as exc:
            if exc.status == 404:
                return []
            raise PmsRejected(f"Open Dental refused the patient search: {exc.message}") from None
        return [
            row
            for row in rows
            if as_text(row.get("ChartNumber")).strip() == chart_number and not _is_deleted(row)
        ]

    @staticmethod
    def _ambiguous(chart_number: str, count: int) -> str:
        return (
            f"ChartNumber {chart_number} matches {count} patients in Open Dental; make it unique there "
            "(Patient Edit) or use PatNum account numbers, then Retry"
        )

    async def _pat_num(self, account_number: str) -> int:
        """The PatNum an account number names; `PmsRejected(INVALID_PATIENT_ID)` when it names none.

        PatNum mode costs no request: Open Dental's POST answers 404 for an unknown or deleted patient.
        """
        account = account_number.strip()
        if self.settings.account_number == "patnum":
            if not account.isdigit() or int(account) == 0:
                raise PmsRejected(
                    f"account number {account!r} is not an Open Dental PatNum",
                    LoadErrorCode.INVALID_PATIENT_ID,
                )
            return int(account)
        if account not in self._chart_numbers:
            matches = await self._chart_number_patients(account)
            if len(matches) == 1:
                self._chart_numbers[account] = as_int(matches[0].get("PatNum"))
            elif matches:
                self._chart_numbers[account] = self._ambiguous(account, len(matches))
            else:
                self._chart_numbers[account] = (
                    f"no active patient in Open Dental has ChartNumber {account!r}"
                    if account
                    else "the patient has no account number"
                )
        found = self._chart_numbers[account]
        if isinstance(found, str):
            raise PmsRejected(found, LoadErrorCode.INVALID_PATIENT_ID)
        return found

    # --- definitions ---------------------------------------------------------------------------------------

    async def _definitions_of(self, category: int) -> list[_Definition]:
        if category not in self._definitions:
            try:
                rows = await self.client.get_list("definitions", {"Category": category})
            except OdAnswer as exc:
                raise PmsRejected(
                    f"Open Dental refused to list its definitions: {exc.message}",
                    LoadErrorCode.PMS_CONFIGURATION,
                ) from None
            self._definitions[category] = [
                _Definition(
                    as_int(row.get("DefNum")),
                    as_text(row.get("ItemName")).strip(),
                    as_text(row.get("ItemValue")).strip(),
                    as_bool(row.get("IsHidden", False)),
                )
                for row in rows
                if as_int(row.get("Category", category)) == category
            ]
        return self._definitions[category]

    @staticmethod
    def _named(definitions: list[_Definition], name: str) -> _Definition | None:
        """The definition with this name: a visible one first, then a hidden one (still valid in Open
        Dental), then ignoring case."""
        for candidates in (
            [d for d in definitions if d.name == name and not d.hidden],
            [d for d in definitions if d.name == name],
            [d for d in definitions if d.name.casefold() == name.casefold()],
        ):
            if candidates:
                return candidates[0]
        return None

    async def _pay_type(self, payment_type: str) -> int:
        name = self.settings.payment_type_names.get(payment_type)
        definitions = await self._definitions_of(CATEGORY_PAYMENT_TYPES)
        found = self._named(definitions, name) if name else None
        if found is None:
            offered = ", ".join(sorted({d.name for d in definitions if not d.hidden})) or "none"
            wanted = f"no payment type named {name!r}" if name else "no payment type configured"
            raise PmsRejected(
                f"Open Dental has {wanted} for ledgerlink's {payment_type!r} payments; the office's payment "
                f"types are: {offered}. Set payment_type_names.{payment_type} to one of them, or add the type "
                "in Open Dental (Setup > Definitions > Payment Types), then Retry",
                LoadErrorCode.PMS_CONFIGURATION,
            )
        return found.def_num

    async def _adjustment_type(self, *, reversal: bool) -> int:
        """The adjustment type for a fee entry (`reversal`: for taking one back), checked against Open
        Dental's rule that an adjustment's sign matches its type's '+' or '-', before anything is written."""
        if reversal:
            setting, name, sign = (
                "fee_reversal_adjustment_type_name",
                self.settings.fee_reversal_adjustment_type_name,
                "-",
            )
        else:
            setting, name, sign = "fee_adjustment_type_name", self.settings.fee_adjustment_type_name, "+"
        definitions = await self._definitions_of(CATEGORY_ADJUSTMENT_TYPES)
        found = self._named(definitions, name)
        if found is None or found.value != sign:
            offered = ", ".join(
                sorted(f"{d.name} ({d.value or 'no sign'})" for d in definitions if not d.hidden)
            )
            problem = (
                f"Open Dental has no adjustment type named {name!r}"
                if found is None
                else f"adjustment type {name!r} is a {found.value or 'no-sign'!r} type"
            )
            purpose = "take a fee back" if reversal else "enter a fee"
            raise PmsRejected(
                f"{problem}; gross plus fee needs a '{sign}' adjustment type to {purpose}. Set {setting} to "
                f"one; the office's adjustment types are: {offered or 'none'}",
                LoadErrorCode.PMS_CONFIGURATION,
            )
        return found.def_num

    # --- payments --------------------------------------------------------------------------------------------

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        return await self._each(entries, self._post_payment)

    async def post_reversals(self, entries: Sequence[ReversalEntry]) -> Sequence[WriteResult]:
        return await self._each(entries, self._post_reversal)

    @staticmethod
    async def _each(entries: Sequence[E], post: Callable[[E], Awaitable[PmsWrite]]) -> list[WriteResult]:
        """One result per entry. After Open Dental became unreachable the rest are not attempted."""
        results: list[WriteResult] = []
        stop: PmsError | None = None
        for entry in entries:
            if stop is not None:
                results.append(PmsUnavailable(f"not attempted: {stop.message}"))
                continue
            try:
                with _understood():
                    results.append(await post(entry))
            except (PmsUnavailable, PmsOutcomeUnknown) as exc:
                results.append(exc)
                stop = exc
            except PmsError as exc:
                results.append(exc)
        return results

    def _payment_body(
        self, pat_num: int, cents: Cents, pay_type: int, pay_date: date, note: str
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "PayAmt": dollars(cents),
            "PatNum": pat_num,
            "PayType": pay_type,
            "PayDate": pay_date.isoformat(),
            "PayNote": note,
        }
        if self.settings.clinic_num is not None:
            body["ClinicNum"] = self.settings.clinic_num
        if self.settings.is_patient_preferred:
            body["isPatientPreferred"] = "true"
        return body

    async def _create_payment(self, body: dict[str, Any], what: str) -> _Payment:
        """`POST /payments`; a refusal is `PmsRejected` with Open Dental's words."""
        try:
            answer = await self.client.post("payments", body)
        except OdAnswer as exc:
            if exc.status == 404 or _patient_refusal(exc.message):
                raise PmsRejected(
                    f"Open Dental refused {what} for patient {body['PatNum']}: {exc.message}",
                    LoadErrorCode.INVALID_PATIENT_ID,
                ) from None
            code = LoadErrorCode.PMS_CONFIGURATION if "paytype" in exc.message.lower() else None
            raise PmsRejected(
                f"Open Dental refused {what}: {exc.message}", code or LoadErrorCode.PMS_REJECTED
            ) from None
        payment = self._written(answer, "POST /payments")
        self._payments[payment.pay_num] = payment
        return payment

    @staticmethod
    def _written(answer: Any, what: str) -> _Payment:
        """The payment a successful write answered with. Unreadable means written but unknown: the engine
        then finds it by its marker."""
        try:
            return _Payment.parse(answer)
        except OdParseError as exc:
            raise PmsOutcomeUnknown(f"{what} succeeded but its answer could not be read ({exc})") from None

    async def _post_payment(self, entry: PaymentEntry) -> PmsWrite:
        if entry.amount_cents <= 0 or entry.fee_cents < 0:
            raise PmsRejected(
                f"the amounts cannot be posted: payment {entry.amount_cents} cents, fee {entry.fee_cents} cents"
            )
        pat_num = await self._pat_num(entry.account_number)
        pay_type = await self._pay_type(entry.payment_type)
        fee_type = await self._adjustment_type(reversal=False) if entry.fee_cents else None  # before writing
        note = f"{entry.note} {marker(entry.idempotency_key)}"
        body = self._payment_body(pat_num, entry.amount_cents, pay_type, entry.posting_date, note)
        payment = await self._create_payment(body, "the payment")
        log.info("opendental.payment_posted", pay_num=payment.pay_num)
        if fee_type is not None:
            await self._after_write(
                payment,
                self._add_fee(entry.idempotency_key, pat_num, entry.fee_cents, fee_type, entry.posting_date),
            )
        return PmsWrite(str(payment.pay_num), payment.amount_cents)

    @staticmethod
    async def _after_write(payment: _Payment, step: Awaitable[None]) -> None:
        """Run a step that follows a committed write. Whatever goes wrong in it, the entry is
        `PmsOutcomeUnknown`, never a plain failure (which a Retry would post again): the engine's lookup
        then finds the write and completes the step."""
        try:
            await step
        except PmsError as exc:
            raise PmsOutcomeUnknown(
                f"payment {payment.pay_num} was written, but the step after it was not confirmed: {exc.message}"
            ) from None

    # --- fee entries -----------------------------------------------------------------------------------------

    async def _add_fee(
        self, key: str, pat_num: int, cents: Cents, adj_type: int, adj_date: date, *, look_first: bool = False
    ) -> None:
        """The fee adjustment of a writeback (negative `cents` to take a fee back), unless it is there.

        A refusal (400) is not retried: the payment stays written, and staff get a task to add the fee by
        hand, since posting the payment again would double it.
        """
        if key in self._fees_done:
            return
        if look_first and await self._fee_present(key, pat_num):
            self._fees_done.add(key)
            return
        what = "Processing fee returned" if cents < 0 else "Processing fee"
        body = {
            "PatNum": pat_num,
            "AdjType": adj_type,
            "AdjAmt": dollars(cents),
            "AdjDate": adj_date.isoformat(),
            "AdjNote": f"{what} {marker(key)}",
        }
        try:
            await self.client.post("adjustments", body)
        except OdAnswer as exc:
            log.warning("opendental.fee_refused", status=exc.status)
            await self._tell_staff(
                PmsAlert(
                    "Fee entry not posted",
                    f"Open Dental refused the fee adjustment of {format_cents(cents)} for writeback "
                    f"{marker(key)}: {exc.message}. The payment itself is posted; add the adjustment by hand.",
                    None,
                ),
                pat_num,
            )
        self._fees_done.add(key)

    async def _fee_present(self, key: str, pat_num: int) -> bool:
        try:
            rows = await self.client.get_list("adjustments", {"PatNum": pat_num})
        except OdAnswer as exc:
            raise PmsUnavailable(f"the fee adjustments could not be read: {exc.message}") from None
        return any(marker(key) in as_text(row.get("AdjNote")) for row in rows)

    # --- reversals -------------------------------------------------------------------------------------------

    async def _original(self, entry: ReversalEntry) -> _Payment:
        """The payment a reversal reverses: remembered from this run, else read from the ledger of the
        patient the reversal names (Open Dental has no single-payment GET)."""
        ref = entry.original_pms_ref.strip()
        if not ref.isdigit():
            raise PmsRejected(f"{ref!r} is not an Open Dental PayNum")
        pay_num = int(ref)
        if pay_num in self._payments:
            return self._payments[pay_num]
        pat_num = await self._pat_num(entry.original_account_number or entry.account_number)
        for payment in await self._ledger(pat_num):
            if payment.pay_num == pay_num:
                return payment
        raise PmsRejected(
            f"Open Dental has no payment {pay_num} on the ledger of patient {pat_num} (was the original "
            "payment moved or deleted, or does the refund name another patient?); post it by hand and Clear"
        )

    async def _ledger(self, pat_num: int, since: date | None = None) -> list[_Payment]:
        """The patient's payments (entered on or after `since`). Rows that cannot be read are skipped
        unless they carry a ledgerlink marker, which must never be missed."""
        params: dict[str, Any] = {"PatNum": pat_num}
        if since is not None:
            params["DateEntry"] = since.isoformat()
        try:
            rows = await self.client.get_list("payments", params)
        except OdAnswer as exc:
            if exc.status == 404:
                return []
            raise PmsUnavailable(f"the patient's payments could not be read: {exc.message}") from None
        payments = []
        for row in rows:
            try:
                payment = _Payment.parse(row)
            except OdParseError as exc:
                if "[ll-wb-" in as_text(row.get("PayNote")):
                    raise PmsUnavailable(f"a ledgerlink payment could not be read: {exc}") from None
                continue
            if payment.pat_num == pat_num:  # some list filters are silently ignored (research §3.3)
                payments.append(payment)
                self._payments.setdefault(payment.pay_num, payment)
        return payments

    def _held_for_staff(self, entry: ReversalEntry, original: _Payment) -> PmsRejected:
        """With `partial_refunds=task`, a partial reversal is left to staff.

        The result is a rejection (code HELD_FOR_STAFF) on purpose: a `PmsWrite` would tell the engine it is
        posted (and count it in `reversed_cents`). The engine records it failed, reports it under Held for
        Manual Posting, and delivers its alert through `raise_alert`, so
        the office gets exactly one task carrying these instructions; staff post it and Clear it, and
        Clear adds it to what is reversed. Nothing is sent to Open Dental here.
        """
        fee = f" and a fee adjustment of -{format_cents(entry.fee_cents)}" if entry.fee_cents else ""
        return PmsRejected(
            f"held for staff (partial_refunds=task): enter a payment of -{format_cents(entry.amount_cents)}"
            f"{fee} for patient {original.pat_num} (reversing payment {original.pay_num}) with the note "
            f"'{entry.note} {marker(entry.idempotency_key)}', then Clear this in ledgerlink",
            LoadErrorCode.HELD_FOR_STAFF,
        )

    async def _post_reversal(self, entry: ReversalEntry) -> PmsWrite:
        if entry.amount_cents <= 0 or entry.fee_cents < 0:
            raise PmsRejected(
                f"the amounts cannot be reversed: {entry.amount_cents} cents, fee {entry.fee_cents} cents"
            )
        original = await self._original(entry)
        if not entry.is_full and self.settings.partial_refunds == "task":
            raise self._held_for_staff(entry, original)
        fee_type = await self._adjustment_type(reversal=True) if entry.fee_cents else None  # before writing
        if entry.is_full:
            if original.amount_cents != entry.amount_cents:
                raise PmsRejected(
                    f"payment {original.pay_num} is {format_cents(original.amount_cents)} in Open Dental, not "
                    f"the {format_cents(entry.amount_cents)} ledgerlink posted; reverse it by hand and Clear"
                )
            refund = await self._refund(original, entry)
        else:
            refund = await self._negative_payment(original, entry)
        log.info("opendental.reversal_posted", pay_num=refund.pay_num, original=original.pay_num)
        if fee_type is not None:
            step = self._add_fee(
                entry.idempotency_key, original.pat_num, -entry.fee_cents, fee_type, entry.posting_date
            )
            await self._after_write(refund, step)
        return PmsWrite(str(refund.pay_num), refund.amount_cents)

    async def _negative_payment(self, original: _Payment, entry: ReversalEntry) -> _Payment:
        note = _reversal_note(entry)
        body = self._payment_body(
            original.pat_num, -entry.amount_cents, original.pay_type, entry.posting_date, note
        )
        return await self._create_payment(body, f"a negative payment reversing payment {original.pay_num}")

    async def _refund(self, original: _Payment, entry: ReversalEntry) -> _Payment:
        """Open Dental's own refund of the whole payment, then its note and marker.

        Open Dental refuses a refund of a payment split onto a payment plan (400); with negative payments
        allowed, the same reversal is posted as one instead.
        """
        try:
            answer = await self.client.post("payments/Refund", {"PayNum": original.pay_num})
        except OdAnswer as exc:
            if exc.status == 400 and self.settings.partial_refunds == "negative_payment":
                log.info("opendental.refund_refused_posting_negative", original=original.pay_num)
                return await self._negative_payment(original, entry)
            raise PmsRejected(
                f"Open Dental refused to refund payment {original.pay_num}: {exc.message}"
            ) from None
        refund = self._written(answer, "POST /payments/Refund")
        self._unmarked[entry.idempotency_key] = refund
        await self._after_write(refund, self._mark(refund, entry))
        return replace(refund, note=_reversal_note(entry))

    async def _mark(self, refund: _Payment, entry: ReversalEntry) -> None:
        """Put the note and marker on a refund Open Dental created without one (research §9.5).

        A refusal is logged and accepted: the refund is written and its PayNum is recorded as posted, so
        exactly-once no longer depends on the marker; only the office loses the note.
        """
        note = _reversal_note(entry)
        try:
            await self.client.put(f"payments/{refund.pay_num}", {"PayNote": note})
        except OdAnswer as exc:
            log.warning("opendental.refund_note_refused", pay_num=refund.pay_num, status=exc.status)
        self._unmarked.pop(entry.idempotency_key, None)

    # --- finding writes ----------------------------------------------------------------------------------------

    async def find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        """The earlier write of this entry, completed if a part of it is missing; None when there is none.

        Looks at the patient's payments entered since the day before the entry's posting date (the write
        cannot be older than its transaction) for the entry's marker in PayNote. A reversal is looked for on
        its original payment's patient. A full refund whose note never got its marker (the connection was
        lost between the refund and its note) is recognised by the unmarked-refund rule (see
        `_unmarked_refund`), and gets its marker now. A found write whose fee entry is missing gets it now.
        """
        with _understood():
            return await self._find_write(entry)

    async def _find_write(self, entry: PaymentEntry | ReversalEntry) -> PmsWrite | None:
        since = entry.posting_date - LOOKUP_SLACK
        key = entry.idempotency_key
        if isinstance(entry, PaymentEntry):
            try:
                pat_num = await self._pat_num(entry.account_number)
            except PmsRejected:
                return None  # no patient to post to: nothing can have been posted
            found = self._marked(await self._ledger(pat_num, since), key, entry.amount_cents)
            if found is not None and entry.fee_cents:
                fee_type = await self._adjustment_type(reversal=False)
                await self._add_fee(
                    key, pat_num, entry.fee_cents, fee_type, entry.posting_date, look_first=True
                )
        else:
            original = await self._original(entry)  # raises when unknown: the engine then holds the entry
            ledger = await self._ledger(original.pat_num, since)
            found = self._marked(ledger, key, -entry.amount_cents)
            if found is None and entry.is_full:
                unmarked = self._unmarked.get(key) or self._unmarked_refund(ledger, original, since)
                if unmarked is not None:
                    log.info("opendental.unmarked_refund_claimed", pay_num=unmarked.pay_num)
                    await self._mark(unmarked, entry)
                    found = unmarked
            if found is not None and entry.fee_cents:
                fee_type = await self._adjustment_type(reversal=True)
                await self._add_fee(
                    key, original.pat_num, -entry.fee_cents, fee_type, entry.posting_date, look_first=True
                )
        return None if found is None else PmsWrite(str(found.pay_num), found.amount_cents)

    @staticmethod
    def _marked(payments: list[_Payment], key: str, cents: Cents) -> _Payment | None:
        """The payment carrying the marker, the one with the expected amount first.

        A marked payment with another amount (staff edited it in Open Dental) is still this writeback's:
        posting again would put the writeback on the ledger twice.
        """
        marked = [p for p in payments if marker(key) in p.note]
        for payment in marked:
            if payment.amount_cents == cents:
                return payment
        if marked:
            log.warning("opendental.marker_amount_differs", pay_num=marked[0].pay_num)
            return marked[0]
        return None

    @staticmethod
    def _unmarked_refund(payments: list[_Payment], original: _Payment, since: date) -> _Payment | None:
        """The unmarked-refund rule: on the original's patient, a payment of exactly minus the original's
        amount, of its PayType, entered after it (higher PayNum, DateEntry on or after `since`), with an
        empty note (so claimed by no marker), is the refund `POST /payments/Refund` made for this entry.

        Risk: a refund staff made by hand with Open Dental's Refund button in that window looks the same,
        and is claimed. The claim never creates a second refund (at worst the marker lands on staff's refund,
        which is the ledger the office wants: the payment refunded once). The lowest PayNum is taken.
        """
        candidates = [
            p
            for p in payments
            if p.pay_num > original.pay_num
            and p.pat_num == original.pat_num
            and p.pay_type == original.pay_type
            and p.amount_cents == -original.amount_cents
            and not p.note.strip()
            and (p.date_entry is None or p.date_entry >= since)
        ]
        return min(candidates, key=lambda p: p.pay_num) if candidates else None

    # --- alerts ------------------------------------------------------------------------------------------------

    async def raise_alert(self, alert: PmsAlert) -> None:
        """A task in the configured task list (linked to the patient when known) and, with
        `commlog_on_patient`, a commlog on the patient. Raises when neither could be left, so the engine
        keeps the alert undelivered."""
        pat_num = None
        if alert.account_number:
            try:
                with _understood():
                    pat_num = await self._pat_num(alert.account_number)
            except PmsRejected:
                pat_num = None
        await self._tell_staff(alert, pat_num, raise_errors=True)

    async def _tell_staff(self, alert: PmsAlert, pat_num: int | None, *, raise_errors: bool = False) -> None:
        text = f"ledgerlink: {alert.title}. {alert.message}"
        delivered = False
        problem: PmsError = PmsRejected(
            "no Open Dental task list is configured (task_list_num and task_user_num) and no patient to "
            "note it on",
            LoadErrorCode.PMS_CONFIGURATION,
        )
        if self.settings.task_list_num and self.settings.task_user_num:
            task: dict[str, Any] = {
                "TaskListNum": self.settings.task_list_num,
                "UserNum": self.settings.task_user_num,
                "Descript": text,
            }
            if pat_num:
                task |= {"KeyNum": pat_num, "ObjectType": "Patient"}
            try:
                await self._post_alert("tasks", task)
                delivered = True
            except PmsError as exc:
                problem = exc
        if self.settings.commlog_on_patient and pat_num:
            try:
                await self._post_alert("commlogs", {"PatNum": pat_num, "Note": text})
                delivered = True
            except PmsError as exc:
                problem = exc
        if not delivered:
            log.warning("opendental.alert_not_delivered", code=problem.code.value)
            if raise_errors:
                raise problem

    async def _post_alert(self, path: str, body: dict[str, Any]) -> None:
        try:
            await self.client.post(path, body)
        except OdAnswer as exc:
            raise PmsRejected(f"Open Dental refused the {path[:-1]}: {exc.message}") from None


def _reversal_note(entry: ReversalEntry) -> str:
    """A reversal's PayNote: what it is, the payment it reverses (Open Dental has no column linking a
    refund to its original, so staff and checks read it here, as the sandbox writes it), and the marker."""
    return f"{entry.note} (reverses PayNum {entry.original_pms_ref}) {marker(entry.idempotency_key)}"
