"""Open Dental stores money as `double`; ledgerlink speaks `Decimal` dollars with two places and integer cents.

These are the only conversions between the two. Going in, an amount must already have at most two decimal
places (a third would be money the office never sees); going out, a double is rounded to cents as Open
Dental's database maintenance compares them (`ROUND(x, 2)`), read from the double's shortest decimal form
so that 0.1 + 0.2 comes back as 0.30, not 0.30000000000000004.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


class MoneyError(ValueError):
    """An amount that cannot be stored as Open Dental money (not finite, or more than two decimals)."""


def to_double(amount: Decimal) -> float:
    """The double Open Dental stores for a Decimal amount of at most two decimal places.

    `float(Decimal("12.34"))` is the double nearest to 12.34, the same double Open Dental's own parsing of
    "12.34" gives, so writing through here and reading through `from_double` round-trips exactly.
    """
    try:
        if not amount.is_finite() or amount != amount.quantize(CENT):
            raise MoneyError(f"{amount} is not an amount with at most two decimal places")
    except InvalidOperation as exc:  # quantize of an enormous value
        raise MoneyError(f"{amount} is too large") from exc
    return float(amount)


def from_double(value: float) -> Decimal:
    """A stored double as Decimal dollars, rounded to cents (half away from zero) as ROUND(x, 2) would."""
    return Decimal(repr(float(value))).quantize(CENT, rounding=ROUND_HALF_UP)


def double_to_cents(value: float) -> int:
    return int(from_double(value) * 100)


def cents_to_double(cents: int) -> float:
    """Exact: `cents / 100` is the double nearest the amount, the same one `to_double` gives."""
    return cents / 100


def decimal_to_cents(amount: Decimal) -> int:
    to_double(amount)  # validates: at most two decimals
    return int(amount * 100)


def cents_to_decimal(cents: int) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def format_money(amount: Decimal) -> str:
    """As .NET's `ToString("c")` in en-US, which Open Dental's log texts use: `$1,234.50`, `-$12.50`."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):,.2f}"
