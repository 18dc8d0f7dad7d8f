"""The Sync report page: a run's or a range's report with the engine's numbers, CSV export, bad dates, the
privilege it needs, another practice's runs, and the printed page."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from decimal import Decimal
from typing import Any

import httpx

from tests.web.conftest import Dashboard, shoot, sign_in

DEMO_DAY = "2026-12-02"


def page_report(html: str) -> dict[str, tuple[int, Decimal]]:
    """The report table of a page: category -> (count, total), 'all' for the grand total."""
    rows = re.findall(
        r'data-category="(\w+)">\s*<th scope="row">.*?</th>\s*<td class="num">([\d,]+)</td>\s*'
        r'<td class="num">\$([\d,.]+)</td>',
        html,
        re.S,
    )
    assert rows, "no report table on the page"
    return {cat: (int(n.replace(",", "")), Decimal(t.replace(",", ""))) for cat, n, t in rows}


def engine_report(dashboard: Dashboard, *args: str) -> dict[str, tuple[int, Decimal]]:
    """The same report as `ledgerlink report` prints it (engine.reports, as the API's report endpoints)."""
    body = json.loads(dashboard.cli("report", "--practice", "demo", *args, "--format", "json").stdout)
    lines = {line["category"]: (line["count"], Decimal(line["total"])) for line in body["lines"]}
    lines["all"] = (sum(c for c, _ in lines.values()), sum((t for _, t in lines.values()), Decimal(0)))
    return lines


def other_practice(dashboard: Dashboard) -> tuple[int, int]:
    """A second practice with a sandbox connection and one sync run: (its connection id, its run id)."""
    dashboard.cli("practice", "create", "other", "--name", "Other Dental", "--timezone", "America/Chicago")
    dashboard.cli("connection", "add", "--practice", "other", "--kind", "sandbox", "-s", "path=other-pms.db")
    dashboard.cli("sync", "--practice", "other")
    [(connection_id, run_id)] = sql(
        dashboard,
        "SELECT c.id, r.id FROM connections c JOIN practices p ON p.id = c.practice_id "
        "JOIN sync_runs r ON r.connection_id = c.id WHERE p.slug = 'other'",
    )
    return int(connection_id), int(run_id)


def sql(dashboard: Dashboard, query: str, *params: Any) -> list[Any]:
    """Run SQL on the served store (SQLite) directly: for what no command sets (connector knobs)."""
    with sqlite3.connect(dashboard.data_dir / "ledgerlink.db") as db:
        return db.execute(query, params).fetchall()


def test_a_runs_report_and_a_days_report_show_the_engines_numbers(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    latest = signed_in.get("/reports")
    assert latest.status_code == 200
    by_run = page_report(signed_in.get("/reports?run=1").text)
    assert page_report(latest.text) == by_run == engine_report(dashboard, "--run", "1")
    assert by_run["sales"] == (27, Decimal("5005.21")) and by_run["all"] == (50, Decimal("7667.82"))
    for label in (
        "Recurring Payments",
        "Charge Backs",
        "Already Processed",
        "Invalid Patient ID",
        "Held for Manual Posting",
    ):
        assert label in latest.text

    days = signed_in.get(f"/reports?from={DEMO_DAY}&to={DEMO_DAY}")
    assert days.status_code == 200 and "Dec 2, 2026" in days.text
    assert page_report(days.text) == engine_report(dashboard, "--since", DEMO_DAY, "--until", DEMO_DAY)
    # One day alone is that day's report.
    assert page_report(signed_in.get(f"/reports?from={DEMO_DAY}").text) == page_report(days.text)


def test_csv_export_has_the_reports_lines_as_plain_decimals(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    answer = signed_in.get("/reports.csv?run=1")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert answer.headers["content-disposition"] == 'attachment; filename="sync-report-run-1.csv"'
    assert (
        answer.text == dashboard.cli("report", "--practice", "demo", "--run", "1", "--format", "csv").stdout
    )
    lines = answer.text.splitlines()
    assert lines[0] == "category,label,count,total" and "sales,Sales,27,5005.21" in lines
    assert all(re.fullmatch(r"\d+\.\d\d", line.rsplit(",", 1)[1]) for line in lines[1:])

    days = signed_in.get(f"/reports.csv?from={DEMO_DAY}&to={DEMO_DAY}&connection=1")
    assert days.status_code == 200
    assert f'filename="sync-report-{DEMO_DAY}-to-{DEMO_DAY}.csv"' in days.headers["content-disposition"]
    # The page's own CSV link carries the same parameters.
    page = signed_in.get(f"/reports?from={DEMO_DAY}&to={DEMO_DAY}").text
    link = re.search(r'href="(/reports\.csv\?[^"]+)"', page)
    assert link and signed_in.get(link.group(1).replace("&amp;", "&")).text == days.text


def test_bad_dates_are_refused_next_to_their_field(signed_in: httpx.Client) -> None:
    unreadable = signed_in.get("/reports?from=2026-13-45&to=2026-12-02")
    assert unreadable.status_code == 400
    assert re.search(r'id="f-from-error">The first day is not a date', unreadable.text)
    assert 'aria-describedby="f-from-error"' in unreadable.text and 'value="2026-13-45"' in unreadable.text
    backwards = signed_in.get("/reports?from=2026-12-02&to=2026-12-01")
    assert backwards.status_code == 400 and re.search(
        r'id="f-to-error">The last day is before', backwards.text
    )
    assert 'data-category="all"' not in backwards.text
    assert signed_in.get("/reports.csv?from=2026-12-02&to=2026-12-01").status_code == 400


def test_reports_need_view_reports_and_another_practices_runs_are_not_found(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    dashboard.cli("users", "add", "importer", "--practice", "demo", "-P", "import_patients")
    dashboard.cli(
        "users",
        "set-password",
        "importer",
        "--practice",
        "demo",
        "--password-stdin",
        input="importer-password-1\n",
    )
    importer = dashboard.sign_in_client("importer", "importer-password-1")
    try:
        for path in ("/reports", "/reports.csv?run=1", "/today", "/today/sync/1/progress"):
            refused = importer.get(path)
            assert refused.status_code == 403 and "may not view reports" in refused.text, path
        csrf = importer.csrf  # type: ignore[attr-defined]
        assert importer.post("/today/sync", data={"csrf_token": csrf, "connection": "1"}).status_code == 403
    finally:
        importer.close()

    connection_id, run_id = other_practice(dashboard)
    missing = signed_in.get("/reports?run=999999")
    assert missing.status_code == 404
    for path in (f"/reports?run={run_id}", f"/reports.csv?run={run_id}", f"/reports?connection={connection_id}",
                 f"/today/sync/{run_id}/progress"):  # fmt: skip
        answer = signed_in.get(path)
        assert answer.status_code == 404 and answer.text == missing.text, path
    assert "Other Dental" not in signed_in.get("/reports").text
    form = {"csrf_token": signed_in.csrf, "connection": str(connection_id)}  # type: ignore[attr-defined]
    assert signed_in.post("/today/sync", data=form).status_code == 404


def test_the_printed_report_has_the_totals_shown_on_screen(page: Any, dashboard: Dashboard) -> None:
    from pypdf import PdfReader

    page.goto(dashboard.url + "/reports")
    sign_in(page, dashboard)
    page.wait_for_url("**/reports")
    table = page.locator("table.report")
    on_screen = {
        row.get_attribute("data-category"): row.locator("td").all_inner_texts()
        for row in table.locator("tr[data-category]").all()
    }
    assert on_screen["sales"] == ["27", "$5,005.21"] and on_screen["all"] == ["50", "$7,667.82"]
    assert page.get_by_role("button", name="Print").is_visible()
    shoot(page, "report")

    page.emulate_media(media="print")
    assert not page.get_by_role("navigation", name="Main").is_visible()
    assert page.get_by_text("Printed").is_visible()
    shoot(page, "report-print")
    text = " ".join(PdfReader(io.BytesIO(page.pdf(format="Letter"))).pages[0].extract_text().split())
    assert "Bright Smile Dental" in text and "Printed" in text and "Sync run 1" in text
    for label, (count, total) in {
        "Sales": on_screen["sales"],
        "Held for Manual Posting": on_screen["held_for_manual"],
        "All transactions": on_screen["all"],
    }.items():
        assert f"{label} {count} {total}" in text, text
    assert "Invalid Patient ID (needs attention) 4 $620.25" in text
    assert "Reconciliation" not in text and "Download CSV" not in text and "Show report" not in text
