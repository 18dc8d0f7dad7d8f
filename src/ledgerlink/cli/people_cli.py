"""`ledgerlink users` and `ledgerlink keys`: the practice's people, their clerk keys, and merchant keys.

A new key is printed once on standard output (so it can be piped into a secret store) and never again;
everything else goes to standard error. The shared CLI pieces (`run`, the consoles, the actor) are looked
up when a command runs, because `ledgerlink.cli.app` imports this module while it is still being built.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledgerlink.access_keys import CLERK, MERCHANT, IssuedKey, is_live, list_keys, live_keys, revoke_key
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.login_hours import describe, parse_windows
from ledgerlink.passwords import set_password
from ledgerlink.practices import resolve_practice
from ledgerlink.users import PRIVILEGES, create_user, find_user, list_users, update_user

if TYPE_CHECKING:
    from ledgerlink.settings import Settings
    from ledgerlink.store.db import Database

users_app = typer.Typer(
    help="People of a practice: privileges, login hours, clerk keys.", no_args_is_help=True
)
keys_app = typer.Typer(help="The practice's merchant (integration) keys for its PMS.", no_args_is_help=True)

PracticeOpt = Annotated[
    str | None, typer.Option("--practice", "-p", help="Practice id (optional when there is one).")
]
OverlapOpt = Annotated[
    int | None,
    typer.Option("--overlap-hours", min=0, max=720, help="How long the old key keeps working (default 24)."),
]
HoursHelp = "Login hours such as 'Mon-Fri 08:00-18:00' (repeat for more windows; none: any time)."


def _cli() -> Any:
    # By module path: the package `ledgerlink.cli` exports the Typer app under the same name `app`.
    return importlib.import_module("ledgerlink.cli.app")


def _overlap(hours: int | None) -> timedelta | None:
    return timedelta(hours=hours) if hours is not None else None


def _show_key(issued: IssuedKey, what: str) -> None:
    cli = _cli()
    cli.out.print(issued.plain, highlight=False)
    cli.err.print(f"{what} {issued.prefix} for practice id {issued.public_id}: shown once, store it now")
    if issued.rotated:
        cli.err.print(
            f"replaced {', '.join(issued.rotated)}: they keep working until "
            f"{issued.old_keys_expire_at:%Y-%m-%d %H:%M} UTC"
        )


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Login name, e.g. front-desk.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Display name.")] = "",
    privilege: Annotated[
        list[str] | None, typer.Option("--privilege", "-P", help=f"Repeatable: {', '.join(PRIVILEGES)}.")
    ] = None,
    hours: Annotated[list[str] | None, typer.Option("--hours", "-H", help=HoursHelp)] = None,
    practice: PracticeOpt = None,
) -> None:
    """Add a user to a practice."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            user = await create_user(
                session,
                p,
                username,
                actor=_cli().ACTOR,
                display_name=name,
                privileges=privilege or [],
                login_hours=parse_windows(hours or []),
            )
        _cli().err.print(f"added user {user.username} (id {user.id}) to {p.slug}")

    _cli().run(work)


@users_app.command("list")
def users_list(practice: PracticeOpt = None) -> None:
    """List a practice's users with their privileges and login hours."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            users = await list_users(session, p)
        for u in users:
            state = "active" if u.active else "inactive"
            privileges = ",".join(u.privileges) or "-"
            _cli().out.print(
                f"{u.id}\t{u.username}\t{state}\t{privileges}\t{describe(u.login_hours)}", highlight=False
            )

    _cli().run(work)


@users_app.command("set-hours")
def users_set_hours(
    username: str,
    hours: Annotated[list[str], typer.Argument(help=HoursHelp + " 'any' clears them.")],
    practice: PracticeOpt = None,
) -> None:
    """Replace a user's login hours (in the practice's time zone)."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            user = await update_user(
                session,
                await find_user(session, p, username),
                actor=_cli().ACTOR,
                login_hours=parse_windows(hours),
            )
        _cli().err.print(f"{user.username} may sign in {describe(user.login_hours)} ({p.timezone})")

    _cli().run(work)


@users_app.command("set-password")
def users_set_password(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input (for scripts).")
    ] = False,
    practice: PracticeOpt = None,
) -> None:
    """Set a user's dashboard password (asked twice, not echoed). Ends the user's dashboard sessions."""
    import sys

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            user = await find_user(session, p, username)
            await set_password(session, user, password, actor=_cli().ACTOR)
        _cli().err.print(f"{user.username} can now sign in to the dashboard of {p.slug!r}")

    _cli().run(work)


@users_app.command("set-privileges")
def users_set_privileges(
    username: str,
    privileges: Annotated[
        list[str], typer.Argument(help=f"The full set ('none' for nothing): {', '.join(PRIVILEGES)}.")
    ],
    practice: PracticeOpt = None,
) -> None:
    """Replace a user's privileges."""
    wanted = [] if [p.strip().lower() for p in privileges] == ["none"] else privileges

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            user = await update_user(
                session, await find_user(session, p, username), actor=_cli().ACTOR, privileges=wanted
            )
        _cli().err.print(f"{user.username} now has: {', '.join(user.privileges) or 'no privileges'}")

    _cli().run(work)


@users_app.command("clerk-key")
def users_clerk_key(
    username: str,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace the user's current key.")] = False,
    overlap_hours: OverlapOpt = None,
    practice: PracticeOpt = None,
) -> None:
    """Issue a user's clerk key (or rotate it with --rotate). The key is shown once."""
    if overlap_hours is not None and not rotate:
        raise typer.BadParameter("--overlap-hours only applies with --rotate", param_hint="--overlap-hours")

    async def work(db: Database, _: Settings) -> None:
        from ledgerlink.access_keys import issue_clerk_key

        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            user = await find_user(session, p, username)
            if not rotate and await live_keys(session, p.id, CLERK, user.id):
                raise Conflict(
                    f"{user.username} already has a clerk key; replace it with --rotate", field="username"
                )
            issued = await issue_clerk_key(session, user, actor=_cli().ACTOR, overlap=_overlap(overlap_hours))
        _show_key(issued, f"clerk key of {user.username}")

    _cli().run(work)


@keys_app.command("issue")
def keys_issue(practice: PracticeOpt = None) -> None:
    """Issue the practice's first merchant key. The key is shown once."""

    async def work(db: Database, _: Settings) -> None:
        from ledgerlink.access_keys import issue_merchant_key

        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            if await live_keys(session, p.id, MERCHANT):
                raise Conflict(
                    f"{p.slug} already has a merchant key; replace it with `ledgerlink keys rotate`",
                    field="practice",
                )
            issued = await issue_merchant_key(session, p, actor=_cli().ACTOR)
        _show_key(issued, "merchant key")

    _cli().run(work)


@keys_app.command("rotate")
def keys_rotate(overlap_hours: OverlapOpt = None, practice: PracticeOpt = None) -> None:
    """Replace the merchant key; the old one keeps working for the overlap. The new key is shown once."""

    async def work(db: Database, _: Settings) -> None:
        from ledgerlink.access_keys import issue_merchant_key

        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            if not await live_keys(session, p.id, MERCHANT):
                raise InvalidInput(
                    f"{p.slug} has no merchant key to rotate; issue one with `ledgerlink keys issue`",
                    field="practice",
                )
            issued = await issue_merchant_key(session, p, actor=_cli().ACTOR, overlap=_overlap(overlap_hours))
        _show_key(issued, "merchant key")

    _cli().run(work)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as `keys list` or `users list` shows it.")],
    practice: PracticeOpt = None,
) -> None:
    """End a merchant or clerk key now (one that leaked: a rotation would keep it working for the overlap)."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            key = await revoke_key(session, p, prefix, actor=_cli().ACTOR)
        _cli().err.print(f"{key.kind} key {key.prefix} of {p.slug!r} is revoked: it no longer works")

    _cli().run(work)


@keys_app.command("list")
def keys_list(practice: PracticeOpt = None) -> None:
    """List the practice's merchant keys: prefix, created, expiry (never the key)."""

    async def work(db: Database, _: Settings) -> None:
        from ledgerlink import clock

        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            keys = await list_keys(session, p, MERCHANT)
        now = clock.utcnow()
        _cli().err.print(f"practice id {p.public_id or '(none yet)'}")
        for k in keys:
            if k.revoked_at is not None:
                state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
            elif k.expires_at is not None:
                verb = "expires" if is_live(k, now) else "expired"
                state = f"{verb} {k.expires_at:%Y-%m-%d %H:%M} UTC"
            else:
                state = "live"
            _cli().out.print(f"{k.prefix}\tcreated {k.created_at:%Y-%m-%d %H:%M}\t{state}", highlight=False)

    _cli().run(work)
