"""`ledgerlink stripe ...`: the signing secrets of a practice's Stripe webhook endpoint.

A secret is read from a hidden prompt, or from stdin when it is piped (`pbpaste | ledgerlink stripe
secret-add`), never from the command line, where it would land in the shell history and the process list.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console

from ledgerlink.practices import resolve_practice
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import Settings
from ledgerlink.store.db import Database
from ledgerlink.webhook_secrets import (
    DEFAULT_OVERLAP_HOURS,
    add_secret,
    list_secrets,
    overlap_of,
    rotate_secret,
)

stripe_app = typer.Typer(help="Stripe webhooks: the endpoint's signing secrets.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True)

PracticeOpt = Annotated[
    str | None, typer.Option("--practice", "-p", help="Practice id (optional when there is one).")
]


def _read_secret() -> str:
    if sys.stdin.isatty():
        return str(typer.prompt("Signing secret (whsec_..., input hidden)", hide_input=True))
    return sys.stdin.readline()


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M}Z" if at else "never"


@stripe_app.command("secret-add")
def secret_add(practice: PracticeOpt = None) -> None:
    """Add the signing secret of the practice's Stripe endpoint (beside any live one)."""
    from ledgerlink.cli.app import ACTOR, run

    secret = _read_secret()

    async def work(db: Database, settings: Settings) -> None:
        box = SecretBox.for_data_dir(settings.data_dir)
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            row = await add_secret(session, box, p, secret, actor=ACTOR)
        out.print(f"added Stripe signing secret {row.id} for {p.slug}")

    run(work)


@stripe_app.command("secret-rotate")
def secret_rotate(
    practice: PracticeOpt = None,
    overlap_hours: Annotated[
        int, typer.Option(help="How long the old secrets keep verifying (hours, 0 to end them now).")
    ] = DEFAULT_OVERLAP_HOURS,
) -> None:
    """Switch to a new signing secret; the old ones verify until the overlap ends."""
    from ledgerlink.cli.app import ACTOR, run

    secret = _read_secret()

    async def work(db: Database, settings: Settings) -> None:
        box = SecretBox.for_data_dir(settings.data_dir)
        overlap = overlap_of(overlap_hours)
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            row = await rotate_secret(session, box, p, secret, actor=ACTOR, overlap=overlap)
        out.print(
            f"rotated to Stripe signing secret {row.id} for {p.slug}; older secrets verify for {overlap}"
        )

    run(work)


@stripe_app.command("secret-list")
def secret_list(practice: PracticeOpt = None) -> None:
    """List the practice's signing secrets: id, created, expires (never the secret)."""
    from ledgerlink.cli.app import run
    from ledgerlink.clock import utcnow

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            rows = await list_secrets(session, p)
        now = utcnow()
        if not rows:
            err.print(f"{p.slug} has no Stripe signing secret; add one with `ledgerlink stripe secret-add`")
        for row in rows:
            state = "live" if row.expires_at is None or row.expires_at > now else "expired"
            out.print(
                f"{row.id}\tcreated {_when(row.created_at)}\texpires {_when(row.expires_at)}\t{state}",
                highlight=False,
            )

    run(work)
