"""Reconciliation: filters, Load Error in words, Save Changes (Retry and Clear through the API's services, audited),
CSRF and privileges, rows that follow the worker, and isolation between practices.

The demo practice has five failed writebacks: ch_demo_0007 (P-1038), ch_demo_0018 (P-1039) and ch_demo_0036
(P-1037) have no account number, ch_demo_0029 (P-1040) a mistyped one (9040), and re_demo_9999 refunds a
payment ledgerlink never saw; insurance payments are held for manual posting.
"""

from __future__ import annotations

import re
from datetime import timedelta
from zoneinfo import ZoneInfo

import httpx

from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.rules import SkipReason
from ledgerlink.web.pages.reconcile import NO_ACCOUNT_NUMBER, SKIP_WORDS, WRONG_ACCOUNT_NUMBER
from tests.web.conftest import TIMEZONE, Dashboard
from tests.web.ledger_checks import (
    add_other_practice,
    audit,
    payments_on_page,
    status_of,
    viewer_client,
    writeback_id,
    writeback_states,
)

FAILED = ["ch_demo_0007", "ch_demo_0018", "ch_demo_0029", "ch_demo_0036", "re_demo_9999"]


def _row(html: str, payment: str) -> str:
    found = re.search(rf'<tr id="wb-\d+"[^>]*data-payment="{payment}".*?</tr>', html, re.S)
    assert found, f"no row for {payment}"
    return found.group(0)


def test_filters_by_status_payment_type_patient_and_practice_local_dates_and_bad_ones(
    signed_in: httpx.Client,
) -> None:
    everything = signed_in.get("/reconcile")
    assert everything.status_code == 200 and "Payments 1–50 of 50" in everything.text
    assert sorted(payments_on_page(signed_in.get("/reconcile?status=failed").text)) == FAILED
    online = signed_in.get("/reconcile", params={"status": "failed", "type": "online"}).text
    assert sorted(payments_on_page(online)) == ["ch_demo_0007", "ch_demo_0018", "re_demo_9999"]
    assert payments_on_page(signed_in.get("/reconcile?q=P-1037").text) == ["ch_demo_0036"]
    assert payments_on_page(
        signed_in.get("/reconcile", params={"q": "Tess Quinn", "status": "failed"}).text
    ) == ["ch_demo_0036"]
    assert payments_on_page(signed_in.get("/reconcile?q=9040").text) == ["ch_demo_0029"]
    # The demo's day is yesterday in the practice's zone; one sale is from six days before it.
    day = utcnow().astimezone(ZoneInfo(TIMEZONE)).date() - timedelta(days=1)
    earlier = signed_in.get("/reconcile", params={"until": (day - timedelta(days=1)).isoformat()}).text
    assert payments_on_page(earlier) == ["ch_demo_0001"]
    that_day = signed_in.get("/reconcile", params={"since": day.isoformat(), "until": day.isoformat()}).text
    assert "of 49</span>" in that_day and "ch_demo_0001" not in payments_on_page(that_day)
    # The filters are kept in the form and the page links.
    assert 'name="status" value="failed"' in signed_in.get("/reconcile?status=failed").text
    # Bad filters are refused next to their field.
    answer = signed_in.get("/reconcile", params={"since": "2026-13-01", "status": "lost"})
    assert answer.status_code == 400
    assert 'id="f-since-error">Enter a date' in answer.text
    assert 'id="f-status-error">Choose a status' in answer.text
    backwards = signed_in.get("/reconcile", params={"since": "2026-03-02", "until": "2026-03-01"})
    assert backwards.status_code == 400 and "The last day is before the first day." in backwards.text


def test_every_load_error_and_skip_reason_has_words_for_the_front_desk() -> None:
    assert set(SKIP_WORDS) == set(SkipReason)
    failures = [code.explanation for code in LoadErrorCode] + [NO_ACCOUNT_NUMBER, WRONG_ACCOUNT_NUMBER]
    for words in [*failures, *SKIP_WORDS.values()]:
        assert words.endswith(".") and "_" not in words
    # Every failure says what to do about it.
    assert all(re.search(r"Retry|Clear", words) for words in failures)


def test_load_errors_are_shown_in_words_with_the_code_in_small_print(signed_in: httpx.Client) -> None:
    page = signed_in.get("/reconcile").text
    missing = _row(page, "ch_demo_0036")
    assert NO_ACCOUNT_NUMBER.replace("'", "&#39;") in missing and "Code INVALID_PATIENT_ID" in missing
    assert "Failed" in missing and "$339.55" in missing and "Quinn, Tess" in missing
    mistyped = _row(page, "ch_demo_0029")
    assert (
        "The PMS has no patient with this account number. Fix the patient&#39;s account number, then Retry."
        in mistyped
    )
    assert "no patient has PatNum 9040" in mistyped  # the PMS's own words, for support
    unknown_original = _row(page, "re_demo_9999")
    assert LoadErrorCode.ORIGINAL_NOT_FOUND.explanation in unknown_original
    held = _row(page, "ch_demo_0009")  # an insurance payment, set to manual posting
    assert SKIP_WORDS[SkipReason.HELD_FOR_MANUAL] in held and "Code HELD_FOR_MANUAL" in held
    assert 'name="retry"' in held and 'name="clear"' in held
    declined = _row(page, "ch_demo_0013")
    assert SKIP_WORDS[SkipReason.DECLINED] in declined and 'name="retry"' not in declined
    assert 'name="clear"' not in declined
    posted = _row(page, "ch_demo_0002")
    assert "Posted" in posted and 'name="retry"' not in posted and 'name="clear"' not in posted


def test_save_changes_retries_and_clears_with_audit_and_keeps_the_filters(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    retry, clear = writeback_id(dashboard, "ch_demo_0036"), writeback_id(dashboard, "re_demo_9999")
    retry_two = writeback_id(dashboard, "ch_demo_0029")
    answer = signed_in.post(
        "/reconcile",
        data={"csrf_token": signed_in.csrf, "status": "failed", "q": "", "retry": [retry, retry_two],  # type: ignore[attr-defined]
              "clear": [clear]},
    )  # fmt: skip
    assert answer.status_code == 303 and answer.headers["location"] == "/reconcile?status=failed"
    after = signed_in.get(answer.headers["location"]).text
    assert "2 queued for retry, 1 cleared." in after
    assert (status_of(dashboard, retry), status_of(dashboard, clear)) == ("pending", "cleared")
    assert audit(dashboard, "writeback.retry") == [
        ("user frontdesk", f"writeback:{retry}"),
        ("user frontdesk", f"writeback:{retry_two}"),
    ]
    assert audit(dashboard, "writeback.clear") == [("user frontdesk", f"writeback:{clear}")]

    # The queued row follows the worker and offers no second Retry while it waits.
    waiting = _row(signed_in.get("/reconcile").text, "ch_demo_0036")
    assert f'data-refresh-url="/reconcile/rows/{retry}"' in waiting
    assert "Waiting to post" in waiting and 'name="retry"' not in waiting
    fragment = signed_in.get(f"/reconcile/rows/{retry}")
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith(f'<tr id="wb-{retry}"')
    assert "<html" not in fragment.text
    cleared = _row(signed_in.get("/reconcile").text, "re_demo_9999")
    assert "Cleared" in cleared and "data-refresh-url" not in cleared and 'name="clear"' not in cleared

    # Retrying what is already queued changes nothing and says why.
    again = signed_in.post("/reconcile", data={"csrf_token": signed_in.csrf, "retry": retry})  # type: ignore[attr-defined]
    assert "only failed writebacks can be retried" in signed_in.get(again.headers["location"]).text
    assert len(audit(dashboard, "writeback.retry")) == 2


def test_save_changes_without_the_csrf_token_or_with_both_or_no_boxes_changes_nothing(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    before = writeback_states(dashboard)
    wid = writeback_id(dashboard, "ch_demo_0036")
    for token in ("", "forged"):
        answer = signed_in.post("/reconcile", data={"csrf_token": token, "retry": wid})
        assert answer.status_code == 403 and "Nothing was changed" in answer.text
    both = signed_in.post("/reconcile", data={"csrf_token": signed_in.csrf, "retry": wid, "clear": wid})  # type: ignore[attr-defined]
    assert both.status_code == 400 and "tick Retry or Clear for a payment, not both" in both.text
    none = signed_in.post("/reconcile", data={"csrf_token": signed_in.csrf})  # type: ignore[attr-defined]
    assert none.status_code == 303 and "Nothing to save" in signed_in.get(none.headers["location"]).text
    assert writeback_states(dashboard) == before and audit(dashboard, "writeback.retry") == []


def test_a_viewer_sees_no_boxes_and_cannot_save_changes(dashboard: Dashboard) -> None:
    before = writeback_states(dashboard)
    wid = writeback_id(dashboard, "ch_demo_0036")
    viewer = viewer_client(dashboard)
    try:
        page = viewer.get("/reconcile")
        assert page.status_code == 200 and "ch_demo_0036" in page.text
        assert 'name="retry"' not in page.text and "Save Changes</button>" not in page.text
        answer = viewer.post("/reconcile", data={"csrf_token": viewer.csrf, "retry": wid})  # type: ignore[attr-defined]
        assert answer.status_code == 403 and "retry and clear payments" in answer.text
    finally:
        viewer.close()
    assert writeback_states(dashboard) == before and audit(dashboard, "writeback.retry") == []


def test_another_practices_writebacks_answer_404_and_stay_unchanged(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    add_other_practice(dashboard)
    theirs = writeback_id(dashboard, "ch_demo_0036", practice="other")
    ours = writeback_id(dashboard, "ch_demo_0029")
    before = writeback_states(dashboard)
    assert signed_in.get(f"/reconcile/rows/{theirs}").status_code == 404
    assert signed_in.get("/reconcile/rows/999999").status_code == 404
    # Their payment with the same reference is not listed, only ours.
    assert payments_on_page(signed_in.get("/reconcile?q=ch_demo_0036").text) == ["ch_demo_0036"]
    assert "of 50</span>" in signed_in.get("/reconcile").text
    for field in ("retry", "clear"):
        answer = signed_in.post("/reconcile", data={"csrf_token": signed_in.csrf, field: [ours, theirs]})  # type: ignore[attr-defined]
        assert answer.status_code == 404
    assert writeback_states(dashboard) == before  # not even our own was changed
    assert audit(dashboard, "writeback.retry") == [] and audit(dashboard, "writeback.clear") == []
