"""Money is integer cents everywhere; this module is the one place that parses and formats it.

Parsing goes through `Decimal` so that "19.99" never passes through a binary float.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

Cents = int
"""An amount in the smallest currency unit (cents for USD). Always an `int`."""


class AmountError(ValueError):
    """An amount that cannot be read as money (not a number, more than two decimals, out of range)."""


MAX_CENTS = 10**13  # one hundred billion dollars: anything larger is a data error, not a payment


_AMOUNT = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?$", re.ASCII)


def parse_amount(text: str, *, allow_negative: bool = False) -> Cents:
    """Read a decimal amount such as ``"1,234.50"`` or ``"$19.99"`` into cents.

    Commas are accepted only as thousands separators (``"12,50"`` is refused rather than read as
    1,250.00: a European decimal comma must never become an amount a hundred times too large); a leading
    currency symbol is accepted because spreadsheets add one; more than two decimal places is refused
    rather than rounded, because a silently rounded payment is a ledger that no longer matches the bank.
    """
    shown = text.strip()
    cleaned = shown.replace("$", "").replace(" ", "")
    if cleaned.startswith("(") and cleaned.endswith(")"):  # accounting notation for negatives
        cleaned = "-" + cleaned[1:-1]
    if not cleaned.replace(",", ""):
        raise AmountError("amount is empty")
    if not _AMOUNT.match(cleaned) or cleaned in ("-", ".", "-."):
        hint = " (use a dot for decimals: 12.50)" if re.search(r",\d{1,2}$", cleaned) else ""
        raise AmountError(f"{shown!r} is not an amount{hint}")
    value = Decimal(cleaned.replace(",", ""))
    if value.adjusted() >= 12:
        raise AmountError(f"{shown!r} is too large")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise AmountError(f"{shown!r} has more than two decimal places")
    if value < 0 and not allow_negative:
        raise AmountError(f"{shown!r} is negative; use the transaction kind for refunds")
    cents = int((value * 100).to_integral_value(rounding=ROUND_HALF_UP))
    if abs(cents) >= MAX_CENTS:
        raise AmountError(f"{shown!r} is too large")
    return cents


def cents_to_decimal(cents: Cents) -> Decimal:
    """Exact decimal value of an amount in cents, for APIs that speak decimal strings."""
    return (Decimal(cents) / 100).quantize(Decimal("0.01"))


def format_cents(cents: Cents, *, symbol: str = "$") -> str:
    """Human formatting: ``-1234567`` -> ``-$12,345.67``."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{symbol}{whole:,}.{frac:02d}"
