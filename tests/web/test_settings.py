"""The Settings page: practice, connection settings (secrets never shown back) and writeback rules, each
form checked field by field (400, nothing saved), audited, and limited to the signed-in practice."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ledgerlink.secrets import SecretBox
from tests.web.conftest import Dashboard, error_next_to, post_form

RULES = {
    "type.terminal": "manual",
    "type.payment_plan": "automatic",
    "type.insurance": "automatic",
    "type.membership": "off",
    "type.collection": "automatic",
    "type.online": "automatic",
    "timing": "daily",
    "daily_time": "18:30",
    "amount_mode": "gross",
    "start_date": "2026-01-15",
    "chargebacks_enabled": "on",
}
DEVELOPER_KEY = "dev-key-7f3a9c-secret"
CUSTOMER_KEY = "cust-key-b81e44-secret"


def _db(dashboard: Dashboard) -> sqlite3.Connection:
    return sqlite3.connect(dashboard.data_dir / "ledgerlink.db")


def _row(dashboard: Dashboard, query: str, *args: Any) -> Any:
    with _db(dashboard) as db:
        return db.execute(query, args).fetchone()


def _audit(dashboard: Dashboard, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    with _db(dashboard) as db:
        rows = db.execute(
            "SELECT actor, target, detail FROM audit_log WHERE action = ? ORDER BY id", (action,)
        )
        return [(actor, target, json.loads(detail)) for actor, target, detail in rows]


def _connection(dashboard: Dashboard) -> Any:
    return _row(
        dashboard,
        "SELECT name, settings, amount_mode, timing, daily_time, chargebacks_enabled, type_handling, start_date"
        " FROM connections WHERE id = 1",
    )


def test_practice_settings_are_checked_field_by_field_then_saved_and_audited(dashboard: Dashboard) -> None:
    admin = dashboard.sign_in_client("admin")
    before = _row(dashboard, "SELECT name, timezone, locale, patient_capacity FROM practices")
    answer = post_form(
        admin,
        "/settings/practice",
        {"name": "  ", "timezone": "Mars/Olympus", "locale": "xx_YY", "patient_capacity": "lots"},
    )
    assert answer.status_code == 400
    assert "needs a name" in error_next_to(answer.text, "p-name")
    assert "Mars/Olympus" in error_next_to(answer.text, "p-timezone")
    assert "unknown locale" in error_next_to(answer.text, "p-locale")
    assert "whole number" in error_next_to(answer.text, "p-capacity")
    assert 'value="Mars/Olympus"' in answer.text  # what was typed is shown again
    assert _row(dashboard, "SELECT name, timezone, locale, patient_capacity FROM practices") == before
    assert _audit(dashboard, "practice.update") == []

    page = admin.get("/settings")
    assert page.status_code == 200 and 'value="Bright Smile Dental"' in page.text
    saved = post_form(
        admin,
        "/settings/practice",
        {"name": "Smile Dental", "timezone": "America/Denver", "locale": "fr_CA", "patient_capacity": "500"},
    )
    assert saved.status_code == 303
    after = admin.get("/settings")
    assert "Practice settings saved." in after.text
    assert "1\xa0234,56\xa0$" in after.text  # money in the new locale (fr_CA) on the same page
    assert _row(dashboard, "SELECT name, timezone, locale, patient_capacity FROM practices WHERE slug = 'demo'") == (
        "Smile Dental", "America/Denver", "fr_CA", 500,
    )  # fmt: skip
    [(actor, _, detail)] = _audit(dashboard, "practice.update")
    assert actor == "user admin"
    assert detail["timezone"] == {"previous": "America/Chicago", "new": "America/Denver"}
    assert detail["locale"] == {"previous": "en_US", "new": "fr_CA"}


def test_writeback_rules_are_checked_field_by_field_then_saved_and_audited(dashboard: Dashboard) -> None:
    admin = dashboard.sign_in_client("admin")
    before = _connection(dashboard)
    bad = {
        **RULES,
        "type.terminal": "sometimes",
        "timing": "hourly",
        "daily_time": "25:00",
        "amount_mode": "half",
        "start_date": "2026-02-30",
    }
    answer = post_form(admin, "/settings/connections/1/rules", bad)
    assert answer.status_code == 400
    assert "automatic, manual or off" in error_next_to(answer.text, "c1-type-terminal")
    assert "instant, daily" in error_next_to(answer.text, "c1-timing")
    assert "25:00" in error_next_to(answer.text, "c1-daily_time")
    assert "net, gross" in error_next_to(answer.text, "c1-amount_mode")
    assert "2026-02-30" in error_next_to(answer.text, "c1-start_date")
    assert _connection(dashboard) == before
    assert _audit(dashboard, "connection.update") == []

    assert post_form(admin, "/settings/connections/1/rules", RULES).status_code == 303
    _, _, amount, timing, daily, chargebacks, handling, start = _connection(dashboard)
    assert (amount, timing, daily[:5], chargebacks, start) == ("gross", "daily", "18:30", 1, "2026-01-15")
    assert json.loads(handling) == {"terminal": "manual", "membership": "off"}  # automatic is the default
    page = admin.get("/settings").text
    assert "Writeback rules of pms saved." in page
    assert '<option value="gross" selected>' in page and 'value="18:30"' in page
    [(actor, target, detail)] = _audit(dashboard, "connection.update")
    assert (actor, target) == ("user admin", "connection:1")
    assert detail["timing"] == {"previous": "instant", "new": "daily"}
    assert detail["daily_time"] == {"previous": "18:00:00", "new": "18:30:00"}
    # The same form again changes nothing and writes no audit entry.
    assert post_form(admin, "/settings/connections/1/rules", RULES).status_code == 303
    assert len(_audit(dashboard, "connection.update")) == 1
    # Unticking the box turns chargebacks off.
    without = {k: v for k, v in RULES.items() if k != "chargebacks_enabled"}
    assert post_form(admin, "/settings/connections/1/rules", without).status_code == 303
    assert _connection(dashboard)[5] == 0


def test_connection_settings_are_checked_by_the_connector_and_secrets_never_shown(
    dashboard: Dashboard,
) -> None:
    dashboard.cli(
        "connection", "add", "--name", "od", "--kind", "opendental",
        "-s", "base_url=http://127.0.0.1:9/api/v1", "-s", f"developer_key={DEVELOPER_KEY}",
        "-s", f"customer_key={CUSTOMER_KEY}",
    )  # fmt: skip
    od_id = _row(dashboard, "SELECT id FROM connections WHERE name = 'od'")[0]
    admin = dashboard.sign_in_client("admin")
    page = admin.get("/settings").text
    assert DEVELOPER_KEY not in page and CUSTOMER_KEY not in page
    assert "Developer key (set)" in page and "Customer key (set)" in page

    url = f"/settings/connections/{od_id}/settings"
    form = {"name": "od", "setting.base_url": "http://127.0.0.1:9/api/v1", "setting.developer_key": ""}
    bad = post_form(
        admin, url, {**form, "setting.base_url": "ftp://office", "setting.requests_per_second": "fast"}
    )
    assert bad.status_code == 400
    assert "http" in error_next_to(bad.text, f"c{od_id}-s-base_url")
    assert error_next_to(bad.text, f"c{od_id}-s-requests_per_second")
    assert DEVELOPER_KEY not in bad.text
    taken = post_form(admin, url, {**form, "name": "pms"})
    assert taken.status_code == 400 and "already has a connection" in error_next_to(
        taken.text, f"c{od_id}-name"
    )
    assert _audit(dashboard, "connection.update") == []

    # A new address for the PMS needs the keys typed again: the stored ones would go to that server.
    moved = post_form(admin, url, {**form, "setting.base_url": "http://127.0.0.1:10/api/v1"})
    assert moved.status_code == 400
    assert "again" in error_next_to(moved.text, f"c{od_id}-s-customer_key")
    # An empty secret box keeps the key; a typed one replaces it, stored sealed (trimmed of pasted spaces).
    replaced = post_form(admin, url, {**form, "setting.customer_key": "  new-customer-key-1  "})
    assert replaced.status_code == 303
    kept = post_form(admin, url, {**form, "setting.base_url": "http://127.0.0.1:10/api/v1",
                              "setting.developer_key": DEVELOPER_KEY,
                              "setting.customer_key": "new-customer-key-1"})  # fmt: skip
    assert kept.status_code == 303
    stored = json.loads(_row(dashboard, "SELECT settings FROM connections WHERE id = ?", od_id)[0])
    box = SecretBox.for_data_dir(dashboard.data_dir)
    assert stored["base_url"] == "http://127.0.0.1:10/api/v1"
    assert SecretBox.is_sealed(stored["developer_key"]) and box.open(stored["developer_key"]) == DEVELOPER_KEY
    assert (
        SecretBox.is_sealed(stored["customer_key"])
        and box.open(stored["customer_key"]) == "new-customer-key-1"
    )
    assert "new-customer-key-1" not in admin.get("/settings").text
    changes = [detail for _, _, detail in _audit(dashboard, "connection.update")]
    assert changes == [  # names, never values
        {"settings": ["customer_key"]},
        {"settings": ["base_url", "customer_key", "developer_key"]},
    ]
    # A sandbox office file must stay inside the data directory.
    answer = post_form(
        admin, "/settings/connections/1/settings", {"name": "pms", "setting.path": "/etc/passwd"}
    )
    assert answer.status_code == 400 and "relative path" in error_next_to(answer.text, "c1-s-path")
    assert json.loads(_connection(dashboard)[1])["path"] == "demo-pms.db"


def test_another_practices_connection_is_not_found_and_unchanged(dashboard: Dashboard) -> None:
    dashboard.cli("practice", "create", "other", "--name", "Other Dental", "--timezone", "America/Chicago")
    dashboard.cli("connection", "add", "--practice", "other", "--name", "theirs", "--kind", "pull")
    other = _row(dashboard, "SELECT id, timing, name FROM connections WHERE name = 'theirs'")
    admin = dashboard.sign_in_client("admin")
    for url, data in (
        (f"/settings/connections/{other[0]}/rules", RULES),
        (f"/settings/connections/{other[0]}/settings", {"name": "mine now"}),
        ("/settings/connections/987654/rules", RULES),
    ):
        assert post_form(admin, url, data).status_code == 404, url
    assert _row(dashboard, "SELECT id, timing, name FROM connections WHERE name = 'theirs'") == other
    assert "theirs" not in admin.get("/settings").text
