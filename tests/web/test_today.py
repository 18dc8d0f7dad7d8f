"""Today: the last sync's report, what failed and what waits for a person; Sync now runs a sync in the server
with live progress, and says so when a sync of the connection is already running."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any

import httpx

from tests.web.conftest import Dashboard, shoot, sign_in
from tests.web.test_reports import engine_report, page_report, sql


def make_work(dashboard: Dashboard, *, latency_ms: int) -> None:
    """Fix two patients' account numbers, queue the Invalid Patient ID failures again, and slow the sandbox
    PMS down (one entry per call, `latency_ms` each) so that a sync takes long enough to watch."""
    dashboard.cli("patients", "set-account", "P-1037", "37")
    dashboard.cli("patients", "set-account", "P-1040", "40")
    ids = [
        str(i) for (i,) in sql(dashboard, "SELECT id FROM writebacks WHERE error_code = 'INVALID_PATIENT_ID'")
    ]
    assert len(ids) == 4
    dashboard.cli("writebacks", "retry", *ids)
    [(settings,)] = sql(dashboard, "SELECT settings FROM connections")
    slow = {**json.loads(settings), "batch_size": 1, "latency_ms": latency_ms}
    sql(dashboard, "UPDATE connections SET settings = ?", json.dumps(slow))


def wait_for_run_end(client: httpx.Client, run_id: int) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        fragment = client.get(f"/today/sync/{run_id}/progress")
        assert fragment.status_code == 200
        if "data-refresh-url" not in fragment.text:
            return fragment.text
        assert 'role="status"' in fragment.text and "<progress" in fragment.text
        time.sleep(0.3)
    raise AssertionError(f"sync run {run_id} did not end")


def test_today_shows_the_last_report_what_failed_and_what_waits(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    today = signed_in.get("/today")
    assert today.status_code == 200
    assert page_report(today.text) == engine_report(dashboard, "--run", "1")
    text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", today.text)))
    assert re.search(r"Sync run 1 finished \w+ \d+, \d{4}, \d+:\d\d [AP]M", text)
    assert "5 payments, $680.25 could not be written to the PMS" in text
    assert "Invalid Patient ID" in text and "Fix the patient's account number, then Retry" in text
    assert "Original payment not found" in text and "re_demo_9999" in text
    assert 'href="/reconcile?status=failed"' in today.text
    assert "4 held for manual posting, $338.65" in text
    assert "Sync now" in text


def test_sync_now_needs_the_form_token_and_says_when_a_sync_is_already_running(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    assert signed_in.post("/today/sync", data={"connection": "1"}).status_code == 403
    make_work(dashboard, latency_ms=400)
    form = {"csrf_token": signed_in.csrf, "connection": "1"}  # type: ignore[attr-defined]
    started = signed_in.post("/today/sync", data=form)
    assert started.status_code == 303 and started.headers["location"] == "/today"
    running = signed_in.get("/today")
    assert "Sync run 2 started on pms." in running.text
    assert 'data-refresh-url="/today/sync/2/progress"' in running.text

    again = signed_in.post("/today/sync", data=form)
    assert again.status_code == 303
    assert "A sync is already running on pms" in signed_in.get("/today").text

    ended = wait_for_run_end(signed_in, 2)
    assert "data-reload-when-done" in ended and "Sync run 2 finished" in ended
    report = engine_report(dashboard, "--run", "2")
    assert page_report(ended) == report == page_report(signed_in.get("/today").text)
    assert report["sales"][0] == 2 and report["invalid_patient_id"][0] == 2
    runs = sql(dashboard, "SELECT id, status FROM sync_runs ORDER BY id")
    assert runs == [(1, "done"), (2, "done")]  # the refused second Sync now started no run
    audit = sql(dashboard, "SELECT actor, action, target FROM audit_log WHERE action = 'sync.start'")
    assert ("user frontdesk", "sync.start", "connection:1") in audit


def test_sync_now_shows_progress_and_ends_with_a_fresh_report(page: Any, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    page.wait_for_url("**/today")  # the landing page after sign-in
    report = page.locator("table.report")
    assert report.locator('tr[data-category="sales"] td').all_inner_texts() == ["27", "$5,005.21"]
    assert page.get_by_role("heading", name="What failed").is_visible()
    assert page.get_by_text("ch_demo_0036").is_visible()
    shoot(page, "today")

    make_work(dashboard, latency_ms=600)
    page.get_by_role("button", name="Sync now").click()
    status = page.locator(".sync-progress[role=status]")
    status.locator("progress").wait_for()
    assert "Sync run 2 is running" in status.inner_text()
    page.get_by_text("Sync run 2 finished").first.wait_for(timeout=30_000)
    page.locator("p.ran", has_text="Sync run 2").wait_for(timeout=30_000)  # the page reloaded
    expected = engine_report(dashboard, "--run", "2")
    sales = page.locator('table.report tr[data-category="sales"] td').all_inner_texts()
    assert sales == [str(expected["sales"][0]), f"${expected['sales'][1]:,}"] and sales[0] == "2"
    assert not page.locator("[data-refresh-url]").count()


def test_a_sync_started_through_the_api_shows_on_today_with_its_progress(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    """One Sync now service: the API's run is followed on Today (progress from the same process), and the
    dashboard's Sync now is refused while it runs."""
    token = dashboard.cli("token", "create", "--name", "script").stdout.strip()
    make_work(dashboard, latency_ms=300)
    with httpx.Client(base_url=dashboard.url, headers={"Authorization": f"Bearer {token}"}) as api:
        started = api.post("/v1/connections/1/sync")
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        today = signed_in.get("/today")
        assert f'data-refresh-url="/today/sync/{run_id}/progress"' in today.text
        fragment = signed_in.get(f"/today/sync/{run_id}/progress").text
        assert "<progress" in fragment and 'role="status"' in fragment
        form = {"csrf_token": signed_in.csrf, "connection": "1"}  # type: ignore[attr-defined]
        assert signed_in.post("/today/sync", data=form).status_code == 303
        assert "A sync is already running on pms" in signed_in.get("/today").text
        ended = wait_for_run_end(signed_in, run_id)
        status = api.get(f"/v1/connections/1/sync/{run_id}").json()
    assert f"Sync run {run_id} finished" in ended
    assert status["status"] == "done"
    api_report = {line["category"]: [line["count"], line["total_cents"]] for line in status["report"]}
    engine = engine_report(dashboard, "--run", str(run_id))
    assert api_report["sales"][0] == engine["sales"][0] == 2


def test_sync_now_that_fails_unexpectedly_shows_a_notice_not_an_error_page(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    sql(
        dashboard, "UPDATE connections SET settings = ?", json.dumps({"path": 5})
    )  # the task hits a TypeError
    form = {"csrf_token": signed_in.csrf, "connection": "1"}  # type: ignore[attr-defined]
    answer = signed_in.post("/today/sync", data=form)
    assert answer.status_code == 303 and answer.headers["location"] == "/today"
    today = signed_in.get("/today")
    assert today.status_code == 200
    assert "The sync of pms could not start: the sync stopped with an unexpected error (TypeError)" in (
        html.unescape(today.text)
    )
    assert sql(dashboard, "SELECT id FROM sync_runs ORDER BY id") == [(1,)]
