"""The Integration keys and users page: the practice id and merchant keys a PMS signs in with, and the
practice's users (privileges, login hours, active, dashboard password, clerk key).

A new key is shown once, on the page that answers the form that made it (never stored, never put in a
redirect or a cookie); afterwards only its prefix is listed. Rotating keeps the old keys working for an
overlap period so the PMS can switch without a gap. Everything goes through the same services as the API
(`access_keys`, `users`, `passwords`), which audit every change with the signed-in user as the actor.
Every user id is looked up within the signed-in practice: another practice's is a 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from ledgerlink import clock
from ledgerlink.access_keys import (
    CLERK,
    DEFAULT_OVERLAP,
    MAX_OVERLAP,
    MERCHANT,
    IssuedKey,
    check_overlap,
    is_live,
    issue_clerk_key,
    issue_merchant_key,
    list_keys,
    revoke_key,
)
from ledgerlink.api.auth import database
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.login_hours import describe, parse_windows
from ledgerlink.passwords import MIN_LENGTH, check_password, set_password
from ledgerlink.store.models import AccessKey, Practice, User
from ledgerlink.users import (
    IMPORT_PATIENTS,
    MANAGE_SETTINGS,
    MANAGE_USERS,
    PRIVILEGES,
    RETRY_CLEAR,
    RUN_SYNC,
    VIEW_REPORTS,
    create_user,
    get_user,
    list_users,
    update_user,
)
from ledgerlink.web.params import whole_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Staff, UserManager, checked_form

router = APIRouter(include_in_schema=False)
UserId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]
KeyPrefix = Annotated[str, PathParam(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")]

PRIVILEGE_LABELS = {
    VIEW_REPORTS: "See the sync report, reconciliation and patients",
    RUN_SYNC: "Start a sync now",
    RETRY_CLEAR: "Retry and clear failed payments",
    MANAGE_SETTINGS: "Change settings (practice, PMS connection, writeback rules)",
    IMPORT_PATIENTS: "Import the patient list",
    MANAGE_USERS: "Manage users and integration keys",
}
HOURS_HELP = (
    "One window per line, days then hours, such as Mon-Fri 08:00-17:00 or Sat 09:00-13:00. "
    "Leave empty to allow any time."
)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the page lists it: its prefix and, in words, whether it works."""

    prefix: str
    created_at: datetime
    expires_at: datetime | None
    state: str  # live, expiring, ended
    words: str


def key_rows(keys: list[AccessKey], staff: Staff) -> list[KeyRow]:
    now = clock.utcnow()
    rows = []
    for key in keys:
        if key.revoked_at is not None:
            state, words = "ended", f"Revoked {staff.fmt.moment(key.revoked_at)}"
        elif not is_live(key, now):
            state, words = "ended", f"Expired {staff.fmt.moment(key.expires_at)}"
        elif key.expires_at is not None:
            state, words = "expiring", f"Replaced: works until {staff.fmt.moment(key.expires_at)}"
        else:
            state, words = "live", "In use"
        rows.append(KeyRow(key.prefix, key.created_at, key.expires_at, state, words))
    return rows


def _overlap(form: FormData) -> timedelta:
    text = str(form.get("overlap_hours") or "").strip()
    if not text:
        return DEFAULT_OVERLAP
    hours = whole_number(text, maximum=10**6)
    if hours is None:
        raise InvalidInput(
            "write a whole number of hours, such as 24 (0 ends the old keys at once)", field="overlap_hours"
        )
    return check_overlap(timedelta(hours=hours))


def login_hours_from_text(text: str) -> list[dict[str, Any]]:
    """The windows typed one per line (or separated by ';'), each read by `login_hours.parse_window`."""
    return parse_windows(text.replace(";", "\n").splitlines())


def hours_text(windows: list[dict[str, Any]]) -> str:
    return "" if not windows else describe(windows).replace("; ", "\n")


def _user_form(form: FormData) -> dict[str, Any]:
    """What a user form typed, for showing it again after a mistake."""
    return {
        "username": str(form.get("username") or ""),
        "display_name": str(form.get("display_name") or ""),
        "privileges": [str(p) for p in form.getlist("privileges")],
        "login_hours": str(form.get("login_hours") or ""),
        "active": form.get("active") is not None,
    }


def _overview_form() -> dict[str, Any]:
    return {
        "username": "",
        "display_name": "",
        "privileges": [VIEW_REPORTS],
        "login_hours": "",
        "active": True,
    }


async def _overview(
    request: Request,
    staff: Staff,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    failed: str = "",
    new_user: dict[str, Any] | None = None,
) -> HTMLResponse:
    async with database(request).sessions() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        merchant = await list_keys(session, practice, MERCHANT)
        clerks = await list_keys(session, practice, CLERK)
        users = await list_users(session, practice)
    now = clock.utcnow()
    live_clerk = {key.user_id: key.prefix for key in reversed(clerks) if is_live(key, now)}
    return render(
        request,
        "people.html",
        staff,
        status=status,
        errors=errors or {},
        failed=failed,
        public_id=practice.public_id,
        merchant_keys=key_rows(merchant, staff),
        has_live_merchant_key=any(is_live(key, now) for key in merchant),
        users=users,
        live_clerk=live_clerk,
        describe=describe,
        privilege_labels=PRIVILEGE_LABELS,
        privileges=PRIVILEGES,
        new_user=new_user or _overview_form(),
        hours_help=HOURS_HELP,
        min_password=MIN_LENGTH,
        default_overlap=int(DEFAULT_OVERLAP.total_seconds() // 3600),
        max_overlap=int(MAX_OVERLAP.total_seconds() // 3600),
    )


@router.get("/people", response_class=HTMLResponse)
async def people_page(request: Request, staff: UserManager) -> Response:
    return await _overview(request, staff)


def _issued_page(
    request: Request, staff: Staff, issued: IssuedKey, *, what: str, user: User | None = None
) -> HTMLResponse:
    return render(
        request,
        "people_key.html",
        staff,
        issued=issued,
        what=what,
        key_user=user,
        rotated=bool(issued.rotated),
    )


@router.post("/people/merchant-key", response_class=HTMLResponse)
async def rotate_merchant_key(request: Request, staff: UserManager) -> Response:
    form = await checked_form(request, staff)
    try:
        overlap = _overlap(form)
    except InvalidInput as exc:
        return await _overview(
            request, staff, status=400, errors={"overlap_hours": exc.message}, failed="merchant"
        )
    async with database(request).sessions.begin() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        issued = await issue_merchant_key(session, practice, actor=staff.actor, overlap=overlap)
    return _issued_page(request, staff, issued, what="merchant key")


@router.post("/people/keys/{prefix}/revoke", response_class=HTMLResponse)
async def revoke_access_key(request: Request, staff: UserManager, prefix: KeyPrefix) -> Response:
    """End a merchant or clerk key now: for a key that leaked, which must not wait out a rotation overlap."""
    await checked_form(request, staff)
    async with database(request).sessions.begin() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        try:
            key = await revoke_key(session, practice, prefix, actor=staff.actor)
        except NotFound:
            raise HTTPException(404) from None
    back = f"/people/users/{key.user_id}" if key.user_id is not None else "/people#keys"
    return redirect(back, f"Key {key.prefix} is revoked: it no longer works anywhere.")


def _checked_user_fields(form: FormData, errors: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    privileges = [str(p) for p in form.getlist("privileges")]
    unknown = [p for p in privileges if p not in PRIVILEGES]
    if unknown:
        errors["privileges"] = f"unknown privilege {unknown[0]!r}"
    try:
        windows = login_hours_from_text(str(form.get("login_hours") or ""))
    except InvalidInput as exc:
        errors["login_hours"] = exc.message
        windows = []
    return privileges, windows


@router.post("/people/users", response_class=HTMLResponse)
async def add_user(request: Request, staff: UserManager) -> Response:
    form = await checked_form(request, staff)
    errors: dict[str, str] = {}
    privileges, windows = _checked_user_fields(form, errors)
    password = str(form.get("password") or "")
    if password:
        try:
            check_password(password)
        except InvalidInput as exc:
            errors["password"] = exc.message
    user_id = 0
    if not errors:
        try:
            async with database(request).sessions.begin() as session:
                practice = await session.get(Practice, staff.practice.id)
                assert practice is not None
                user = await create_user(
                    session,
                    practice,
                    str(form.get("username") or ""),
                    actor=staff.actor,
                    display_name=str(form.get("display_name") or ""),
                    privileges=privileges,
                    login_hours=windows,
                )
                if password:
                    await set_password(session, user, password, actor=staff.actor)
                user_id, username = user.id, user.username
        except (InvalidInput, Conflict) as exc:
            errors[exc.field or "username"] = exc.message
    if errors:
        return await _overview(
            request, staff, status=400, errors=errors, failed="new-user", new_user=_user_form(form)
        )
    signs_in = (
        "They can sign in with the password you set." if password else "Set a password so they can sign in."
    )
    return redirect(f"/people/users/{user_id}", f"User {username} added. {signs_in}")


async def _user_page(
    request: Request,
    staff: Staff,
    user_id: int,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    failed: str = "",
    typed: dict[str, Any] | None = None,
) -> HTMLResponse:
    async with database(request).sessions() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        user = await _owned_user(session, practice, user_id)
        clerk_keys = [k for k in await list_keys(session, practice, CLERK) if k.user_id == user.id]
    values = typed or {
        "display_name": user.display_name,
        "privileges": list(user.privileges),
        "login_hours": hours_text(user.login_hours),
        "active": user.active,
    }
    return render(
        request,
        "people_user.html",
        staff,
        status=status,
        errors=errors or {},
        failed=failed,
        user=user,
        values=values,
        hours_described=describe(user.login_hours),
        clerk_keys=key_rows(clerk_keys, staff),
        privilege_labels=PRIVILEGE_LABELS,
        privileges=PRIVILEGES,
        hours_help=HOURS_HELP,
        min_password=MIN_LENGTH,
        default_overlap=int(DEFAULT_OVERLAP.total_seconds() // 3600),
        max_overlap=int(MAX_OVERLAP.total_seconds() // 3600),
        is_self=user.id == staff.user.id,
    )


async def _owned_user(session: AsyncSession, practice: Practice, user_id: int) -> User:
    try:
        return await get_user(session, practice, user_id)
    except NotFound:
        raise HTTPException(404) from None


@router.get("/people/users/{user_id}", response_class=HTMLResponse)
async def user_page(request: Request, staff: UserManager, user_id: UserId) -> Response:
    return await _user_page(request, staff, user_id)


@router.post("/people/users/{user_id}", response_class=HTMLResponse)
async def change_user(request: Request, staff: UserManager, user_id: UserId) -> Response:
    form = await checked_form(request, staff)
    errors: dict[str, str] = {}
    privileges, windows = _checked_user_fields(form, errors)
    active = form.get("active") is not None
    if user_id == staff.user.id:
        # Taking away your own access would leave nobody able to put it back from the dashboard.
        if not active:
            errors["active"] = "You cannot make your own account inactive."
        if MANAGE_USERS not in privileges:
            errors["privileges"] = "You cannot take away your own privilege to manage users."
    changed = False
    if not errors:
        try:
            async with database(request).sessions.begin() as session:
                practice = await session.get(Practice, staff.practice.id)
                assert practice is not None
                user = await _owned_user(session, practice, user_id)
                before = (user.display_name, list(user.privileges), list(user.login_hours), user.active)
                await update_user(
                    session,
                    user,
                    actor=staff.actor,
                    display_name=str(form.get("display_name") or ""),
                    privileges=privileges,
                    login_hours=windows,
                    active=active,
                )
                changed = before != (user.display_name, user.privileges, user.login_hours, user.active)
                username = user.username
        except InvalidInput as exc:
            errors[exc.field or "display_name"] = exc.message
    if errors:
        typed = _user_form(form)
        return await _user_page(
            request, staff, user_id, status=400, errors=errors, failed="profile", typed=typed
        )
    notice = f"User {username} saved." if changed else "Nothing was changed."
    return redirect(f"/people/users/{user_id}", notice)


@router.post("/people/users/{user_id}/password", response_class=HTMLResponse)
async def set_user_password(request: Request, staff: UserManager, user_id: UserId) -> Response:
    form = await checked_form(request, staff)
    password, again = str(form.get("password") or ""), str(form.get("again") or "")
    errors: dict[str, str] = {}
    if password != again:
        errors["again"] = "The two passwords differ."
    else:
        try:
            async with database(request).sessions.begin() as session:
                practice = await session.get(Practice, staff.practice.id)
                assert practice is not None
                user = await _owned_user(session, practice, user_id)
                await set_password(session, user, password, actor=staff.actor)
                username = user.username
        except InvalidInput as exc:
            errors[exc.field or "password"] = exc.message
    if errors:
        return await _user_page(request, staff, user_id, status=400, errors=errors, failed="password")
    if user_id == staff.user.id:
        return redirect("/", "Your password was changed. Sign in with the new one.")
    return redirect(
        f"/people/users/{user_id}", f"Password of {username} set. Their other dashboard sessions were ended."
    )


@router.post("/people/users/{user_id}/clerk-key", response_class=HTMLResponse)
async def rotate_clerk_key(request: Request, staff: UserManager, user_id: UserId) -> Response:
    form = await checked_form(request, staff)
    try:
        overlap = _overlap(form)
    except InvalidInput as exc:
        async with database(request).sessions() as session:
            await _owned_user(session, staff.practice, user_id)
        return await _user_page(
            request, staff, user_id, status=400, errors={"overlap_hours": exc.message}, failed="clerk"
        )
    async with database(request).sessions.begin() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        user = await _owned_user(session, practice, user_id)
        issued = await issue_clerk_key(session, user, actor=staff.actor, overlap=overlap)
    return _issued_page(request, staff, issued, what="clerk key", user=user)
