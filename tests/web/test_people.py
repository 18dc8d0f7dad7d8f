"""The Integration keys and users page: keys shown once and stored as hashes, users with privileges, login
hours, passwords and clerk keys, audited, and limited to the signed-in practice."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from typing import Any

import httpx

from tests.web.conftest import PRACTICE, Dashboard, error_next_to, post_form


def _rows(dashboard: Dashboard, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(dashboard.data_dir / "ledgerlink.db") as db:
        return list(db.execute(query, args))


def _audit(dashboard: Dashboard, action: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The audit entries of `action` made from the dashboard (the demo's own setup left some)."""
    rows = _rows(
        dashboard,
        "SELECT actor, target, detail FROM audit_log WHERE action = ? AND actor LIKE 'user %' ORDER BY id",
        action,
    )
    return [(actor, target, json.loads(detail)) for actor, target, detail in rows]


def _shown_key(html: str, tag: str) -> str:
    found = re.search(rf'id="new-key"[^>]*value="({tag}_[0-9a-f]+_[^"]+)"', html)
    assert found, "the new key is not on the page"
    return found.group(1)


def _user_id(dashboard: Dashboard, username: str) -> int:
    return int(_rows(dashboard, "SELECT id FROM users WHERE username = ?", username)[0][0])


def test_frontdesk_may_not_change_settings_keys_or_users(signed_in: httpx.Client) -> None:
    answer = signed_in.get("/settings")
    assert answer.status_code == 403 and "manage settings" in answer.text
    assert post_form(signed_in, "/settings/practice", {"name": "Taken over"}).status_code == 403
    assert post_form(signed_in, "/settings/connections/1/rules", {"timing": "daily"}).status_code == 403
    assert signed_in.get("/people").status_code == 403
    assert signed_in.get("/people/users/1").status_code == 403
    assert post_form(signed_in, "/people/merchant-key", {}).status_code == 403
    assert post_form(signed_in, "/people/users", {"username": "intruder"}).status_code == 403


def test_merchant_key_is_shown_once_stored_as_a_hash_and_rotated_with_an_overlap(
    dashboard: Dashboard,
) -> None:
    admin = dashboard.sign_in_client("admin")
    first = post_form(admin, "/people/merchant-key", {})
    assert first.status_code == 200 and "only time this key is shown" in first.text
    key = _shown_key(first.text, "llm")
    public_id = _rows(dashboard, "SELECT public_id FROM practices WHERE slug = ?", PRACTICE)[0][0]
    assert public_id and public_id in first.text
    listing = admin.get("/people").text
    assert key not in listing and public_id in listing and key.split("_")[1] in listing  # prefix only
    [(prefix, key_hash)] = _rows(
        dashboard, "SELECT prefix, key_hash FROM access_keys WHERE kind = 'merchant'"
    )
    assert key_hash == hashlib.sha256(key.encode()).hexdigest() and key not in str(_rows(
        dashboard, "SELECT * FROM access_keys")) + str(_rows(dashboard, "SELECT * FROM audit_log"))  # fmt: skip

    bad = post_form(admin, "/people/merchant-key", {"overlap_hours": "999999"})
    assert bad.status_code == 400 and "0 to 720 hours" in error_next_to(bad.text, "merchant-overlap")
    rotated = post_form(admin, "/people/merchant-key", {"overlap_hours": "2"})
    assert rotated.status_code == 200 and prefix in rotated.text and "keep working until" in rotated.text
    assert _shown_key(rotated.text, "llm") != key
    assert "Replaced: works until" in admin.get("/people").text
    assert [a for a, _, _ in _audit(dashboard, "merchant_key.issued")] == ["user admin"]
    [(_, _, detail)] = _audit(dashboard, "merchant_key.rotated")
    assert detail == {"expiring": [prefix], "overlap_seconds": 7200}


def test_a_user_is_checked_field_by_field_then_added_with_privileges_hours_and_password(
    dashboard: Dashboard,
) -> None:
    admin = dashboard.sign_in_client("admin")
    answer = post_form(
        admin,
        "/people/users",
        {"username": "new-user", "login_hours": "Mon-Fri 8am to 5pm", "password": "short"},
    )
    assert answer.status_code == 400
    assert "Mon-Fri 08:00-18:00" in error_next_to(answer.text, "new-login_hours")
    assert "at least 10 characters" in error_next_to(answer.text, "new-password")
    assert "Mon-Fri 8am to 5pm" in answer.text  # what was typed is shown again
    taken = post_form(admin, "/people/users", {"username": "frontdesk"})
    assert taken.status_code == 400 and "already has a user" in error_next_to(taken.text, "new-username")
    assert _rows(dashboard, "SELECT count(*) FROM users") == [(2,)]
    frontdesk = _user_id(dashboard, "frontdesk")
    before = _rows(dashboard, "SELECT * FROM users WHERE id = ?", frontdesk)
    changed = post_form(
        admin,
        f"/people/users/{frontdesk}",
        {"privileges": ["view_reports"], "login_hours": "Funday 09:00-10:00"},
    )
    assert changed.status_code == 400 and "Funday" in error_next_to(changed.text, "u-login_hours")
    mismatch = post_form(
        admin, f"/people/users/{frontdesk}/password", {"password": "a-long-password-1", "again": "other"}
    )
    assert mismatch.status_code == 400 and "differ" in error_next_to(mismatch.text, "pw-again")
    assert _rows(dashboard, "SELECT * FROM users WHERE id = ?", frontdesk) == before
    assert _audit(dashboard, "user.updated") == [] and _audit(dashboard, "user.password_set") == []

    added = post_form(
        admin,
        "/people/users",
        {"username": "Hygienist", "display_name": "Hy Gienist", "privileges": ["view_reports", "retry_clear"],
         "login_hours": "Mon-Fri 08:00-17:00\nSat 09:00-12:00", "password": "hygienist-password-1"},
    )  # fmt: skip
    assert added.status_code == 303
    user_id = _user_id(dashboard, "hygienist")
    assert added.headers["location"] == f"/people/users/{user_id}"
    page = admin.get(f"/people/users/{user_id}").text
    assert "User hygienist added." in page and "Mon-Fri 08:00-17:00; Sat 09:00-12:00" in page
    [(privileges, hours, password_hash)] = _rows(
        dashboard, "SELECT privileges, login_hours, password_hash FROM users WHERE id = ?", user_id
    )
    assert json.loads(privileges) == ["view_reports", "retry_clear"]
    assert json.loads(hours)[0] == {"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "17:00"}
    assert password_hash.startswith("$argon2id$")
    assert [t for _, t, _ in _audit(dashboard, "user.created")] == ["user hygienist"]
    assert [t for _, t, _ in _audit(dashboard, "user.password_set")] == ["user hygienist"]


def test_privileges_hours_and_active_are_changed_and_audited(dashboard: Dashboard) -> None:
    admin = dashboard.sign_in_client("admin")
    frontdesk_client = dashboard.sign_in_client("frontdesk")
    frontdesk = _user_id(dashboard, "frontdesk")
    saved = post_form(
        admin,
        f"/people/users/{frontdesk}",
        {"display_name": "Front Desk", "privileges": ["view_reports", "run_sync"], "login_hours": "Tue 07:30-12:00"},
    )  # fmt: skip
    assert saved.status_code == 303
    [(privileges, hours, active)] = _rows(
        dashboard, "SELECT privileges, login_hours, active FROM users WHERE id = ?", frontdesk
    )
    assert (json.loads(privileges), json.loads(hours), active) == (
        ["view_reports", "run_sync"], [{"days": [1], "start": "07:30", "end": "12:00"}], 0,
    )  # fmt: skip
    [(actor, target, detail)] = _audit(dashboard, "user.updated")
    assert (actor, target, detail["active"], detail["login_hours"]) == (
        "user admin", "user frontdesk", False, "Tue 07:30-12:00",
    )  # fmt: skip
    assert frontdesk_client.get("/account").status_code == 303  # an inactive user is signed out at once
    # An administrator cannot lock themselves out.
    admin_id = _user_id(dashboard, "admin")
    own = post_form(admin, f"/people/users/{admin_id}", {"privileges": ["view_reports"]})
    assert own.status_code == 400
    assert "manage users" in error_next_to(own.text, "u-privileges") and error_next_to(own.text, "u-active")


def test_password_and_clerk_key_of_a_user(dashboard: Dashboard) -> None:
    admin = dashboard.sign_in_client("admin")
    frontdesk = _user_id(dashboard, "frontdesk")
    set_answer = post_form(
        admin,
        f"/people/users/{frontdesk}/password",
        {"password": "brand-new-pass-1", "again": "brand-new-pass-1"},
    )
    assert set_answer.status_code == 303
    dashboard.sign_in_client("frontdesk", "brand-new-pass-1").close()
    issued = post_form(admin, f"/people/users/{frontdesk}/clerk-key", {})
    assert issued.status_code == 200 and "for frontdesk" in issued.text
    key = _shown_key(issued.text, "llc")
    assert key not in admin.get(f"/people/users/{frontdesk}").text
    [(key_hash, user_id)] = _rows(dashboard, "SELECT key_hash, user_id FROM access_keys WHERE kind = 'clerk'")
    assert (key_hash, user_id) == (hashlib.sha256(key.encode()).hexdigest(), frontdesk)
    assert key.split("_")[1] in admin.get("/people").text
    assert [t for _, t, _ in _audit(dashboard, "clerk_key.issued")] == [
        f"clerk key {key.split('_')[1]} of user frontdesk"
    ]


def test_another_practices_user_is_not_found_and_unchanged(dashboard: Dashboard) -> None:
    dashboard.cli("practice", "create", "other", "--name", "Other Dental")
    dashboard.cli("users", "add", "theirs", "--practice", "other", "-P", "view_reports")
    theirs = _user_id(dashboard, "theirs")
    before = _rows(dashboard, "SELECT * FROM users WHERE id = ?", theirs)
    admin = dashboard.sign_in_client("admin")
    assert admin.get(f"/people/users/{theirs}").status_code == 404
    assert admin.get("/people/users/987654").status_code == 404
    for url, data in (
        (f"/people/users/{theirs}", {"privileges": ["manage_users"], "active": "on"}),
        (f"/people/users/{theirs}/password", {"password": "taken-over-pass-1", "again": "taken-over-pass-1"}),
        (f"/people/users/{theirs}/clerk-key", {}),
        (f"/people/users/{theirs}/clerk-key", {"overlap_hours": "x"}),
    ):
        assert post_form(admin, url, data).status_code == 404, url
    assert _rows(dashboard, "SELECT * FROM users WHERE id = ?", theirs) == before
    assert _rows(dashboard, "SELECT count(*) FROM access_keys") == [(0,)]
    assert "theirs" not in admin.get("/people").text


def test_a_key_is_revoked_now_from_the_page_and_only_the_practices_own(dashboard: Dashboard) -> None:
    key = dashboard.cli("keys", "issue").stdout.strip()
    prefix = key.split("_")[1]
    dashboard.cli("practice", "create", "other", "--name", "Other Dental", "--timezone", "America/Chicago")
    theirs = dashboard.cli("keys", "issue", "--practice", "other").stdout.strip().split("_")[1]
    admin = dashboard.sign_in_client("admin")
    assert "Revoke now" in admin.get("/people").text
    assert post_form(admin, f"/people/keys/{theirs}/revoke", {}).status_code == 404
    forged = admin.post(f"/people/keys/{prefix}/revoke", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    frontdesk = dashboard.sign_in_client("frontdesk")
    assert post_form(frontdesk, f"/people/keys/{prefix}/revoke", {}).status_code == 403
    assert "Revoked" not in admin.get("/people").text
    done = post_form(admin, f"/people/keys/{prefix}/revoke", {})
    assert done.status_code == 303
    page = admin.get("/people").text
    assert "Revoked" in page and key not in page
    listed = dashboard.cli("keys", "list", "--practice", "other").stdout
    assert theirs in listed and "revoked" not in listed  # the other practice's key is untouched
