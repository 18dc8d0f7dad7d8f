"""The sync report of seed 000: a count and a total for each category, printable."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents


class ReportCategory(enum.StrEnum):
    RECURRING = "recurring"
    SALES = "sales"
    REFUNDS = "refunds"
    VOIDS = "voids"
    CHARGEBACKS = "chargebacks"
    DECLINED = "declined"
    ALREADY_PROCESSED = "already_processed"
    IN_ERROR = "in_error"
    INVALID_PATIENT_ID = "invalid_patient_id"
    SKIPPED_BY_SETTINGS = "skipped_by_settings"
    HELD_FOR_MANUAL = "held_for_manual"
    CANCELLED_BY_VOID = "cancelled_by_void"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    ReportCategory.RECURRING: "Recurring Payments",
    ReportCategory.SALES: "Sales",
    ReportCategory.REFUNDS: "Refunds",
    ReportCategory.VOIDS: "Voids",
    ReportCategory.CHARGEBACKS: "Charge Backs",
    ReportCategory.DECLINED: "Declined",
    ReportCategory.ALREADY_PROCESSED: "Already Processed",
    ReportCategory.IN_ERROR: "In Error",
    ReportCategory.INVALID_PATIENT_ID: "Invalid Patient ID",
    ReportCategory.SKIPPED_BY_SETTINGS: "Skipped by Settings",
    ReportCategory.HELD_FOR_MANUAL: "Held for Manual Posting",
    ReportCategory.CANCELLED_BY_VOID: "Cancelled by Void",
}


@dataclass(frozen=True, slots=True)
class ReportLine:
    category: ReportCategory
    count: int
    total_cents: Cents


@dataclass(frozen=True, slots=True)
class SyncReport:
    """Every category in the fixed order of the printed report, zero lines included."""

    lines: tuple[ReportLine, ...]

    @classmethod
    def from_totals(cls, totals: Iterable[tuple[ReportCategory | str, int, Cents]]) -> SyncReport:
        merged: dict[ReportCategory, tuple[int, Cents]] = {}
        for category, count, total in totals:
            key = ReportCategory(category)
            c, t = merged.get(key, (0, 0))
            merged[key] = (c + int(count), t + int(total))
        return cls(tuple(ReportLine(cat, *merged.get(cat, (0, 0))) for cat in ReportCategory))

    def line(self, category: ReportCategory) -> ReportLine:
        return next(line for line in self.lines if line.category is category)

    @property
    def transaction_count(self) -> int:
        return sum(line.count for line in self.lines)


_FAILURE_CATEGORIES = {
    LoadErrorCode.INVALID_PATIENT_ID: ReportCategory.INVALID_PATIENT_ID,
    # Left to staff by design (a task says what to enter): reported with what waits for a person.
    LoadErrorCode.HELD_FOR_STAFF: ReportCategory.HELD_FOR_MANUAL,
}


def failure_category(code: LoadErrorCode) -> ReportCategory:
    """The report line a failed writeback counts on: Invalid Patient ID, held for staff, or In Error."""
    return _FAILURE_CATEGORIES.get(code, ReportCategory.IN_ERROR)
