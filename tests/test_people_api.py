"""Users and keys for staff over real HTTP, each practice sealed off; and the `users` / `keys` commands."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from ledgerlink.access_keys import CLERK, MERCHANT, verify_key
from ledgerlink.clock import utcnow
from ledgerlink.passwords import password_matches
from ledgerlink.settings import get_settings
from ledgerlink.store.db import Database
from ledgerlink.store.models import AccessKey, AuditEntry, Practice, User, WebSession
from ledgerlink.users import create_user
from tests.conftest import Api, make_practice

NEW_USER: dict[str, Any] = {
    "username": "Front-Desk",
    "display_name": "Front desk",
    "privileges": ["view_reports", "run_sync"],
    "login_hours": [{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}],
}


async def audit_text(db: Database) -> str:
    async with db.sessions() as session:
        entries = await session.scalars(select(AuditEntry))
        return json.dumps([[e.actor, e.action, e.target, e.detail] for e in entries])


async def test_users_are_added_listed_read_and_changed(api: Api, db: Database) -> None:
    async with api.client() as client:
        created = await client.post("/v1/users", json=NEW_USER)
        assert created.status_code == 201, created.text
        user = created.json()
        assert user["username"] == "front-desk" and user["active"] is True
        assert user["login_hours_text"] == "Mon-Fri 08:00-18:00"
        again = await client.post("/v1/users", json={"username": "front-desk"})
        assert again.status_code == 409 and again.json()["error"]["field"] == "username"

        listed = (await client.get("/v1/users")).json()
        assert [u["username"] for u in listed] == ["front-desk"]
        assert (await client.get(f"/v1/users/{user['id']}")).json() == user

        changed = await client.patch(
            f"/v1/users/{user['id']}",
            json={
                "privileges": ["retry_clear"],
                "login_hours": [{"days": [4], "start": "22:00", "end": "06:00"}],
                "active": False,
            },
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["privileges"] == ["retry_clear"]
        assert changed.json()["login_hours_text"] == "Fri 22:00-06:00"
        assert changed.json()["active"] is False
        assert changed.json()["display_name"] == "Front desk"  # not sent: not changed

        same_times = await client.patch(
            f"/v1/users/{user['id']}", json={"login_hours": [{"days": [0], "start": "08:00", "end": "08:00"}]}
        )
        assert same_times.status_code == 422
        assert same_times.json()["error"]["field"] == "login_hours"
        assert "start and end are both 08:00" in same_times.json()["error"]["message"]
        unknown = await client.post("/v1/users", json={**NEW_USER, "username": "x", "privileges": ["root"]})
        assert unknown.status_code == 422
        bad_name = await client.post("/v1/users", json={"username": "no spaces please"})
        assert bad_name.status_code == 422 and bad_name.json()["error"]["field"] == "username"
        assert (await client.get(f"/v1/users/{user['id']}")).json()["privileges"] == ["retry_clear"]
    actions = await audit_text(db)
    assert "user.created" in actions and "user.updated" in actions


async def test_another_practices_user_is_404_on_every_user_route(api: Api, db: Database) -> None:
    other, _ = await make_practice(db, slug="grin")
    async with db.sessions.begin() as session:
        stranger = await create_user(session, other, "front-desk", actor="test", privileges=["run_sync"])
    routes = [
        ("GET", "/v1/users/{id}", None),
        ("PATCH", "/v1/users/{id}", {"active": False}),
        ("POST", "/v1/users/{id}/clerk-key", None),
        ("PUT", "/v1/users/{id}/password", {"password": "a long enough password"}),
    ]
    async with api.client() as client:
        assert (await client.get("/v1/users")).json() == []
        for method, path, body in routes:
            answer = await client.request(method, path.format(id=stranger.id), json=body)
            missing = await client.request(method, path.format(id=987654), json=body)
            assert answer.status_code == missing.status_code == 404, (method, path)
            assert answer.json()["error"]["code"] == "not_found"
            assert answer.text.replace(str(stranger.id), "N") == missing.text.replace("987654", "N")
            assert "grin" not in answer.text and "run_sync" not in answer.text
    async with db.sessions() as session:
        untouched = await session.get_one(User, stranger.id)
        keys = list(await session.scalars(select(AccessKey).where(AccessKey.user_id == stranger.id)))
    assert untouched.active is True and keys == [] and untouched.password_hash is None


async def test_a_users_password_is_set_hashed_ending_their_sessions(api: Api, db: Database) -> None:
    async with api.client() as client:
        user = (await client.post("/v1/users", json=NEW_USER)).json()
        async with db.sessions.begin() as session:
            session.add(
                WebSession(
                    token_hash="0" * 64,
                    practice_id=api.practice.id,
                    user_id=user["id"],
                    csrf_token="c",
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
        url = f"/v1/users/{user['id']}/password"
        short = await client.put(url, json={"password": "too short"})
        spaces = await client.put(url, json={"password": " " * 12})
        not_text = await client.put(url, json={"password": 1234567890123})
        extra = await client.put(url, json={"password": "correct horse battery", "again": "x"})
        assert (await audit_text(db)).count("user.password_set") == 0
        set_ = await client.put(url, json={"password": "correct horse battery"})
    assert set_.status_code == 204 and set_.content == b""
    for refused in (short, spaces, not_text):
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "password", refused.text
    assert "at least 10 characters" in short.json()["error"]["message"]
    assert extra.status_code == 422
    async with db.sessions() as session:
        stored = await session.get_one(User, user["id"])
        sessions = list(await session.scalars(select(WebSession).where(WebSession.user_id == user["id"])))
    assert stored.password_hash is not None and stored.password_hash.startswith("$argon2id$")
    assert password_matches(stored.password_hash, "correct horse battery")
    assert sessions == []
    audit = await audit_text(db)
    assert "user.password_set" in audit and "correct horse" not in audit and "too short" not in audit


async def test_clerk_key_is_shown_once_and_rotates_with_an_overlap(api: Api, db: Database) -> None:
    async with api.client() as client:
        user = (await client.post("/v1/users", json=NEW_USER)).json()
        first = await client.post(f"/v1/users/{user['id']}/clerk-key")
        assert first.status_code == 201, first.text
        issued = first.json()
        assert issued["key"].startswith(f"llc_{issued['prefix']}_")
        assert issued["username"] == "front-desk" and issued["old_keys_expire_at"] is None
        rotated = (await client.post(f"/v1/users/{user['id']}/clerk-key", json={"overlap_hours": 0})).json()
        assert rotated["old_keys_expire_at"] is not None
        reread = await client.get(f"/v1/users/{user['id']}")
        too_long = await client.post(f"/v1/users/{user['id']}/clerk-key", json={"overlap_hours": 721})
    assert too_long.status_code == 422
    assert issued["key"] not in reread.text and rotated["key"] not in reread.text
    async with db.sessions() as session:
        practice = await session.get_one(Practice, api.practice.id)
        assert await verify_key(session, practice, CLERK, issued["key"]) is None  # zero overlap: ended
        assert await verify_key(session, practice, CLERK, rotated["key"]) is not None
    audit = await audit_text(db)
    assert "clerk_key.issued" in audit and "clerk_key.rotated" in audit
    assert issued["key"] not in audit and rotated["key"].split("_", 2)[2] not in audit


async def test_integration_keys_are_issued_rotated_and_listed_without_the_key(api: Api, db: Database) -> None:
    async with api.client() as client:
        assert (await client.get("/v1/integration-keys")).json() == []
        first = await client.post("/v1/integration-keys")
        assert first.status_code == 201, first.text
        second = await client.post("/v1/integration-keys", json={"overlap_hours": 2})
        listed = await client.get("/v1/integration-keys")
    one, two = first.json(), second.json()
    assert one["practice_id"] == two["practice_id"] and one["practice_id"].startswith("P")
    assert one["key"].startswith(f"llm_{one['prefix']}_")
    keys = {k["prefix"]: k for k in listed.json()}
    assert set(keys) == {one["prefix"], two["prefix"]}
    assert keys[one["prefix"]]["live"] is True and keys[one["prefix"]]["expires_at"] is not None
    assert keys[two["prefix"]]["expires_at"] is None
    assert one["key"] not in listed.text and two["key"] not in listed.text
    async with db.sessions() as session:
        practice = await session.get_one(Practice, api.practice.id)
        assert practice.public_id == one["practice_id"]
        assert await verify_key(session, practice, MERCHANT, one["key"]) is not None  # inside the overlap
        assert await verify_key(session, practice, MERCHANT, two["key"]) is not None
    audit = await audit_text(db)
    assert "merchant_key.rotated" in audit and one["prefix"] in audit
    assert one["key"] not in audit and two["key"] not in audit


async def test_a_leaked_key_is_revoked_at_once_without_an_overlap(api: Api, db: Database) -> None:
    async with api.client() as client:
        issued = (await client.post("/v1/integration-keys")).json()
        user = (
            await client.post("/v1/users", json={"username": "desk", "privileges": ["view_reports"]})
        ).json()
        clerk = (await client.post(f"/v1/users/{user['id']}/clerk-key")).json()
        revoked = await client.post(f"/v1/keys/{issued['prefix']}/revoke")
        again = await client.post(f"/v1/keys/{issued['prefix']}/revoke")  # harmless, still revoked
        clerk_revoked = await client.post(f"/v1/keys/{clerk['prefix']}/revoke")
        missing = await client.post("/v1/keys/0123456789abcdef/revoke")
    assert revoked.status_code == 200 and revoked.json()["live"] is False and revoked.json()["revoked_at"]
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert clerk_revoked.status_code == 200 and clerk_revoked.json()["live"] is False
    assert missing.status_code == 404
    async with db.sessions() as session:
        practice = await session.get_one(Practice, api.practice.id)
        assert await verify_key(session, practice, MERCHANT, issued["key"]) is None
    headers = {"X-Practice-Id": issued["practice_id"], "X-Merchant-Key": issued["key"]}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as pms:
        pulled = await pms.get("/v1/pull/alerts")
    assert pulled.status_code == 401
    audit = await audit_text(db)
    assert audit.count("merchant_key.revoked") == 1 and "clerk_key.revoked" in audit
    assert issued["key"] not in audit


async def test_people_routes_need_a_staff_token(api: Api) -> None:
    async with httpx.AsyncClient(base_url=api.url) as client:
        for method, path in [
            ("GET", "/v1/users"),
            ("POST", "/v1/integration-keys"),
            ("GET", "/v1/users/1"),
            ("PUT", "/v1/users/1/password"),
        ]:
            assert (await client.request(method, path)).status_code == 401


def test_users_and_keys_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ledgerlink.cli.app import app as cli_app

    monkeypatch.setenv("LEDGERLINK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LEDGERLINK_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()

    def cli(*args: str, expect: int = 0) -> Result:
        result = runner.invoke(cli_app, list(args))
        assert result.exit_code == expect, (args, result.output)
        return result

    try:
        cli("practice", "create", "smile", "--name", "Smile", "--timezone", "America/Chicago")
        cli(
            "users",
            "add",
            "front-desk",
            "-P",
            "run_sync",
            "-H",
            "Mon-Fri 08:00-18:00",
            "-H",
            "Sat 09:00-13:00",
        )
        assert (
            "write days then hours"
            in cli("users", "set-hours", "front-desk", "Mon-Fri 8-18", expect=2).output
        )
        cli("users", "set-privileges", "front-desk", "view_reports", "run_sync")
        listed = cli("users", "list").stdout
        assert "front-desk" in listed and "view_reports,run_sync" in listed
        assert "Mon-Fri 08:00-18:00; Sat 09:00-13:00" in listed
        assert cli("users", "clerk-key", "front-desk").stdout.startswith("llc_")
        assert "--rotate" in cli("users", "clerk-key", "front-desk", expect=4).output
        cli("users", "clerk-key", "front-desk", "--rotate", "--overlap-hours", "1")
        assert "keys issue" in cli("keys", "rotate", expect=2).output
        merchant = cli("keys", "issue")
        assert merchant.stdout.startswith("llm_") and "practice id P" in merchant.output
        cli("keys", "issue", expect=4)
        rotated = cli("keys", "rotate", "--overlap-hours", "0")
        assert "replaced" in rotated.output
        keys = cli("keys", "list").stdout
        assert merchant.stdout.strip().split("_", 2)[2] not in keys
        assert "expired" in keys and "live" in keys
        live_prefix = rotated.stdout.strip().split("_")[1]
        assert "is revoked" in cli("keys", "revoke", live_prefix).output
        assert "revoked" in cli("keys", "list").stdout
        assert "no key with prefix" in cli("keys", "revoke", "nosuchprefix", expect=3).output
    finally:
        get_settings.cache_clear()
