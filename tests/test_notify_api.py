"""`/v1/notification-targets` over real HTTP: add, list, test (to a real SMTP server and webhook receiver),
remove; each practice sealed off from the others' targets."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from ledgerlink.notify.webhooks import verify_signature
from ledgerlink.settings import get_settings
from ledgerlink.store.db import Database
from ledgerlink.store.models import AuditEntry, NotificationTarget
from ledgerlink.tokens import issue_token
from tests.conftest import Api, make_practice
from tests.test_notify import Receiver, Smtp, receiver, sealing_key, smtp

__all__ = ["receiver", "sealing_key", "smtp"]  # fixtures shared with test_notify.py


@pytest.fixture
def mail_env(smtp: Smtp, monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    """The served app reads its SMTP settings from the environment, as in production."""
    monkeypatch.setenv("LEDGERLINK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("LEDGERLINK_SMTP_PORT", str(smtp.port))
    get_settings.cache_clear()
    yield smtp
    get_settings.cache_clear()


async def stranger_client(api: Api, db: Database) -> httpx.AsyncClient:
    other, _ = await make_practice(db, slug="other")
    async with db.sessions.begin() as session:
        token = (await issue_token(session, other, "theirs", actor="test")).plain
    return api.client(token)


async def test_add_list_test_and_remove_targets(
    api: Api, db: Database, mail_env: Smtp, receiver: Receiver
) -> None:
    async with api.client() as client:
        email = await client.post(
            "/v1/notification-targets", json={"kind": "email", "address": " office@smile.example "}
        )
        hook = await client.post(
            "/v1/notification-targets", json={"kind": "webhook", "address": receiver.url}
        )
        assert email.status_code == 201 and hook.status_code == 201, (email.text, hook.text)
        assert email.json()["secret"] is None and email.json()["address"] == "office@smile.example"
        secret = hook.json()["secret"]
        assert secret.startswith("llwh_") and "token=abc" not in hook.json()["address"]
        listed = (await client.get("/v1/notification-targets")).json()
        assert [(t["kind"], t["active"]) for t in listed] == [("email", True), ("webhook", True)]
        assert all("secret" not in t for t in listed)

        mailed = await client.post(f"/v1/notification-targets/{email.json()['id']}/test")
        hooked = await client.post(f"/v1/notification-targets/{hook.json()['id']}/test")
        assert mailed.status_code == 200 and mailed.json()["delivered"] is True, mailed.text
        assert hooked.status_code == 200, hooked.text
        [(headers, body)] = receiver.requests
        assert verify_signature(secret, headers["ledgerlink-signature"], body)
        assert receiver.payloads()[0]["type"] == "notification.test"
        assert "test message" in str(mail_env.mailbox.messages[0]["Subject"])

        receiver.status = 401
        refused = await client.post(f"/v1/notification-targets/{hook.json()['id']}/test")
        assert refused.status_code == 502 and "401" in refused.json()["error"]["message"]

        removed = await client.delete(f"/v1/notification-targets/{hook.json()['id']}")
        assert removed.status_code == 204
        again = await client.delete(f"/v1/notification-targets/{hook.json()['id']}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
        assert [t["kind"] for t in (await client.get("/v1/notification-targets")).json()] == ["email"]
    async with db.sessions() as session:
        actions = list(
            await session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("notif%")))
        )
    assert actions == ["notification_target.added"] * 2 + ["notification_target.removed"]


async def test_bad_targets_are_refused_with_the_field_and_nothing_stored(api: Api, db: Database) -> None:
    async with api.client() as client:
        not_an_address = await client.post(
            "/v1/notification-targets", json={"kind": "email", "address": "office at smile"}
        )
        not_http = await client.post(
            "/v1/notification-targets", json={"kind": "webhook", "address": "ftp://example.com/x"}
        )
        unknown_kind = await client.post("/v1/notification-targets", json={"kind": "sms", "address": "+1555"})
        first = await client.post(
            "/v1/notification-targets", json={"kind": "email", "address": "a@smile.example"}
        )
        twice = await client.post(
            "/v1/notification-targets", json={"kind": "email", "address": "a@smile.example"}
        )
    assert not_an_address.status_code == 422 and not_an_address.json()["error"]["field"] == "address"
    assert not_http.status_code == 422 and "http" in not_http.json()["error"]["message"]
    assert unknown_kind.status_code == 422 and unknown_kind.json()["error"]["field"] == "kind"
    assert first.status_code == 201 and twice.status_code == 409
    async with db.sessions() as session:
        assert len((await session.scalars(select(NotificationTarget))).all()) == 1


@pytest.fixture
def no_mail_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LEDGERLINK_SMTP_HOST", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_an_email_test_without_smtp_says_it_is_not_configured(api: Api, no_mail_env: None) -> None:
    async with api.client() as client:
        target = (
            await client.post(
                "/v1/notification-targets", json={"kind": "email", "address": "a@smile.example"}
            )
        ).json()
        tested = await client.post(f"/v1/notification-targets/{target['id']}/test")
    assert tested.status_code == 502 and "LEDGERLINK_SMTP_HOST" in tested.json()["error"]["message"]


async def test_another_practices_target_is_not_found_and_stays(
    api: Api, db: Database, receiver: Receiver
) -> None:
    async with api.client() as mine:
        target = (
            await mine.post("/v1/notification-targets", json={"kind": "webhook", "address": receiver.url})
        ).json()
    async with await stranger_client(api, db) as theirs:
        assert (await theirs.get("/v1/notification-targets")).json() == []
        deleted = await theirs.delete(f"/v1/notification-targets/{target['id']}")
        tested = await theirs.post(f"/v1/notification-targets/{target['id']}/test")
        missing = await theirs.delete("/v1/notification-targets/999999")
    assert deleted.status_code == tested.status_code == missing.status_code == 404
    assert deleted.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
    assert deleted.json()["error"]["message"] == f"no notification target {target['id']} in this practice"
    assert receiver.requests == []
    async with api.client() as mine:
        assert [t["id"] for t in (await mine.get("/v1/notification-targets")).json()] == [target["id"]]
