"""Signing in and out at `/`, and a user's own password at `/account`.

Sign-in asks for the practice (its short name or the public practice id from the integration keys page),
the username and the password. Every failure gets the same words, so the page does not tell a stranger
which practices or usernames exist; failures are counted per practice+username and per address with the
same database-backed limiter as the API keys (`ledgerlink.auth_limits`), and a blocked sign-in says when
to try again. A user outside their login hours is told their hours instead of being signed in.

The sign-in form carries its own CSRF token (a cookie plus a hidden field that must match), so another
site cannot sign a browser in to an account of its choosing.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select

from ledgerlink.api.auth import database
from ledgerlink.audit import record_audit
from ledgerlink.auth_limits import (
    address_scope,
    blocked_until,
    forget_failures,
    practice_scope,
    record_failure,
)
from ledgerlink.clock import utcnow
from ledgerlink.errors import InvalidInput
from ledgerlink.passwords import password_matches, set_password
from ledgerlink.store.models import Practice, User
from ledgerlink.web.rendering import home_for, redirect, render
from ledgerlink.web.sessions import COOKIE, LIFETIME, end_session, find_session, start_session
from ledgerlink.web.staff import (
    SIGN_IN_REASONS,
    SignedInStaff,
    Staff,
    checked_form,
    csrf_ok,
    outside_hours_reason,
)

router = APIRouter(include_in_schema=False)

SIGN_IN_CSRF_COOKIE = "ll_sign_in"
WRONG = "That practice, username and password do not match an account. Check them and try again."


def safe_next(target: str | None) -> str:
    """Only a path on this site: never another host (`//evil`, `https://...`) after signing in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _sign_in_page(
    request: Request, *, status: int = 200, error: str = "", practice: str = "", username: str = ""
) -> HTMLResponse:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "sign_in.html",
        None,
        status=status,
        error=error,
        practice=practice,
        username=username,
        next=safe_next(request.query_params.get("next") or request.headers.get("x-next")),
        reason=SIGN_IN_REASONS.get(request.query_params.get("reason", ""), ""),
        sign_in_token=token,
    )
    response.set_cookie(SIGN_IN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.get("/", response_class=HTMLResponse)
async def sign_in_page(request: Request) -> Response:
    async with database(request).sessions.begin() as session:
        found = await find_session(session, request.cookies.get(COOKIE, ""))
    if found is not None and outside_hours_reason(found.user, found.practice, utcnow()) is None:
        staff = Staff(found.practice, found.user, found.web_session.csrf_token)
        return RedirectResponse(home_for(staff), status_code=303)
    return _sign_in_page(request)


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    practice: Annotated[str, Form()] = "",
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    sign_in_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    practice_text, name = practice.strip(), username.strip().lower()
    if not csrf_ok(request.cookies.get(SIGN_IN_CSRF_COOKIE, ""), sign_in_token):
        return _sign_in_page(
            request,
            status=400,
            error="The sign-in form had expired. Please try again.",
            practice=practice_text,
        )
    if not practice_text or not name or not password:
        return _sign_in_page(
            request,
            status=400,
            error="Enter your practice, username and password.",
            practice=practice_text,
            username=name,
        )
    address = request.client.host if request.client else "unknown"
    scopes = [practice_scope(f"web:{practice_text.lower()}:{name}"), address_scope(f"web:{address}")]
    now = utcnow()
    async with database(request).sessions() as session:
        until = await blocked_until(session, scopes, now)
        if until is not None:
            minutes = max(1, round((until - now).total_seconds() / 60))
            return _sign_in_page(
                request,
                status=429,
                error=f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                practice=practice_text,
                username=name,
            )
        found = (
            await session.execute(
                select(User, Practice)
                .join(Practice, Practice.id == User.practice_id)
                .where(
                    or_(Practice.slug == practice_text.lower(), Practice.public_id == practice_text),
                    User.username == name,
                )
            )
        ).first()
    user, practice_row = found if found is not None else (None, None)
    # argon2 takes tens of milliseconds of CPU: off the event loop, so other requests and syncs go on.
    good = await asyncio.to_thread(password_matches, user.password_hash if user else None, password)
    failed = user is None or practice_row is None or not good or not user.active
    if failed:
        async with database(request).sessions.begin() as session:
            await record_failure(session, scopes, now)
    if failed:
        return _sign_in_page(request, status=401, error=WRONG, practice=practice_text, username=name)
    assert user is not None and practice_row is not None
    reason = outside_hours_reason(user, practice_row, now)
    if reason is not None:
        return _sign_in_page(
            request,
            status=403,
            error=f"You cannot sign in now. {reason}",
            practice=practice_text,
            username=name,
        )
    async with database(request).sessions.begin() as session:
        await forget_failures(session, scopes[0])
        token = await start_session(session, user)
        await record_audit(session, practice_row.id, f"user {user.username}", "user.signed_in")
    staff = Staff(practice_row, user, "")
    response = RedirectResponse(safe_next(next) or home_for(staff), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(SIGN_IN_CSRF_COOKIE, path="/")
    return response


@router.post("/sign-out")
async def sign_out(request: Request, staff: SignedInStaff) -> Response:
    await checked_form(request, staff)
    async with database(request).sessions.begin() as session:
        await end_session(session, request.cookies.get(COOKIE, ""))
        await record_audit(session, staff.practice.id, staff.actor, "user.signed_out")
    response = redirect("/", "You are signed out.")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/account", response_class=HTMLResponse)
async def account_page(request: Request, staff: SignedInStaff) -> Response:
    return render(request, "account.html", staff)


@router.post("/account/password", response_class=HTMLResponse)
async def change_password(request: Request, staff: SignedInStaff) -> Response:
    form = await checked_form(request, staff)
    current, new, again = (str(form.get(name) or "") for name in ("current", "password", "again"))
    errors: dict[str, str] = {}
    if not await asyncio.to_thread(password_matches, staff.user.password_hash, current):
        errors["current"] = "This is not your current password."
    elif new != again:
        errors["again"] = "The two new passwords differ."
    else:
        try:
            async with database(request).sessions.begin() as session:
                user = await session.get(User, staff.user.id)
                assert user is not None
                await set_password(session, user, new, actor=staff.actor)
        except InvalidInput as exc:
            errors[exc.field or "password"] = exc.message
    if errors:
        return render(request, "account.html", staff, status=400, errors=errors)
    response = redirect("/", "Your password was changed. Sign in with the new one.")
    response.delete_cookie(COOKIE, path="/")
    return response
