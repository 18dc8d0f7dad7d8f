"""Patients: search, the account number fixed in place (the same service and audit as the API), suggestions
from the sandbox PMS by name and date of birth, one-click retry, privileges, CSRF and isolation.

In the demo, P-1037 (Tess Quinn) has no account number and P-1040 (Ava Turner) a mistyped one, 9040; the
sandbox PMS has them as PatNums 37 and 40, and another Tess Quinn (P-1017, PatNum 17) born on another day.
"""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import Dashboard
from tests.web.ledger_checks import (
    account_number,
    add_other_practice,
    audit,
    connection_id,
    patient_id,
    status_of,
    viewer_client,
    writeback_id,
    writeback_states,
)


def _refs(html: str) -> list[str]:
    """The patient ids listed on the Patients page, in order."""
    return re.findall(r"<td>(P-\d+)</td>", html)


def test_patients_are_found_by_name_patient_id_account_number_and_failures(signed_in: httpx.Client) -> None:
    everyone = signed_in.get("/patients")
    assert everyone.status_code == 200 and "Patients 1–40 of 40" in everyone.text
    assert _refs(signed_in.get("/patients", params={"q": "tess quinn"}).text) == ["P-1017", "P-1037"]
    assert _refs(signed_in.get("/patients", params={"q": "P-1040"}).text) == ["P-1040"]
    assert _refs(signed_in.get("/patients", params={"q": "9040"}).text) == ["P-1040"]
    failing = signed_in.get("/patients", params={"failed": "1"}).text
    assert sorted(_refs(failing)) == ["P-1012", "P-1037", "P-1038", "P-1039", "P-1040"]
    assert "1 failed" in failing and "Only patients with failed payments" in failing
    assert "No patients match" in signed_in.get("/patients", params={"q": "nobody-like-this"}).text


def test_the_pms_suggests_matches_by_name_and_date_of_birth(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    page = signed_in.get(f"/patients/{patient_id(dashboard, 'P-1037')}").text
    assert "Suggested matches from the PMS" in page
    suggestions = page[page.index("Suggested matches from the PMS") :]
    rows = re.findall(r"<tr>\s*<th scope=\"row\">(.*?)</th>.*?</tr>", suggestions, re.S)
    assert rows == ["Quinn, Tess", "Quinn, Tess"]
    best, other = re.findall(r"<tr>\s*<th scope=\"row\">.*?</tr>", suggestions, re.S)[:2]
    assert "<td>37</td>" in best and "Name and date of birth match" in best
    assert "Use this account number" in best and 'name="account_number" value="37"' in best
    assert "<td>17</td>" in other and "Name matches, date of birth does not" in other
    assert "Already the account number of P-1017" in other and "Use this account number" not in other
    mistyped = signed_in.get(f"/patients/{patient_id(dashboard, 'P-1040')}").text
    assert "the PMS has no patient with account number 9040" in mistyped
    assert 'name="account_number" value="40"' in mistyped
    # A patient whose payments all posted: nothing to suggest, nothing to retry.
    fine = signed_in.get(f"/patients/{patient_id(dashboard, 'P-1001')}").text
    assert "Suggested matches" not in fine and "Retry this patient" not in fine


def test_fixing_an_account_number_refuses_blanks_and_taken_numbers_next_to_the_field(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    pid, cid = patient_id(dashboard, "P-1037"), connection_id(dashboard)
    url = f"/patients/{pid}/accounts/{cid}"
    field_error = re.compile(rf'<p class="field-error" id="account-{cid}-error">([^<]+)</p>')
    for blank in ("", "   "):
        answer = signed_in.post(url, data={"csrf_token": signed_in.csrf, "account_number": blank})  # type: ignore[attr-defined]
        assert answer.status_code == 400
        assert field_error.search(answer.text).group(1).startswith("Enter the account number")  # type: ignore[union-attr]
        assert f'aria-describedby="account-{cid}-help account-{cid}-error" aria-invalid="true"' in answer.text
    taken = signed_in.post(url, data={"csrf_token": signed_in.csrf, "account_number": " 17 "})  # type: ignore[attr-defined]
    assert taken.status_code == 400 and "already belongs to patient &#39;P-1017&#39;" in taken.text
    assert 'value=" 17 "' in taken.text  # what was typed stays in the field
    long = signed_in.post(url, data={"csrf_token": signed_in.csrf, "account_number": "9" * 101})  # type: ignore[attr-defined]
    assert long.status_code == 400 and "longer than 100 characters" in long.text
    assert account_number(dashboard, "P-1037") is None and audit(dashboard, "patient.account_number") == []

    fixed = signed_in.post(url, data={"csrf_token": signed_in.csrf, "account_number": " 37 "})  # type: ignore[attr-defined]
    assert fixed.status_code == 303 and fixed.headers["location"] == f"/patients/{pid}"
    after = signed_in.get(fixed.headers["location"]).text
    assert "Account number on pms set to 37. 1 failed payment can now be retried" in after
    assert account_number(dashboard, "P-1037") == "37"
    assert audit(dashboard, "patient.account_number")[-1] == ("user frontdesk", "patient:P-1037")


def test_retry_this_patients_failed_writebacks_in_one_click(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    pid = patient_id(dashboard, "P-1040")
    wid = writeback_id(dashboard, "ch_demo_0029")
    signed_in.post(
        f"/patients/{pid}/accounts/{connection_id(dashboard)}",
        data={"csrf_token": signed_in.csrf, "account_number": "40"},  # type: ignore[attr-defined]
    )
    answer = signed_in.post(f"/patients/{pid}/retry", data={"csrf_token": signed_in.csrf})  # type: ignore[attr-defined]
    assert answer.status_code == 303 and answer.headers["location"] == "/reconcile?q=P-1040"
    assert "1 failed payment of P-1040 queued for retry." in signed_in.get(answer.headers["location"]).text
    assert status_of(dashboard, wid) == "pending"
    assert audit(dashboard, "writeback.retry") == [("user frontdesk", f"writeback:{wid}")]
    again = signed_in.post(f"/patients/{pid}/retry", data={"csrf_token": signed_in.csrf})  # type: ignore[attr-defined]
    assert "no failed payments to retry" in signed_in.get(again.headers["location"]).text


def test_only_staff_who_may_retry_and_clear_change_account_numbers_and_only_with_the_csrf_token(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    pid, cid = patient_id(dashboard, "P-1037"), connection_id(dashboard)
    before = writeback_states(dashboard)
    forged = signed_in.post(
        f"/patients/{pid}/accounts/{cid}", data={"csrf_token": "forged", "account_number": "37"}
    )
    assert forged.status_code == 403
    assert signed_in.post(f"/patients/{pid}/retry", data={}).status_code == 403
    viewer = viewer_client(dashboard)
    try:
        page = viewer.get(f"/patients/{pid}")
        assert page.status_code == 200 and "Suggested matches from the PMS" in page.text
        assert "Save account number" not in page.text and "Use this account number" not in page.text
        assert "Retry this patient" not in page.text
        token = {"csrf_token": viewer.csrf}  # type: ignore[attr-defined]
        refused = viewer.post(f"/patients/{pid}/accounts/{cid}", data={**token, "account_number": "37"})
        assert refused.status_code == 403 and "retry and clear payments" in refused.text
        assert viewer.post(f"/patients/{pid}/retry", data=token).status_code == 403
    finally:
        viewer.close()
    assert account_number(dashboard, "P-1037") is None and writeback_states(dashboard) == before


def test_another_practices_patients_answer_404_and_stay_unchanged(
    dashboard: Dashboard, signed_in: httpx.Client
) -> None:
    add_other_practice(dashboard)
    theirs, ours = patient_id(dashboard, "P-1037", "other"), patient_id(dashboard, "P-1037")
    their_connection, our_connection = connection_id(dashboard, "other"), connection_id(dashboard)
    before = writeback_states(dashboard)
    token = {"csrf_token": signed_in.csrf}  # type: ignore[attr-defined]
    assert signed_in.get(f"/patients/{theirs}").status_code == 404
    assert signed_in.get("/patients/999999").status_code == 404
    for pid, cid in ((theirs, their_connection), (theirs, our_connection), (ours, their_connection)):
        answer = signed_in.post(f"/patients/{pid}/accounts/{cid}", data={**token, "account_number": "37"})
        assert answer.status_code == 404, (pid, cid)
    assert signed_in.post(f"/patients/{theirs}/retry", data=token).status_code == 404
    assert _refs(signed_in.get("/patients", params={"q": "P-1037"}).text) == ["P-1037"]  # ours only
    assert account_number(dashboard, "P-1037") is None
    assert account_number(dashboard, "P-1037", "other") is None
    assert writeback_states(dashboard) == before
    assert audit(dashboard, "patient.account_number") == [] and audit(dashboard, "writeback.retry") == []
