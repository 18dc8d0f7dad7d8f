"""The practice administrator's journey (issue 5) in a real browser: change the writeback rules, rotate
the merchant key and see it once, add a user whose login hours exclude now, and watch that user be refused
with their hours named."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from ledgerlink.login_hours import DAY_NAMES
from tests.web.conftest import TIMEZONE, Dashboard, shoot, sign_in

PASSWORD = "evening-shift-pass-1"


def _hours_excluding_now() -> str:
    """A window on another weekday than today in the practice's zone: it cannot cover this moment."""
    today = datetime.now(ZoneInfo(TIMEZONE)).weekday()
    return f"{DAY_NAMES[(today + 3) % 7]} 09:00-10:00"


def test_administrator_sets_up_the_integration_and_a_user(page: Any, dashboard: Dashboard) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # "Rotate the merchant key?" confirmations
    sign_in(page, dashboard, "admin")
    page.wait_for_url("**/today")
    page.get_by_role("link", name="Settings").click()
    page.wait_for_url("**/settings")

    # Insurance written back automatically, once a day at 18:30, gross.
    page.get_by_label("Insurance payments").select_option("automatic")
    page.get_by_label("Timing").select_option("daily")
    page.get_by_label("Daily writeback time").fill("18:30")
    page.get_by_label("Amount written back").select_option("gross")
    page.get_by_role("button", name="Save writeback rules").click()
    page.get_by_text("Writeback rules of pms saved.").wait_for()
    assert page.get_by_label("Insurance payments").input_value() == "automatic"
    assert page.get_by_label("Timing").input_value() == "daily"
    assert page.get_by_label("Daily writeback time").input_value() == "18:30"
    assert page.get_by_label("Amount written back").input_value() == "gross"
    with sqlite3.connect(dashboard.data_dir / "ledgerlink.db") as db:
        row = db.execute("SELECT timing, daily_time, amount_mode, type_handling FROM connections").fetchone()
    assert (row[0], row[1][:5], row[2], json.loads(row[3]).get("insurance")) == (
        "daily",
        "18:30",
        "gross",
        None,
    )
    shoot(page, "settings")

    # The merchant key: made, then rotated; the new key is shown on its own page once.
    page.get_by_role("link", name="Keys & users").click()
    page.get_by_role("button", name="Make the merchant key").click()
    page.get_by_role("link", name="I have copied the key").click()
    page.get_by_label("Keep the old key working for (hours)").fill("1")
    page.get_by_role("button", name="Rotate the merchant key").click()
    page.get_by_text("This is the only time this key is shown.").wait_for()
    key = page.get_by_label("Merchant key (select it and copy)").input_value()
    assert re.fullmatch(r"llm_[0-9a-f]{12}_\S+", key)
    page.get_by_role("button", name="Copy the key").click()
    page.get_by_text(re.compile("Copied|press Ctrl\\+C")).first.wait_for()
    page.get_by_role("link", name="I have copied the key").click()
    page.wait_for_url("**/people#keys")
    assert key not in page.content()
    assert page.get_by_text("Replaced: works until").is_visible()

    # A user who may only sign in on another day.
    hours = _hours_excluding_now()
    page.get_by_label("Username").fill("evening")
    page.get_by_label("Name shown").fill("Evening Shift")
    page.get_by_label("Retry and clear failed payments").check()
    page.get_by_label("Login hours").fill(hours)
    page.get_by_label("Dashboard password").fill(PASSWORD)
    page.get_by_role("button", name="Add user").click()
    page.get_by_text("User evening added.").wait_for()
    assert page.get_by_text(f"{hours} ({TIMEZONE} time)").is_visible()
    page.get_by_role("link", name="← Keys & users").click()
    page.get_by_role("row", name=re.compile("evening")).wait_for()
    shoot(page, "keys-and-users")

    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    # The refusal is answered 403, which Chromium reports as a console error on the page that receives
    # it; the conftest's page fails on any, so the attempt runs in a second tab of the same browser that
    # fails only on script errors and on any other console error.
    tab = page.context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    tab.on(
        "console",
        lambda msg: (
            problems.append(msg.text) if msg.type == "error" and "status of 403" not in msg.text else None
        ),
    )
    sign_in(tab, dashboard, "evening", PASSWORD)
    refusal = tab.get_by_role("alert")
    refusal.wait_for()
    assert "You cannot sign in now." in refusal.inner_text()
    assert f"Your login hours are {hours} ({TIMEZONE} time)." in refusal.inner_text()
    assert "/today" not in tab.url and not problems
