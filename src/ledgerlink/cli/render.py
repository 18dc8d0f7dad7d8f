"""How the CLI shows reports and lists: Rich tables for people, CSV and JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.table import Table

from ledgerlink.domain.money import cents_to_decimal, format_cents
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine.operations import WritebackView
from ledgerlink.engine.reports import report_csv as report_csv  # the CLI's CSV is the dashboard's

_MAIN_LINES = (
    ReportCategory.RECURRING,
    ReportCategory.SALES,
    ReportCategory.REFUNDS,
    ReportCategory.VOIDS,
    ReportCategory.CHARGEBACKS,
    ReportCategory.DECLINED,
    ReportCategory.ALREADY_PROCESSED,
    ReportCategory.IN_ERROR,
    ReportCategory.INVALID_PATIENT_ID,
)


def report_table(report: SyncReport, title: str) -> Table:
    """The printed report of seed 000, plus the lines it lacks (skipped, held, cancelled) when non-zero."""
    table = Table(title=title, title_justify="left")
    table.add_column("Category")
    table.add_column("Count", justify="right")
    table.add_column("Total", justify="right")
    for line in report.lines:
        if line.category not in _MAIN_LINES and not line.count:
            continue
        style = (
            "bold red"
            if line.count and line.category in (ReportCategory.IN_ERROR, ReportCategory.INVALID_PATIENT_ID)
            else None
        )
        table.add_row(line.category.label, str(line.count), format_cents(line.total_cents), style=style)
    return table


def report_json(report: SyncReport, **meta: object) -> str:
    body = {
        **meta,
        "lines": [
            {
                "category": line.category.value,
                "label": line.category.label,
                "count": line.count,
                "total": str(cents_to_decimal(line.total_cents)),
                "total_cents": line.total_cents,
            }
            for line in report.lines
        ],
    }
    return json.dumps(body, indent=2, default=str)


def writebacks_table(rows: Sequence[WritebackView]) -> Table:
    table = Table(title=f"Writebacks ({len(rows)})", title_justify="left")
    for name, justify in (
        ("ID", "right"),
        ("Date", "left"),
        ("Reference", "left"),
        ("Kind", "left"),
        ("Type", "left"),
        ("Amount", "right"),
        ("Patient", "left"),
        ("Account #", "left"),
        ("Load Status", "left"),
        ("Load Error", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        status = {"failed": "[bold red]FAIL[/]", "posted": "[green]posted[/]"}.get(row.status, row.status)
        error = f"{row.error_code}: {row.error_message}" if row.error_code else ""
        amount = row.amount_cents or row.gross_cents
        table.add_row(
            str(row.id),
            row.local_date.isoformat(),
            row.processor_ref,
            row.kind,
            row.payment_type,
            format_cents(amount),
            row.patient_ref or "",
            row.account_number or "",
            status,
            error,
        )
    return table
