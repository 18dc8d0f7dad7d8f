"""The front desk's journey (issue 5): a payment failed for Invalid Patient ID; fix the patient's account number
from the PMS's suggestion, tick Retry, Save Changes, and watch the row turn to Posted while a real worker
writes it into the sandbox PMS. Real server, real worker, real browser."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import Dashboard, shoot, sign_in


def test_front_desk_fixes_an_invalid_patient_id_and_sees_the_payment_post(
    page: Any, dashboard: Dashboard
) -> None:
    page.goto(dashboard.url + "/reconcile")
    sign_in(page, dashboard, "frontdesk")  # the sign-in page brings them back to Reconciliation
    expect(page.get_by_role("heading", name="Reconciliation")).to_be_visible()

    page.get_by_label("Load Status").select_option("failed")
    page.get_by_role("button", name="Show").click()
    row = page.locator('tr[data-payment="ch_demo_0036"]')
    expect(row.locator(".status")).to_have_text("Failed")
    expect(row).to_contain_text("This patient has no PMS account number yet.")
    expect(row).to_contain_text("INVALID_PATIENT_ID")
    expect(row).to_contain_text("P-1037")
    shoot(page, "reconciliation")

    row.get_by_role("link", name="Quinn, Tess").click()
    expect(page.get_by_role("heading", name="Quinn, Tess", level=1)).to_be_visible()
    expect(page.get_by_text("Name and date of birth match")).to_be_visible()
    shoot(page, "patient")
    page.get_by_role("button", name="Use this account number 37").click()
    expect(page.get_by_role("status")).to_contain_text("Account number on pms set to 37.")
    expect(page.get_by_label("Account number on pms")).to_have_value("37")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Reconciliation").click()
    page.get_by_label("Patient", exact=True).fill("P-1037")
    page.get_by_role("button", name="Show").click()
    row = page.locator('tr[data-payment="ch_demo_0036"]')
    expect(row).to_contain_text("account 37")
    with dashboard.worker():
        row.get_by_label("Retry ch_demo_0036").check()
        page.get_by_role("button", name="Save Changes").first.click()
        expect(page.locator(".notice")).to_have_text("1 queued for retry.")
        row = page.locator('tr[data-payment="ch_demo_0036"]')
        # No reload: the page follows the row while the worker posts it.
        expect(row.locator(".status")).to_have_text("Posted", timeout=30_000)
    expect(row.get_by_label("Retry ch_demo_0036")).to_have_count(0)
    expect(page.locator("#reconcile-live")).to_have_text("ch_demo_0036: Posted")
    pms_ref = row.locator("td").last.inner_text().strip()
    assert re.fullmatch(r"\d+", pms_ref)

    with dashboard.office() as office:
        [payment] = office.payments(pat_num=37)
    assert payment.pay_num == int(pms_ref) and payment.pay_amt == Decimal("339.55")
