"""`ledgerlink notify`: where a practice's alert digest goes (e-mail, signed webhooks), and sending it now.

A webhook's signing secret is printed once on standard output (so it can be piped into a secret store);
everything else goes to standard error or is a listing. The shared CLI pieces (`run`, the consoles, the
actor) are looked up when a command runs, because `ledgerlink.cli.app` imports this module while it is
still being built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ledgerlink.clock import utcnow
from ledgerlink.notify.content import dashboard_link, ping_notice
from ledgerlink.notify.delivery import deliver, http_client
from ledgerlink.notify.digest import send_digests
from ledgerlink.notify.targets import EMAIL, WEBHOOK, add_target, get_target, list_targets, remove_target
from ledgerlink.notify.targets import shown_address as shown
from ledgerlink.practices import resolve_practice
from ledgerlink.secrets import SecretBox

if TYPE_CHECKING:
    from ledgerlink.settings import Settings
    from ledgerlink.store.db import Database

notify_app = typer.Typer(
    help="Alerts out of the PMS: e-mail and webhook digests of failed and unmatched payments.",
    no_args_is_help=True,
)

PracticeOpt = Annotated[
    str | None, typer.Option("--practice", "-p", help="Practice id (optional when there is one).")
]
TargetArg = Annotated[int, typer.Argument(help="The target's id (see: ledgerlink notify list).")]


def _cli() -> Any:
    # By module path: the package `ledgerlink.cli` exports the Typer app under the same name `app`.
    return importlib.import_module("ledgerlink.cli.app")


def _add(kind: str, address: str, practice: str | None) -> None:
    cli = _cli()

    async def work(db: Database, settings: Settings) -> None:
        box = SecretBox.for_data_dir(settings.data_dir)
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            added = await add_target(session, p, kind, address, box=box, actor=cli.ACTOR)
        if added.secret:
            cli.out.print(added.secret, highlight=False)
            cli.err.print(
                f"webhook target {added.target.id} for {p.slug}: the signing secret above is shown once, "
                "give it to the receiver now (docs/alerts.md shows how it checks Ledgerlink-Signature)"
            )
        else:
            cli.err.print(f"e-mail target {added.target.id} for {p.slug}: {added.target.address}")

    cli.run(work)


@notify_app.command("add-email")
def add_email(
    address: Annotated[str, typer.Argument(help="One e-mail address, e.g. office@example.com.")],
    practice: PracticeOpt = None,
) -> None:
    """Send the practice's alert digest to an e-mail address."""
    _add(EMAIL, address, practice)


@notify_app.command("add-webhook")
def add_webhook(
    url: Annotated[str, typer.Argument(help="An http(s) URL that takes signed JSON POSTs.")],
    practice: PracticeOpt = None,
) -> None:
    """Send the practice's alert digest as a signed webhook; prints the signing secret once."""
    _add(WEBHOOK, url, practice)


@notify_app.command("list")
def list_(practice: PracticeOpt = None) -> None:
    """List the practice's targets (never a webhook's secret)."""
    cli = _cli()

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            targets = await list_targets(session, p.id)
        if not targets:
            cli.err.print(f"{p.slug} has no notification targets (add one with: ledgerlink notify add-email)")
        for t in targets:
            state = "active" if t.active else "inactive"
            cli.out.print(
                f"{t.id}\t{t.kind}\t{shown(t)}\tadded {t.created_at:%Y-%m-%d}\t{state}", highlight=False
            )

    cli.run(work)


@notify_app.command("remove")
def remove(target_id: TargetArg, practice: PracticeOpt = None) -> None:
    """Stop sending the digest to a target."""
    cli = _cli()

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            await remove_target(session, p.id, target_id, actor=cli.ACTOR)
        cli.out.print(f"removed notification target {target_id} of {p.slug}")

    cli.run(work)


@notify_app.command("test")
def test(target_id: TargetArg, practice: PracticeOpt = None) -> None:
    """Send a test message to one target (no alerts; nothing is marked sent)."""
    cli = _cli()

    async def work(db: Database, settings: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            target = await get_target(session, p.id, target_id)
        notice = ping_notice(p.slug, p.name, dashboard_link(settings.dashboard_url), utcnow())
        box = SecretBox.for_data_dir(settings.data_dir)
        async with http_client(None, settings) as http:
            delivery = await deliver(target, notice, settings=settings, box=box, http=http)
        if not delivery.ok:
            cli.err.print(f"[bold red]not delivered[/] to {delivery.address}: {delivery.detail}")
            raise cli.NeedsAttention()
        cli.out.print(f"test message delivered to {delivery.address}", highlight=False)

    cli.run(work)


@notify_app.command("send")
def send(practice: PracticeOpt = None) -> None:
    """Send the digests of new alerts now (all practices, or the one named); exit 5 if a target failed."""
    cli = _cli()

    async def work(db: Database, settings: Settings) -> None:
        only = None
        if practice:
            async with db.sessions() as session:
                only = (await resolve_practice(session, practice)).id
        summary = await send_digests(db, settings, practice_id=only)
        for line in summary.lines():
            cli.out.print(line, highlight=False)
        if summary.failures or summary.errors:
            raise cli.NeedsAttention()

    cli.run(work)
