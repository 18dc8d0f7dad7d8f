"""What a Stripe webhook event means for the store: the transactions it carries, as objects of the JSON ingest.

Pure mapping, no I/O: `ledgerlink.api.stripe_webhook` verifies the signature, looks up what this module asks
for (`charges_to_look_up`) and stores the objects through `ingest_objects`, where every row is checked like
a line of a JSON lines import (docs/transaction-import.md). The mapping is described for users in
docs/stripe-webhooks.md; keep the two in step.

Stripe gives amounts as integers in the currency's smallest unit; the ingest reads decimal text. The
conversion is integer arithmetic only, so the largest amount arrives to the cent.

Refunds and disputes name their charge by id only, without its metadata: they take the patient and the
payment type of the sale already stored for that charge (`KnownCharge`). A `charge.refunded` event with the
refund list (API versions before 2022-11-15) carries the charge itself and needs no look-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ledgerlink.domain.transactions import PaymentType, TransactionKind

SALE_EVENTS = frozenset({"charge.succeeded", "charge.captured"})
HANDLED_EVENTS = SALE_EVENTS | {
    "charge.refunded",
    "refund.created",
    "charge.dispute.created",
    "charge.failed",
}

DEFAULT_PAYMENT_TYPE = PaymentType.ONLINE
"""The payment type of a charge whose metadata names none: Stripe charges are card-not-present by default."""

# Stripe's currencies whose smallest unit is not a hundredth (https://docs.stripe.com/currencies).
_ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()  # noqa: SIM905
)
_THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())  # noqa: SIM905
_REFUNDS_THAT_MOVED_MONEY = frozenset({"succeeded", "pending"})
_PAYMENT_TYPES = ", ".join(t.value for t in PaymentType)


class StripeEventError(ValueError):
    """The event cannot be mapped to transactions; `field` is the path of the value at fault in the event."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class KnownCharge:
    """What the store knows of a charge's sale: whom it was for and through which channel."""

    patient_ref: str
    payment_type: str


@dataclass(frozen=True, slots=True)
class MappedTransaction:
    """One transaction for `ingest_objects` (`fields`), and where in the event each field came from
    (`origin`: ingest field -> event path), so a row error can name what the sender must fix."""

    fields: dict[str, str]
    origin: dict[str, str] = field(default_factory=dict)

    def path_of(self, column: str) -> str:
        return self.origin.get(column, "data.object")


def is_handled(event_type: str) -> bool:
    return event_type in HANDLED_EVENTS


def charges_to_look_up(event: Mapping[str, Any]) -> list[str]:
    """The charge ids whose stored sale the mapping of `event` needs (refunds and disputes)."""
    event_type = event.get("type")
    if event_type not in ("refund.created", "charge.dispute.created"):
        return []
    charge = _obj(event).get("charge")
    if isinstance(charge, Mapping):
        charge = charge.get("id")
    return [charge] if isinstance(charge, str) and charge else []


def transactions_for_event(
    event: Mapping[str, Any], known: Mapping[str, KnownCharge] | None = None
) -> list[MappedTransaction]:
    """The transactions `event` carries (empty for an uncaptured authorisation, which is no payment yet).

    `known` holds the stored sales of the charges `charges_to_look_up` named. Raises `StripeEventError`
    when the event lacks what a transaction needs (a patient, a known payment type, an amount).
    """
    known = known or {}
    event_type = event.get("type")
    obj = _obj(event)
    if event_type in SALE_EVENTS:
        return [_sale(obj, "data.object")] if obj.get("captured", True) is not False else []
    if event_type == "charge.failed":
        return [_decline(obj)]
    if event_type == "charge.refunded":
        return _charge_refunded(obj)
    if event_type == "refund.created":
        return _refund_created(obj, known)
    if event_type == "charge.dispute.created":
        return [_chargeback(obj, known)]
    raise StripeEventError("type", f"{event_type!r} is not an event ledgerlink maps to transactions")


def _obj(event: Mapping[str, Any]) -> Mapping[str, Any]:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise StripeEventError("data.object", "the event carries no object")
    return obj


def _sale(charge: Mapping[str, Any], path: str) -> MappedTransaction:
    currency = _currency(charge, path)
    captured = charge.get("amount_captured")
    amount_key = "amount_captured" if isinstance(captured, int) and captured > 0 else "amount"
    fields = _charge_fields(charge, path, TransactionKind.SALE, amount_key, currency)
    fee_path, fee = _fee(charge, path, currency)
    fields["fee"] = fee
    origin = _charge_origin(path, amount_key) | {"fee": fee_path}
    return MappedTransaction(fields, origin)


def _decline(charge: Mapping[str, Any]) -> MappedTransaction:
    path = "data.object"
    currency = _currency(charge, path)
    fields = _charge_fields(charge, path, TransactionKind.DECLINE, "amount", currency, patient_required=False)
    return MappedTransaction(fields, _charge_origin(path, "amount"))


def _charge_fields(
    charge: Mapping[str, Any],
    path: str,
    kind: TransactionKind,
    amount_key: str,
    currency: str,
    *,
    patient_required: bool = True,
) -> dict[str, str]:
    metadata = _metadata(charge, path)
    brand, last4 = _card(charge)
    return {
        "reference": _id(charge, path, "ch_"),
        "time": _time(charge, path),
        "kind": kind.value,
        "payment_type": _payment_type(metadata, path),
        "gross": _amount(charge.get(amount_key), currency, f"{path}.{amount_key}"),
        "currency": currency.upper(),
        "patient_id": _patient(metadata, path, required=patient_required),
        "card_brand": brand,
        "card_last4": last4,
    }


def _charge_origin(path: str, amount_key: str) -> dict[str, str]:
    return {
        "reference": f"{path}.id",
        "time": f"{path}.created",
        "payment_type": f"{path}.metadata.payment_type",
        "gross": f"{path}.{amount_key}",
        "currency": f"{path}.currency",
        "patient_id": f"{path}.metadata.patient_id",
        "card_brand": f"{path}.payment_method_details.card.brand",
        "card_last4": f"{path}.payment_method_details.card.last4",
    }


def _charge_refunded(charge: Mapping[str, Any]) -> list[MappedTransaction]:
    """The sale (stored already, or arriving out of order) and each refund of the charge's refund list.

    Since API version 2022-11-15 the list is absent: then the refunds come with `refund.created`. An
    authorisation released before capture is "refunded" too, but is no payment: nothing is stored.
    """
    path = "data.object"
    if charge.get("captured") is False:
        return []  # a released authorisation: no money moved either way
    sale = _sale(charge, path)
    refunds = charge.get("refunds")
    items = refunds.get("data") if isinstance(refunds, Mapping) else None
    if not isinstance(items, list):
        return [sale]
    mapped = [sale]
    for n, refund in enumerate(items):
        refund_path = f"{path}.refunds.data[{n}]"
        if not isinstance(refund, Mapping):
            raise StripeEventError(refund_path, "must be a refund object")
        if refund.get("status") in _REFUNDS_THAT_MOVED_MONEY:
            mapped.append(
                _reversal(refund, refund_path, TransactionKind.REFUND, sale.fields["reference"], "re_", sale)
            )
    return mapped


def _refund_created(refund: Mapping[str, Any], known: Mapping[str, KnownCharge]) -> list[MappedTransaction]:
    if refund.get("status") not in _REFUNDS_THAT_MOVED_MONEY:
        return []
    charge_id = _charge_of(refund)
    return [_reversal(refund, "data.object", TransactionKind.REFUND, charge_id, "re_", known.get(charge_id))]


def _chargeback(dispute: Mapping[str, Any], known: Mapping[str, KnownCharge]) -> MappedTransaction:
    charge_id = _charge_of(dispute)
    charge = dispute.get("charge")
    original: MappedTransaction | KnownCharge | None = known.get(charge_id)
    if original is None and isinstance(charge, Mapping):  # an expanded charge carries its own metadata
        original = _sale(charge, "data.object.charge")
    return _reversal(dispute, "data.object", TransactionKind.CHARGEBACK, charge_id, "dp_", original)


def _reversal(
    obj: Mapping[str, Any],
    path: str,
    kind: TransactionKind,
    charge_id: str,
    prefix: str,
    original: MappedTransaction | KnownCharge | None,
) -> MappedTransaction:
    """A refund or chargeback of `charge_id`, for the original's patient and payment type.

    Without a stored original, the object's own metadata may name them; otherwise the event cannot be
    mapped yet (Stripe retries it, by when the sale may have arrived).
    """
    if isinstance(original, MappedTransaction):
        patient, payment_type = original.fields["patient_id"], original.fields["payment_type"]
        who = original.origin
    elif isinstance(original, KnownCharge):
        patient, payment_type, who = original.patient_ref, original.payment_type, {}
    else:
        metadata = _metadata(obj, path)
        if not str(metadata.get("patient_id") or "").strip():
            raise StripeEventError(
                f"{path}.charge",
                f"the sale of charge {charge_id!r} has not been received, and the {kind}'s metadata names no "
                "patient_id; send the charge's event first (Stripe retries this one)",
            )
        patient, payment_type = _patient(metadata, path, required=True), _payment_type(metadata, path)
        who = {"patient_id": f"{path}.metadata.patient_id", "payment_type": f"{path}.metadata.payment_type"}
    currency = _currency(obj, path)
    fields = {
        "reference": _id(obj, path, prefix),
        "time": _time(obj, path),
        "kind": kind.value,
        "payment_type": payment_type,
        "gross": _amount(obj.get("amount"), currency, f"{path}.amount"),
        "currency": currency.upper(),
        "patient_id": patient,
        "original_reference": charge_id,
    }
    origin = {
        "reference": f"{path}.id",
        "time": f"{path}.created",
        "gross": f"{path}.amount",
        "currency": f"{path}.currency",
        "original_reference": f"{path}.charge",
        **{k: v for k, v in who.items() if k in ("patient_id", "payment_type")},
    }
    return MappedTransaction(fields, origin)


def _charge_of(obj: Mapping[str, Any]) -> str:
    charge = obj.get("charge")
    if isinstance(charge, Mapping):
        charge = charge.get("id")
    if not isinstance(charge, str) or not charge.strip():
        raise StripeEventError("data.object.charge", "names no charge id (ch_...)")
    return charge.strip()


def _id(obj: Mapping[str, Any], path: str, prefix: str) -> str:
    value = obj.get("id")
    if not isinstance(value, str) or not value.startswith(prefix):
        raise StripeEventError(f"{path}.id", f"must be a Stripe id starting with {prefix}")
    return value


def _time(obj: Mapping[str, Any], path: str) -> str:
    created = obj.get("created")
    if not isinstance(created, int) or isinstance(created, bool) or created < 0:
        raise StripeEventError(f"{path}.created", "must be a time in whole seconds since 1970 (UTC)")
    try:
        return datetime.fromtimestamp(created, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        raise StripeEventError(f"{path}.created", "is not a time ledgerlink can read") from None


def _currency(obj: Mapping[str, Any], path: str) -> str:
    currency = obj.get("currency")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise StripeEventError(f"{path}.currency", "must be a three-letter currency code such as usd")
    return currency.lower()


def _amount(value: object, currency: str, path: str) -> str:
    """Stripe's integer amount in the smallest unit as exact decimal text in the currency's major unit."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StripeEventError(path, "must be a whole number of the currency's smallest unit, 0 or more")
    if currency in _ZERO_DECIMAL:
        return str(value)
    if currency in _THREE_DECIMAL:
        if value % 10:
            raise StripeEventError(
                path, f"{value} has a thousandth of a {currency.upper()}; amounts are kept to two decimals"
            )
        value //= 10
    whole, cents = divmod(value, 100)
    return f"{whole}.{cents:02d}"


def _fee(charge: Mapping[str, Any], path: str, currency: str) -> tuple[str, str]:
    """The processing fee and where it came from: the expanded balance transaction's fee (when it is in
    the charge's currency), else metadata `fee` (smallest unit, like Stripe amounts), else 0."""
    balance = charge.get("balance_transaction")
    if isinstance(balance, Mapping) and str(balance.get("currency", "")).lower() == currency:
        fee_path = f"{path}.balance_transaction.fee"
        return fee_path, _amount(balance.get("fee"), currency, fee_path)
    fee_path = f"{path}.metadata.fee"
    text = str(_metadata(charge, path).get("fee") or "").strip()
    if not text:
        return fee_path, "0"
    if not text.isascii() or not text.isdigit():
        raise StripeEventError(
            fee_path, f"{text[:20]!r} must be a whole number of the smallest unit, such as 375 for 3.75"
        )
    return fee_path, _amount(int(text), currency, fee_path)


def _metadata(obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise StripeEventError(f"{path}.metadata", "must be an object of key-value pairs")
    return metadata


def _patient(metadata: Mapping[str, Any], path: str, *, required: bool) -> str:
    value = str(metadata.get("patient_id") or "").strip()
    if not value and required:
        raise StripeEventError(
            f"{path}.metadata.patient_id",
            "is missing; set the payment platform's patient id in the charge's metadata as patient_id",
        )
    return value


def _payment_type(metadata: Mapping[str, Any], path: str) -> str:
    value = str(metadata.get("payment_type") or "").strip().lower()
    if not value:
        return DEFAULT_PAYMENT_TYPE.value
    try:
        return PaymentType(value).value
    except ValueError:
        raise StripeEventError(
            f"{path}.metadata.payment_type", f"{value[:40]!r} is not a payment type: {_PAYMENT_TYPES}"
        ) from None


def _card(charge: Mapping[str, Any]) -> tuple[str, str]:
    """Brand and last four digits of the card (online or on a terminal); nothing else of it is kept."""
    details = charge.get("payment_method_details")
    if not isinstance(details, Mapping):
        return "", ""
    for kind in ("card", "card_present"):
        card = details.get(kind)
        if isinstance(card, Mapping):
            brand, last4 = card.get("brand"), card.get("last4")
            return (
                brand[:20] if isinstance(brand, str) else "",
                last4 if isinstance(last4, str) and len(last4) == 4 and last4.isdigit() else "",
            )
    return "", ""
