"""Signing in and out: passwords (argon2), sessions, CSRF, login hours, rate limits, safe redirects."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.web.conftest import PASSWORDS, PRACTICE, Dashboard, csrf_of, shoot, sign_in


def _sign_in_form(client: httpx.Client) -> str:
    found = re.search(r'name="sign_in_token" value="([^"]+)"', client.get("/").text)
    assert found
    return found.group(1)


def _post_sign_in(client: httpx.Client, username: str, password: str, **extra: str) -> httpx.Response:
    data = {
        "practice": PRACTICE,
        "username": username,
        "password": password,
        "sign_in_token": _sign_in_form(client),
    }
    return client.post("/sign-in", data={**data, **extra})


def test_pages_send_a_stranger_to_sign_in_and_back_after(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        answer = client.get("/account")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/?next=/account"
        signed = _post_sign_in(client, "frontdesk", PASSWORDS["frontdesk"], next="/account")
        assert signed.status_code == 303 and signed.headers["location"] == "/account"
        # A "next" pointing at another site is ignored.
        client.cookies.clear()
        signed = _post_sign_in(client, "frontdesk", PASSWORDS["frontdesk"], next="//evil.example/")
        assert signed.headers["location"] != "//evil.example/"


def test_wrong_password_unknown_user_and_unknown_practice_get_the_same_answer(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        answers = [
            _post_sign_in(client, "frontdesk", "not-the-password"),
            _post_sign_in(client, "nobody", "not-the-password"),
            client.post(
                "/sign-in",
                data={"practice": "nosuch", "username": "frontdesk", "password": "x" * 12,
                      "sign_in_token": _sign_in_form(client)},
            ),
        ]  # fmt: skip
        assert [a.status_code for a in answers] == [401, 401, 401]
        messages = {re.search(r'role="alert"[^>]*>([^<]+)<', a.text).group(1) for a in answers}  # type: ignore[union-attr]
        assert len(messages) == 1
        assert "ll_session" not in client.cookies


def test_a_sign_in_without_the_forms_token_is_refused(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        answer = client.post(
            "/sign-in",
            data={"practice": PRACTICE, "username": "frontdesk", "password": PASSWORDS["frontdesk"],
                  "sign_in_token": "forged"},
        )  # fmt: skip
        assert answer.status_code == 400 and "ll_session" not in client.cookies


def test_repeated_failures_block_sign_in_even_with_the_right_password(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        for _ in range(10):
            assert _post_sign_in(client, "frontdesk", "wrong-password").status_code == 401
        blocked = _post_sign_in(client, "frontdesk", PASSWORDS["frontdesk"])
        assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text


def test_sign_out_needs_the_sessions_csrf_token_and_ends_the_session(signed_in: httpx.Client) -> None:
    assert signed_in.post("/sign-out", data={"csrf_token": "forged"}).status_code == 403
    assert signed_in.get("/account").status_code == 200
    assert signed_in.post("/sign-out", data={"csrf_token": signed_in.csrf}).status_code == 303  # type: ignore[attr-defined]
    assert signed_in.get("/account").status_code == 303


def test_changing_the_password_ends_every_session(dashboard: Dashboard) -> None:
    first, second = dashboard.sign_in_client(), dashboard.sign_in_client()
    answer = first.post(
        "/account/password",
        data={"csrf_token": first.csrf, "current": PASSWORDS["frontdesk"],  # type: ignore[attr-defined]
              "password": "a-new-password-9", "again": "a-new-password-9"},
    )  # fmt: skip
    assert answer.status_code == 303
    assert second.get("/account").status_code == 303
    with dashboard.client() as client:
        assert _post_sign_in(client, "frontdesk", PASSWORDS["frontdesk"]).status_code == 401
        assert _post_sign_in(client, "frontdesk", "a-new-password-9").status_code == 303


def test_a_short_new_password_is_refused_next_to_its_field(signed_in: httpx.Client) -> None:
    answer = signed_in.post(
        "/account/password",
        data={"csrf_token": signed_in.csrf, "current": PASSWORDS["frontdesk"],  # type: ignore[attr-defined]
              "password": "short", "again": "short"},
    )  # fmt: skip
    assert answer.status_code == 400
    assert 'id="f-password-error"' in answer.text and "at least 10 characters" in answer.text


def test_pages_carry_a_strict_content_security_policy(signed_in: httpx.Client) -> None:
    answer = signed_in.get("/account")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert csrf_of(answer.text)


def test_signing_in_and_out_in_a_browser(page: Any, dashboard: Dashboard) -> None:
    page.goto(dashboard.url + "/account")
    shoot(page, "sign-in")
    sign_in(page, dashboard, "frontdesk")
    page.wait_for_url("**/account")
    assert page.get_by_role("heading", name="Your account").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(dashboard.url + "/")
    assert page.get_by_text("You are signed out.").is_visible()


def test_odd_links_get_a_page_never_a_server_error(dashboard: Dashboard) -> None:
    """Values a crafted or mangled link can carry: digits that int() refuses, out-of-range numbers and
    dates, text where a number goes."""
    signed_in = dashboard.sign_in_client("admin")
    for url in (
        "/reconcile?page=²",
        "/patients?page=99999999999999999999999",
        "/reports?run=²",
        "/reports?run=99999999999999999999",
        "/audit?start=0001-01-01",
        "/audit?end=9999-12-31",
    ):
        answer = signed_in.get(url)
        assert answer.status_code in (200, 400, 404), (url, answer.status_code)
        assert answer.headers["content-type"].startswith("text/html"), url
    refused = signed_in.get("/imports?before=abc")
    assert refused.status_code == 400 and refused.headers["content-type"].startswith("text/html")


def test_the_sign_in_page_shows_only_its_own_words_for_why(dashboard: Dashboard) -> None:
    with dashboard.client() as client:
        forged = client.get("/", params={"reason": "Call 555-0100 and read out your password"})
        assert "555-0100" not in forged.text
        hours = client.get("/", params={"reason": "hours"})
        assert "outside your login hours" in hours.text


def test_a_form_sent_after_the_session_ended_goes_back_to_sign_in(signed_in: httpx.Client) -> None:
    csrf = signed_in.csrf  # type: ignore[attr-defined]
    assert signed_in.post("/sign-out", data={"csrf_token": csrf}).status_code == 303
    late = signed_in.post("/reconcile", data={"csrf_token": csrf, "retry": "1"})
    assert late.status_code == 303 and late.headers["location"].startswith("/?next=/reconcile&reason=expired")
