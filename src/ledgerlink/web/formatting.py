"""Money, dates and times written for the practice: its locale (Babel's CLDR data) and its time zone.

Amounts are integer cents turned into `Decimal` for Babel, never floats. Times are stored in UTC and shown
on the practice's wall clock; posting dates are already the practice's local dates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal

from ledgerlink.clock import time_zone

DEFAULT_LOCALE = "en_US"


@dataclass(frozen=True, slots=True)
class PracticeFormat:
    locale: str
    timezone: str
    currency: str = "USD"

    def money(self, cents: int | None, currency: str | None = None) -> str:
        if cents is None:
            return ""
        return format_currency(Decimal(cents).scaleb(-2), currency or self.currency, locale=self.locale)

    def number(self, value: int) -> str:
        return format_decimal(value, locale=self.locale)

    def day(self, value: date | None) -> str:
        return format_date(value, "medium", locale=self.locale) if value else ""

    def moment(self, value: datetime | None) -> str:
        """An instant on the practice's wall clock, e.g. 'Dec 3, 2026, 9:14 AM'."""
        if value is None:
            return ""
        local = value.astimezone(time_zone(self.timezone))
        return f"{format_date(local, 'medium', locale=self.locale)}, {format_time(local, 'short', locale=self.locale)}"
