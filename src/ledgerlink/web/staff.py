"""Who is using the dashboard: the signed-in user of one practice, what they may do, and the checks every
page and form goes through.

Every page depends on `needs(privilege)`: no session sends the browser to the sign-in page (and a
script's request gets 401); a session outside the user's login hours is ended on the spot; a missing
privilege gets a 403 page naming it. Every form that changes something depends on `checked_form`, which
compares the session's CSRF token with the one the form carries (`X-CSRF-Token` for script requests) in
constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from ledgerlink.api.auth import database
from ledgerlink.clock import utcnow
from ledgerlink.login_hours import allowed_at, describe
from ledgerlink.store.models import Practice, User
from ledgerlink.users import (
    IMPORT_PATIENTS,
    MANAGE_SETTINGS,
    MANAGE_USERS,
    RETRY_CLEAR,
    RUN_SYNC,
    VIEW_REPORTS,
)
from ledgerlink.web.formatting import DEFAULT_LOCALE, PracticeFormat
from ledgerlink.web.sessions import COOKIE, end_session, find_session

PRIVILEGE_WORDS = {
    VIEW_REPORTS: "view reports",
    RUN_SYNC: "run a sync",
    RETRY_CLEAR: "retry and clear payments",
    MANAGE_SETTINGS: "manage settings",
    IMPORT_PATIENTS: "import patients",
    MANAGE_USERS: "manage users and keys",
}


# Why a session ended, carried to the sign-in page as a code (never as text: a link could say anything).
SIGN_IN_REASONS = {
    "hours": "You were signed out: it is outside your login hours.",
    "expired": "Your session ended. Please sign in again.",
}


class SignInRequired(Exception):
    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason  # a key of SIGN_IN_REASONS, or ""


class NotPermitted(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Staff:
    practice: Practice
    user: User
    csrf_token: str

    @property
    def actor(self) -> str:
        return f"user {self.user.username}"

    @property
    def name(self) -> str:
        return self.user.display_name or self.user.username

    @property
    def fmt(self) -> PracticeFormat:
        return PracticeFormat(self.practice.locale or DEFAULT_LOCALE, self.practice.timezone)

    def can(self, privilege: str) -> bool:
        return privilege in self.user.privileges


def outside_hours_reason(user: User, practice: Practice, now: datetime) -> str | None:
    """Why `user` may not use the dashboard at `now`, or None when they may."""
    if allowed_at(user.login_hours, now, practice.timezone):
        return None
    return f"Your login hours are {describe(user.login_hours)} ({practice.timezone} time)."


async def signed_in(request: Request) -> Staff:
    token = request.cookies.get(COOKIE, "")
    async with database(request).sessions.begin() as session:
        found = await find_session(session, token)
        if found is None:
            raise SignInRequired()
        reason = outside_hours_reason(found.user, found.practice, utcnow())
        if reason is not None:
            await end_session(session, token)
            raise SignInRequired("hours")
        return Staff(found.practice, found.user, found.web_session.csrf_token)


SignedInStaff = Annotated[Staff, Depends(signed_in)]


def needs(privilege: str) -> Callable[[Staff], Awaitable[Staff]]:
    async def check(staff: SignedInStaff) -> Staff:
        if not staff.can(privilege):
            raise NotPermitted(
                f"Your account may not {PRIVILEGE_WORDS[privilege]}. Ask your practice administrator "
                f"to give you that privilege."
            )
        return staff

    return check


def needs_any(*privileges: str) -> Callable[[Staff], Awaitable[Staff]]:
    async def check(staff: SignedInStaff) -> Staff:
        if not any(staff.can(p) for p in privileges):
            words = " or ".join(PRIVILEGE_WORDS[p] for p in privileges)
            raise NotPermitted(f"Your account may not {words}. Ask your practice administrator.")
        return staff

    return check


Viewer = Annotated[Staff, Depends(needs(VIEW_REPORTS))]
Syncer = Annotated[Staff, Depends(needs(RUN_SYNC))]
Fixer = Annotated[Staff, Depends(needs(RETRY_CLEAR))]
Importer = Annotated[Staff, Depends(needs(IMPORT_PATIENTS))]
Administrator = Annotated[Staff, Depends(needs(MANAGE_SETTINGS))]
UserManager = Annotated[Staff, Depends(needs(MANAGE_USERS))]
Auditor = Annotated[Staff, Depends(needs_any(MANAGE_SETTINGS, MANAGE_USERS))]


class CsrfRejected(Exception):
    pass


def csrf_ok(expected: str, presented: str) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode())


async def checked_form(request: Request, staff: Staff) -> FormData:
    """The posted form, once its CSRF token matched the session's; CsrfRejected otherwise."""
    form = await request.form()
    presented = request.headers.get("x-csrf-token") or str(form.get("csrf_token") or "")
    if not csrf_ok(staff.csrf_token, presented):
        raise CsrfRejected()
    return form
