"""Merchant and clerk keys: shown once, kept as hashes, rotated with an overlap; `pull_caller` over HTTP.

A tiny route using `pull_caller` is mounted on the real app and served by uvicorn, so every answer here is
what a PMS would see: 401 for any wrong key, 403 with a reason for a clerk who may not act, 429 after too
many failures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends
from sqlalchemy import select, update

from ledgerlink import clock
from ledgerlink.access_keys import (
    MERCHANT,
    issue_clerk_key,
    issue_merchant_key,
    revoke_key,
    verify_key,
)
from ledgerlink.api.app import create_app
from ledgerlink.api.pull_auth import PullCaller, pull_caller, require_privilege
from ledgerlink.auth_limits import MAX_FAILURES, practice_scope, record_failure
from ledgerlink.login_hours import parse_window
from ledgerlink.serving import running_app
from ledgerlink.store.db import Database
from ledgerlink.store.models import AccessKey, AuthFailure, Practice, User
from ledgerlink.users import RUN_SYNC, VIEW_REPORTS, create_user, update_user
from tests.conftest import make_practice

# A Wednesday, 10:00 in Chicago (UTC-5 in summer).
WEDNESDAY_10AM = datetime(2024, 6, 12, 15, 0, tzinfo=UTC)

Caller = Annotated[PullCaller, Depends(pull_caller)]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def now(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock(WEDNESDAY_10AM)
    monkeypatch.setattr(clock, "utcnow", moved)
    return moved


@dataclass
class Office:
    """Two practices' keys, and the pull test app served on loopback."""

    url: str
    db: Database
    practice: Practice
    public_id: str
    merchant: str
    clerk: str
    user_id: int
    other_public_id: str
    other_merchant: str
    other_clerk: str

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)

    def headers(self, **changes: str | None) -> dict[str, str]:
        values: dict[str, str | None] = {
            "X-Practice-Id": self.public_id,
            "X-Merchant-Key": self.merchant,
            "X-Clerk-Key": None,
        }
        values.update({name.replace("_", "-"): value for name, value in changes.items()})
        return {name: value for name, value in values.items() if value is not None}


def pull_test_app(url: str) -> Any:
    app = create_app(url)

    @app.get("/test/whoami")
    async def whoami(caller: Caller) -> dict[str, str]:
        return {"practice": caller.practice.slug, "actor": caller.actor}

    @app.get("/test/sync")
    async def sync(caller: Caller) -> dict[str, str]:
        require_privilege(caller, RUN_SYNC)
        return {"actor": caller.actor}

    return app


@pytest.fixture
async def office(db: Database, now: Clock) -> AsyncIterator[Office]:
    practice, _ = await make_practice(db, slug="smile", timezone="America/Chicago")
    other, _ = await make_practice(db, slug="grin", timezone="America/Chicago")
    async with db.sessions.begin() as session:
        practice = await session.get_one(Practice, practice.id)
        other = await session.get_one(Practice, other.id)
        merchant = await issue_merchant_key(session, practice, actor="test")
        other_merchant = await issue_merchant_key(session, other, actor="test")
        user = await create_user(
            session,
            practice,
            "front-desk",
            actor="test",
            privileges=[VIEW_REPORTS],
            login_hours=[parse_window("Mon-Fri 08:00-18:00")],
        )
        other_user = await create_user(session, other, "front-desk", actor="test", privileges=[RUN_SYNC])
        clerk = await issue_clerk_key(session, user, actor="test")
        other_clerk = await issue_clerk_key(session, other_user, actor="test")
    with running_app(pull_test_app(db.url)) as url:
        yield Office(
            url,
            db,
            practice,
            merchant.public_id,
            merchant.plain,
            clerk.plain,
            user.id,
            other_merchant.public_id,
            other_merchant.plain,
            other_clerk.plain,
        )


async def whoami(office: Office, **headers: str | None) -> httpx.Response:
    async with office.client() as client:
        return await client.get("/test/whoami", headers=office.headers(**headers))


async def test_merchant_key_is_shown_once_kept_as_a_hash_and_compared_in_constant_time(
    db: Database, now: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    practice, _ = await make_practice(db)
    async with db.sessions.begin() as session:
        practice = await session.get_one(Practice, practice.id)
        first = await issue_merchant_key(session, practice, actor="test")
        second = await issue_merchant_key(session, practice, actor="test")
    assert first.plain.startswith(f"llm_{first.prefix}_") and len(first.plain) > 50
    assert first.public_id == second.public_id  # made once, with the first key
    assert first.public_id[0] == "P" and len(first.public_id) == 11
    assert set(first.public_id[1:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    async with db.sessions() as session:
        rows = list(await session.scalars(select(AccessKey).order_by(AccessKey.id)))
    assert [row.prefix for row in rows] == [first.prefix, second.prefix]
    assert rows[0].key_hash == hashlib.sha256(first.plain.encode()).hexdigest()
    stored = " ".join(str(value) for row in rows for value in vars(row).values())
    assert first.plain not in stored and second.plain not in stored
    assert first.plain.split("_", 2)[2] not in stored

    compared: list[tuple[str, str]] = []
    real: Callable[[Any, Any], bool] = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with db.sessions() as session:
        assert await verify_key(session, practice, MERCHANT, second.plain) is not None
    assert compared == [(rows[1].key_hash, hashlib.sha256(second.plain.encode()).hexdigest())]


async def test_right_keys_are_accepted_and_padding_is_trimmed(office: Office) -> None:
    answer = await whoami(office)
    assert answer.status_code == 200, answer.text
    assert answer.json()["practice"] == "smile"
    assert answer.json()["actor"].startswith("merchant key ")
    clerk = await whoami(office, X_Clerk_Key=office.clerk)
    assert clerk.json() == {"practice": "smile", "actor": "clerk front-desk"}
    # HTTP clients refuse, and servers drop, spaces around header values, so trimming is checked directly.
    async with office.db.sessions() as session:
        practice = await session.get_one(Practice, office.practice.id)
        assert await verify_key(session, practice, MERCHANT, f" \t{office.merchant}\r\n ") is not None
        assert await verify_key(session, practice, MERCHANT, f"{office.merchant}x") is None


WRONG: list[dict[str, str | None]] = [
    {"X_Merchant_Key": None},
    {"X_Practice_Id": None},
    {"X_Merchant_Key": "llm_000000000000_nope"},
    {"X_Merchant_Key": "not a key"},
    {"X_Practice_Id": "PNOSUCHID00"},
    {"X_Clerk_Key": "llc_000000000000_nope"},
]


async def test_wrong_keys_get_one_401_that_does_not_say_which_part_was_wrong(office: Office) -> None:
    reference = await whoami(office, X_Merchant_Key=office.merchant[:-2] + "zz")
    assert reference.status_code == 401
    assert reference.json()["error"]["code"] == "unauthorized"
    for wrong in WRONG:
        answer = await whoami(office, **wrong)
        assert (answer.status_code, answer.json()) == (401, reference.json()), wrong


async def test_another_practices_keys_are_401(office: Office) -> None:
    assert (await whoami(office, X_Clerk_Key=office.other_clerk)).status_code == 401
    assert (await whoami(office, X_Merchant_Key=office.other_merchant)).status_code == 401
    # The other practice's own pair works: it is the mix that is refused.
    own = await whoami(office, X_Practice_Id=office.other_public_id, X_Merchant_Key=office.other_merchant)
    assert own.status_code == 200 and own.json()["practice"] == "grin"
    # A clerk key is not a merchant key, even of the same practice.
    assert (await whoami(office, X_Merchant_Key=office.clerk)).status_code == 401


async def test_rotated_key_works_during_the_overlap_and_not_after(office: Office) -> None:
    async with office.db.sessions.begin() as session:
        practice = await session.get_one(Practice, office.practice.id)
        rotated = await issue_merchant_key(session, practice, actor="test", overlap=timedelta(hours=2))
    assert rotated.public_id == office.public_id
    assert rotated.old_keys_expire_at == WEDNESDAY_10AM + timedelta(hours=2)
    assert (await whoami(office)).status_code == 200  # the old key, inside the overlap
    assert (await whoami(office, X_Merchant_Key=rotated.plain)).status_code == 200
    async with office.db.sessions.begin() as session:
        await session.execute(
            update(AccessKey)
            .where(AccessKey.prefix == office.merchant.split("_")[1])
            .values(expires_at=WEDNESDAY_10AM - timedelta(seconds=1))
        )
    assert (await whoami(office)).status_code == 401
    assert (await whoami(office, X_Merchant_Key=rotated.plain)).status_code == 200


async def test_zero_overlap_rotation_and_revocation_end_keys_at_once(office: Office) -> None:
    async with office.db.sessions.begin() as session:
        user = await session.get_one(User, office.user_id)
        rotated = await issue_clerk_key(session, user, actor="test", overlap=timedelta(0))
    assert (await whoami(office, X_Clerk_Key=office.clerk)).status_code == 401
    assert (await whoami(office, X_Clerk_Key=rotated.plain)).status_code == 200
    async with office.db.sessions.begin() as session:
        practice = await session.get_one(Practice, office.practice.id)
        await revoke_key(session, practice, office.merchant.split("_")[1], actor="test")
    assert (await whoami(office)).status_code == 401


async def test_clerk_outside_login_hours_gets_403_naming_them_even_on_a_dst_day(
    office: Office, now: Clock
) -> None:
    now.now = datetime(2024, 6, 15, 15, 0, tzinfo=UTC)  # Saturday 10:00 in Chicago
    answer = await whoami(office, X_Clerk_Key=office.clerk)
    assert answer.status_code == 403
    error = answer.json()["error"]
    assert error["code"] == "outside_login_hours"
    assert "Mon-Fri 08:00-18:00" in error["message"] and "America/Chicago" in error["message"]
    assert (await whoami(office)).status_code == 200  # the merchant key alone has no hours
    now.now = datetime(2024, 6, 12, 12, 59, tzinfo=UTC)  # Wednesday 07:59 in Chicago
    assert (await whoami(office, X_Clerk_Key=office.clerk)).status_code == 403
    now.now = datetime(2024, 6, 12, 13, 0, tzinfo=UTC)  # 08:00
    assert (await whoami(office, X_Clerk_Key=office.clerk)).status_code == 200
    # On the day clocks spring forward the hours stay on the practice's wall clock.
    async with office.db.sessions.begin() as session:
        user = await session.get_one(User, office.user_id)
        await update_user(session, user, actor="test", login_hours=[parse_window("Sun 08:00-12:00")])
    now.now = datetime(2024, 3, 10, 13, 30, tzinfo=UTC)  # 08:30 CDT, the day clocks spring forward
    assert (await whoami(office, X_Clerk_Key=office.clerk)).status_code == 200
    now.now = datetime(2024, 3, 10, 17, 30, tzinfo=UTC)  # 12:30 CDT (11:30 by standard time)
    assert (await whoami(office, X_Clerk_Key=office.clerk)).status_code == 403


async def test_missing_privilege_or_inactive_user_is_403_with_its_reason(office: Office) -> None:
    async with office.client() as client:
        clerk = await client.get("/test/sync", headers=office.headers(X_Clerk_Key=office.clerk))
        merchant = await client.get("/test/sync", headers=office.headers())
    assert clerk.status_code == 403
    assert clerk.json()["error"]["code"] == "privilege_missing"
    assert "'run_sync'" in clerk.json()["error"]["message"]
    assert merchant.status_code == 200  # the PMS integration itself may do everything the pull API offers
    async with office.db.sessions.begin() as session:
        user = await session.get_one(User, office.user_id)
        await update_user(session, user, actor="test", privileges=[VIEW_REPORTS, RUN_SYNC])
    async with office.client() as client:
        granted = await client.get("/test/sync", headers=office.headers(X_Clerk_Key=office.clerk))
    assert granted.status_code == 200 and granted.json() == {"actor": "clerk front-desk"}
    async with office.db.sessions.begin() as session:
        user = await session.get_one(User, office.user_id)
        await update_user(session, user, actor="test", active=False)
    answer = await whoami(office, X_Clerk_Key=office.clerk)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "user_inactive"


async def test_eleventh_failure_is_429_and_blocks_even_the_right_key(office: Office, now: Clock) -> None:
    for _ in range(MAX_FAILURES):
        assert (await whoami(office, X_Merchant_Key="llm_000000000000_guess")).status_code == 401
    blocked = await whoami(office, X_Merchant_Key="llm_000000000000_guess")
    assert blocked.status_code == 429
    assert blocked.json()["error"]["code"] == "too_many_attempts"
    assert blocked.headers["Retry-After"] == str(15 * 60)
    now.now += timedelta(minutes=5)
    right = await whoami(office)
    assert right.status_code == 429
    assert right.headers["Retry-After"] == str(10 * 60)
    now.now += timedelta(minutes=10, seconds=1)
    assert (await whoami(office)).status_code == 200


async def test_a_success_does_not_reset_another_scope(office: Office) -> None:
    # Guesses at different practice ids from one address: only the address scope adds up.
    for n in range(MAX_FAILURES - 1):
        assert (await whoami(office, X_Practice_Id=f"PGUESS{n:05d}")).status_code == 401
    other = await whoami(office, X_Practice_Id=office.other_public_id, X_Merchant_Key=office.other_merchant)
    assert other.status_code == 200  # a success of its own practice scope, which leaves the address's count
    assert (await whoami(office, X_Practice_Id="PGUESSLAST0")).status_code == 401  # the 10th failure
    answer = await whoami(office)
    assert answer.status_code == 429


async def test_failures_are_counted_atomically_across_concurrent_sessions(db: Database, now: Clock) -> None:
    async def fail_once() -> None:
        async with db.sessions.begin() as session:
            await record_failure(session, [practice_scope("PRACE")], now.now)

    await asyncio.gather(*(fail_once() for _ in range(25)))
    async with db.sessions() as session:
        row = await session.get_one(AuthFailure, practice_scope("PRACE"))
    assert row.failures == 25
    assert row.blocked_until == now.now + timedelta(minutes=15)


async def test_a_new_window_starts_after_fifteen_quiet_minutes(db: Database, now: Clock) -> None:
    scope = practice_scope("PQUIET")
    for _ in range(MAX_FAILURES - 1):
        async with db.sessions.begin() as session:
            await record_failure(session, [scope], now.now)
    now.now += timedelta(minutes=15)
    async with db.sessions.begin() as session:
        await record_failure(session, [scope], now.now)
    async with db.sessions() as session:
        row = await session.get_one(AuthFailure, scope)
    assert (row.failures, row.blocked_until, row.window_started_at) == (1, None, now.now)
