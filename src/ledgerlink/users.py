"""People of a practice: usernames, privileges and login hours, always looked up within one practice.

A user acts through a clerk key (`ledgerlink.access_keys`), which works only inside the user's login
hours and only for what the user's privileges allow. A user id of another practice is answered exactly
like an id that does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.login_hours import describe, validate_windows
from ledgerlink.store.models import Practice, User

VIEW_REPORTS = "view_reports"
RUN_SYNC = "run_sync"
RETRY_CLEAR = "retry_clear"
MANAGE_SETTINGS = "manage_settings"
IMPORT_PATIENTS = "import_patients"
MANAGE_USERS = "manage_users"
PRIVILEGES = (VIEW_REPORTS, RUN_SYNC, RETRY_CLEAR, MANAGE_SETTINGS, IMPORT_PATIENTS, MANAGE_USERS)

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,99}$")


def check_username(username: str) -> str:
    username = username.strip().lower()
    if not _USERNAME.match(username):
        raise InvalidInput(
            f"username {username!r} must be 1 to 100 lower-case letters, digits or . _ @ -, "
            "starting with a letter or digit",
            field="username",
        )
    return username


def check_privileges(privileges: Iterable[str]) -> list[str]:
    """The privileges in a stable order, or InvalidInput naming the unknown one and the valid ones."""
    wanted = {p.strip() for p in privileges}
    unknown = sorted(wanted - set(PRIVILEGES))
    if unknown:
        raise InvalidInput(
            f"unknown privilege {unknown[0]!r}; the privileges are {', '.join(PRIVILEGES)}",
            field="privileges",
        )
    return [p for p in PRIVILEGES if p in wanted]


def _display_name(name: str) -> str:
    name = name.strip()
    if len(name) > 200:
        raise InvalidInput("a display name has at most 200 characters", field="display_name")
    return name


async def create_user(
    session: AsyncSession,
    practice: Practice,
    username: str,
    *,
    actor: str,
    display_name: str = "",
    privileges: Iterable[str] = (),
    login_hours: list[dict[str, Any]] | None = None,
) -> User:
    username = check_username(username)
    user = User(
        practice_id=practice.id,
        username=username,
        display_name=_display_name(display_name),
        privileges=check_privileges(privileges),
        login_hours=validate_windows(login_hours or []),
        active=True,
    )
    taken = await session.scalar(
        select(User.id).where(User.practice_id == practice.id, User.username == username)
    )
    if taken is not None:
        raise Conflict(f"practice {practice.slug!r} already has a user {username!r}", field="username")
    session.add(user)
    await session.flush()
    await record_audit(
        session,
        practice.id,
        actor,
        "user.created",
        target=f"user {username}",
        detail={"privileges": user.privileges, "login_hours": describe(user.login_hours)},
    )
    return user


async def list_users(session: AsyncSession, practice: Practice) -> list[User]:
    return list(
        await session.scalars(select(User).where(User.practice_id == practice.id).order_by(User.username))
    )


async def get_user(session: AsyncSession, practice: Practice, user_id: int) -> User:
    """The practice's user `user_id`; another practice's user is NotFound, like a missing one."""
    user = await session.scalar(select(User).where(User.id == user_id, User.practice_id == practice.id))
    if user is None:
        raise NotFound(f"no user with id {user_id} in this practice", field="user_id")
    return user


async def find_user(session: AsyncSession, practice: Practice, username: str) -> User:
    """The practice's user named `username` (for the CLI)."""
    name = username.strip().lower()
    user = await session.scalar(select(User).where(User.practice_id == practice.id, User.username == name))
    if user is None:
        raise NotFound(
            f"practice {practice.slug!r} has no user {name!r}; see `ledgerlink users list`", field="username"
        )
    return user


async def update_user(
    session: AsyncSession,
    user: User,
    *,
    actor: str,
    display_name: str | None = None,
    privileges: Iterable[str] | None = None,
    login_hours: list[dict[str, Any]] | None = None,
    active: bool | None = None,
) -> User:
    """Change what is given (None leaves a field alone); the audit entry lists the changed fields."""
    changes: dict[str, Any] = {}
    if display_name is not None:
        changes["display_name"] = _display_name(display_name)
    if privileges is not None:
        changes["privileges"] = check_privileges(privileges)
    if login_hours is not None:
        changes["login_hours"] = validate_windows(login_hours)
    if active is not None:
        changes["active"] = active
    changed = {name: value for name, value in changes.items() if getattr(user, name) != value}
    for name, value in changed.items():
        setattr(user, name, value)
    if changed:
        detail = dict(changed)
        if "login_hours" in detail:
            detail["login_hours"] = describe(detail["login_hours"])
        await record_audit(
            session, user.practice_id, actor, "user.updated", target=f"user {user.username}", detail=detail
        )
    return user
