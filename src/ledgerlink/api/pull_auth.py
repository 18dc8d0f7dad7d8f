"""Who is pulling: a PMS with its practice's merchant key, and optionally a clerk key for one of its users.

Headers: `X-Practice-Id` (the practice's public id), `X-Merchant-Key` (`llm_...`) and, when a person at the
office acts, `X-Clerk-Key` (`llc_...`). Surrounding whitespace of each is ignored.

Answers, in the order they are decided:
- 429 `too_many_attempts` while the presented practice id or the client address is blocked after too many
  failures (see `ledgerlink.auth_limits`), even for the right keys;
- 401 `unauthorized` for anything wrong with the id or a key (unknown, another practice's, expired,
  revoked), always the same answer, so it says nothing about which part was wrong; each one is counted;
- 403 `user_inactive` / `outside_login_hours` for a clerk whose user may not act now, and
  `privilege_missing` from `require_privilege` for a clerk without what a route needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink import clock
from ledgerlink.access_keys import CLERK, MERCHANT, verify_key
from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.auth_limits import (
    address_scope,
    blocked_until,
    forget_failures,
    practice_scope,
    record_failure,
)
from ledgerlink.login_hours import allowed_at, describe
from ledgerlink.store.models import Practice, User

PRACTICE_HEADER = "X-Practice-Id"
MERCHANT_HEADER = "X-Merchant-Key"
CLERK_HEADER = "X-Clerk-Key"

PULL_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorEnvelope,
        "description": "the practice id, the merchant key or the clerk key is missing or not valid",
    },
    403: {
        "model": ErrorEnvelope,
        "description": "the clerk's user is inactive, outside its login hours, or lacks a privilege",
    },
    429: {
        "model": ErrorEnvelope,
        "description": "too many failed attempts from this address or for this practice id; see Retry-After",
        "headers": {
            "Retry-After": {"description": "seconds until the block ends", "schema": {"type": "integer"}}
        },
    },
}


@dataclass(frozen=True, slots=True)
class PullCaller:
    practice: Practice
    user: User | None  # set when a clerk key was presented
    merchant_prefix: str = ""

    @property
    def actor(self) -> str:
        if self.user is not None:
            return f"clerk {self.user.username}"
        return f"merchant key {self.merchant_prefix}"


def _unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"valid {PRACTICE_HEADER} and {MERCHANT_HEADER} headers are required "
        f"(and a valid {CLERK_HEADER} when one is sent)",
    )


def _too_many(until_seconds: float) -> ApiError:
    seconds = max(1, math.ceil(until_seconds))
    return ApiError(
        429,
        "too_many_attempts",
        f"too many failed attempts; try again in {math.ceil(seconds / 60)} minutes",
        headers={"Retry-After": str(seconds)},
    )


def _header(request: Request, name: str) -> str:
    return request.headers.get(name, "").strip()


async def _proven(
    session: AsyncSession, public_id: str, merchant_key: str, clerk_key: str
) -> PullCaller | None:
    """The caller the presented values prove, or None if any of them is wrong (which one stays unsaid)."""
    if not public_id or not merchant_key:
        return None
    practice = await session.scalar(select(Practice).where(Practice.public_id == public_id))
    if practice is None:
        return None
    merchant = await verify_key(session, practice, MERCHANT, merchant_key)
    if merchant is None:
        return None
    if not clerk_key:
        return PullCaller(practice, None, merchant.prefix)
    clerk = await verify_key(session, practice, CLERK, clerk_key)
    user = await session.get(User, clerk.user_id) if clerk is not None and clerk.user_id else None
    if user is None or user.practice_id != practice.id:
        return None
    return PullCaller(practice, user, merchant.prefix)


async def pull_caller(request: Request) -> PullCaller:
    """FastAPI dependency: the practice (and clerk) the request's keys prove, or 401/403/429."""
    public_id = _header(request, PRACTICE_HEADER)
    scopes = [address_scope(request.client.host if request.client else "unknown")]
    if public_id:
        scopes.insert(0, practice_scope(public_id))
    now = clock.utcnow()
    db = database(request)
    async with db.sessions.begin() as session:
        until = await blocked_until(session, scopes, now)
        if until is not None:
            raise _too_many((until - now).total_seconds())
        caller = await _proven(
            session, public_id, _header(request, MERCHANT_HEADER), _header(request, CLERK_HEADER)
        )
        if caller is not None:
            # Whoever holds this practice's keys may clear its count; the address count stays, or an
            # attacker with keys of their own could reset it between guesses at other practices.
            await forget_failures(session, practice_scope(public_id))
    if caller is None:
        async with db.sessions.begin() as session:
            await record_failure(session, scopes, now)
        raise _unauthorized()
    if caller.user is not None:
        _check_user_may_act(caller.practice, caller.user, now)
    return caller


def _check_user_may_act(practice: Practice, user: User, now: datetime) -> None:
    if not user.active:
        raise ApiError(
            403, "user_inactive", f"user {user.username!r} is inactive; a manager can reactivate it"
        )
    if not allowed_at(user.login_hours, now, practice.timezone):
        raise ApiError(
            403,
            "outside_login_hours",
            f"user {user.username!r} may sign in only {describe(user.login_hours)} ({practice.timezone} time)",
        )


def require_privilege(caller: PullCaller, privilege: str) -> None:
    """403 `privilege_missing` when a clerk is acting without `privilege`; the merchant key alone may all."""
    if caller.user is not None and privilege not in caller.user.privileges:
        raise ApiError(
            403,
            "privilege_missing",
            f"user {caller.user.username!r} lacks the privilege {privilege!r} this needs",
            field=CLERK_HEADER,
        )
