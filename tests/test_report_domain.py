"""The sync report of seed 000: every line in the printed order, counts and totals merged per category."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ledgerlink.domain.report import ReportCategory, ReportLine, SyncReport

SEED_000_LINES = [
    "Recurring Payments",
    "Sales",
    "Refunds",
    "Voids",
    "Charge Backs",
    "Declined",
    "Already Processed",
    "In Error",
    "Invalid Patient ID",
]


def test_report_lists_the_seed_000_lines_first_in_the_printed_order() -> None:
    report = SyncReport.from_totals([])
    labels = [line.category.label for line in report.lines]
    assert labels[: len(SEED_000_LINES)] == SEED_000_LINES


def test_report_ends_with_the_lines_ledgerlink_adds() -> None:
    report = SyncReport.from_totals([])
    labels = [line.category.label for line in report.lines]
    assert labels[len(SEED_000_LINES) :] == [
        "Skipped by Settings",
        "Held for Manual Posting",
        "Cancelled by Void",
    ]


def test_every_category_has_a_label() -> None:
    assert all(category.label for category in ReportCategory)
    assert len({category.label for category in ReportCategory}) == len(ReportCategory)


def test_empty_report_has_every_line_at_zero() -> None:
    report = SyncReport.from_totals([])
    assert [line.category for line in report.lines] == list(ReportCategory)
    assert all(line.count == 0 and line.total_cents == 0 for line in report.lines)
    assert report.transaction_count == 0


def test_order_does_not_depend_on_the_order_totals_arrive_in() -> None:
    totals = [
        (ReportCategory.INVALID_PATIENT_ID, 1, 500),
        (ReportCategory.SALES, 2, 2000),
        (ReportCategory.RECURRING, 3, 3000),
    ]
    forward = SyncReport.from_totals(totals)
    backward = SyncReport.from_totals(reversed(totals))
    assert forward == backward
    assert [line.category for line in forward.lines] == list(ReportCategory)


def test_lines_with_nothing_are_kept_as_zero_lines() -> None:
    report = SyncReport.from_totals([(ReportCategory.SALES, 2, 19400)])
    assert report.line(ReportCategory.SALES) == ReportLine(ReportCategory.SALES, 2, 19400)
    assert report.line(ReportCategory.CHARGEBACKS) == ReportLine(ReportCategory.CHARGEBACKS, 0, 0)
    assert len(report.lines) == len(ReportCategory)


def test_totals_of_the_same_category_are_merged() -> None:
    report = SyncReport.from_totals(
        [
            (ReportCategory.SALES, 2, 19400),
            (ReportCategory.REFUNDS, 1, 2500),
            (ReportCategory.SALES, 1, 9700),
            ("sales", 3, 300),
        ]
    )
    assert report.line(ReportCategory.SALES) == ReportLine(ReportCategory.SALES, 6, 29400)
    assert report.line(ReportCategory.REFUNDS) == ReportLine(ReportCategory.REFUNDS, 1, 2500)


def test_categories_stored_as_text_are_read_back() -> None:
    report = SyncReport.from_totals([("already_processed", 4, 40000), ("invalid_patient_id", 1, 9700)])
    assert report.line(ReportCategory.ALREADY_PROCESSED).count == 4
    assert report.line(ReportCategory.INVALID_PATIENT_ID).total_cents == 9700


def test_sums_that_postgresql_returns_as_numeric_become_int_cents() -> None:
    rows: list[tuple[str, Any, Any]] = [("sales", 2, Decimal("19400")), ("sales", 1, Decimal("9700"))]
    line = SyncReport.from_totals(rows).line(ReportCategory.SALES)
    assert (line.count, line.total_cents) == (3, 29100)
    assert type(line.count) is int and type(line.total_cents) is int


def test_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError):
        SyncReport.from_totals([("tips", 1, 100)])


def test_transaction_count_adds_every_line() -> None:
    report = SyncReport.from_totals(
        [
            (ReportCategory.SALES, 2, 19400),
            (ReportCategory.DECLINED, 1, 5000),
            (ReportCategory.ALREADY_PROCESSED, 7, 70000),
        ]
    )
    assert report.transaction_count == 10


def test_totals_keep_their_sign() -> None:
    report = SyncReport.from_totals([(ReportCategory.IN_ERROR, 1, -2500), (ReportCategory.IN_ERROR, 1, 1000)])
    assert report.line(ReportCategory.IN_ERROR) == ReportLine(ReportCategory.IN_ERROR, 2, -1500)


@pytest.mark.parametrize(
    ("category", "label"),
    [
        (ReportCategory.RECURRING, "Recurring Payments"),
        (ReportCategory.SALES, "Sales"),
        (ReportCategory.REFUNDS, "Refunds"),
        (ReportCategory.VOIDS, "Voids"),
        (ReportCategory.CHARGEBACKS, "Charge Backs"),
        (ReportCategory.DECLINED, "Declined"),
        (ReportCategory.ALREADY_PROCESSED, "Already Processed"),
        (ReportCategory.IN_ERROR, "In Error"),
        (ReportCategory.INVALID_PATIENT_ID, "Invalid Patient ID"),
    ],
)
def test_labels_use_the_seed_000_wording(category: ReportCategory, label: str) -> None:
    assert category.label == label
