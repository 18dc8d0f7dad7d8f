"""The Audit log page: newest first, filters by local dates, who and what, readable details without secrets,
pages of entries, only for administrators, and only the practice's own entries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from ledgerlink.web.pages.audit import action_name, detail_pairs, target_text
from tests.web.conftest import TIMEZONE, Dashboard, shoot, sign_in

ROW = re.compile(
    r'<td class="when">([^<]*)</td>\s*<td>([^<]*)</td>\s*<th scope="row">([^<]*)<span class="code">([^<]*)</span>'
)


@pytest.fixture
def admin(dashboard: Dashboard) -> Iterator[httpx.Client]:
    with closing(dashboard.sign_in_client("admin")) as client:
        yield client


def entries(client: httpx.Client, **filters: str) -> list[tuple[str, str, str, str]]:
    """(time, who, what, action) of each row the page shows."""
    answer = client.get("/audit", params=filters)
    assert answer.status_code == 200, answer.text
    return ROW.findall(answer.text)


def test_the_log_reads_newest_first_with_readable_details(admin: httpx.Client) -> None:
    page = admin.get("/audit").text
    shown = ROW.findall(page)
    assert shown[0][1:3] == ("user admin", "Signed in")  # the sign-in that opened this page
    assert shown[-1][1:] == ("demo", "Practice created", "practice.create")
    assert "Dec" in shown[0][0] or re.search(r"\d{4}, \d{1,2}:\d{2}", shown[0][0])  # fmt.moment, not ISO
    # user.created's detail: its privileges as a list, its login hours in words.
    assert "<dt>Privileges</dt><dd>view_reports, run_sync, retry_clear, import_patients</dd>" in page
    assert "<dt>Login hours</dt><dd>any time</dd>" in page
    assert "<td>practice demo</td>" in page and "<td>connection 1</td>" in page


def test_filters_by_action_actor_and_the_practices_local_dates(admin: httpx.Client) -> None:
    assert {row[3] for row in entries(admin, action="user.created")} == {"user.created"}
    assert len(entries(admin, action="user.created")) == 2
    assert {row[1] for row in entries(admin, actor="demo")} == {"demo"}
    today = datetime.now(ZoneInfo(TIMEZONE)).date()
    everything = entries(admin)
    assert entries(admin, start=today.isoformat(), end=today.isoformat()) == everything
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert entries(admin, start=tomorrow) == []
    assert "No entry matches these filters" in admin.get("/audit", params={"start": tomorrow}).text
    assert entries(admin, end=(today - timedelta(days=1)).isoformat()) == []

    bad = admin.get("/audit", params={"start": "last tuesday"})
    backwards = admin.get("/audit", params={"start": today.isoformat(), "end": "2020-01-01"})
    assert bad.status_code == 400 and 'id="f-start-error">Enter a date' in bad.text
    assert (
        backwards.status_code == 400 and 'id="f-end-error">The last day must be on or after' in backwards.text
    )


def test_long_logs_come_in_pages_of_fifty(dashboard: Dashboard, admin: httpx.Client) -> None:
    for _ in range(26):  # each visit is a sign-in and a sign-out in the log
        with closing(dashboard.sign_in_client("frontdesk")) as visitor:
            visitor.post("/sign-out", data={"csrf_token": visitor.csrf})  # type: ignore[attr-defined]
    first = admin.get("/audit").text
    older = re.search(r'<a href="(/audit\?before=\d+)">Older entries</a>', first)
    assert older and len(ROW.findall(first)) == 50
    second = admin.get(older.group(1).replace("&amp;", "&")).text
    assert 'href="/audit">Newest entries</a>' in second
    rest = ROW.findall(second)
    assert rest and rest[-1][3] == "practice.create" and "Older entries" not in second
    filtered = admin.get("/audit", params={"actor": "user frontdesk"}).text
    assert "Older entries" in filtered and "actor=user+frontdesk" in filtered


def test_the_audit_log_is_for_administrators_only(signed_in: httpx.Client) -> None:
    answer = signed_in.get("/audit")
    assert answer.status_code == 403 and "manage settings or manage users" in answer.text
    assert 'href="/audit"' not in signed_in.get("/account").text


def test_only_the_practices_own_entries_are_shown(dashboard: Dashboard, admin: httpx.Client) -> None:
    dashboard.cli("practice", "create", "other", "--name", "Other Dental", "--timezone", "America/Chicago")
    dashboard.cli("users", "add", "otheradmin", "--practice", "other", "--privilege", "manage_users")
    page = admin.get("/audit", params={"action": "practice.create"}).text
    assert [row[1:] for row in ROW.findall(page)] == [("demo", "Practice created", "practice.create")]
    everything = admin.get("/audit").text
    assert "practice other" not in everything and "otheradmin" not in everything


def test_details_never_show_secrets_and_actions_read_as_words() -> None:
    pairs = dict(
        detail_pairs(
            {
                "merchant_key": "mk_live_abcdef123456",
                "password": "hunter2hunter2",
                "settings": {"api_key": "od-secret", "url": "https://od.example"},
                "note": "ll_abc123_0123456789abcdef",
                "name": {"previous": "Smile", "new": "Bright Smile"},
                "active": False,
                "start_date": None,
            }
        )
    )
    assert pairs == {
        "Merchant key": "(hidden)",
        "Password": "(hidden)",
        "Settings": "api key: (hidden); url: https://od.example",
        "Note": "(hidden)",
        "Name": "Smile → Bright Smile",
        "Active": "no",
        "Start date": "none",
    }
    assert action_name("writeback.clear") == "Payment cleared (posted by hand)"
    assert action_name("something.new_here") == "Something new here"
    assert target_text("patient_import:7") == "patient import 7" and target_text("user admin") == "user admin"


def test_audit_log_in_the_browser(page: Any, dashboard: Dashboard) -> None:
    page.goto(dashboard.url + "/audit")
    sign_in(page, dashboard, "admin")
    page.get_by_role("heading", name="Audit log").wait_for()
    assert page.locator("table.audit tbody tr").count() >= 8
    shoot(page, "audit")
    page.get_by_label("What").select_option(label="User added")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("link", name="Clear filters").wait_for()
    rows = page.locator("table.audit tbody tr")
    assert rows.count() == 2
    assert "Privileges" in rows.first.inner_text()
