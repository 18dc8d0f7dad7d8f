"""`ledgerlink` commands. Each one opens the store, calls a service, and prints for people or scripts.

Exit codes: 0 success; 1 unexpected error; 2 bad input (the message says what and where); 3 not found;
4 conflict (already exists, a sync already running); 5 the work ran but left failures that need a person
(a file with bad rows, writebacks that failed).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from datetime import date, time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ledgerlink import runtime
from ledgerlink.cli.render import report_csv, report_json, report_table, writebacks_table
from ledgerlink.connectors.opendental.direct_db import WARNING as DIRECT_DB_WARNING
from ledgerlink.connectors.registry import is_direct_db, open_connector, settings_to_store
from ledgerlink.domain.report import ReportCategory
from ledgerlink.engine.operations import clear_writebacks, list_writebacks, retry_writebacks
from ledgerlink.engine.reports import range_report, run_report
from ledgerlink.engine.sync import SyncOutcome, SyncProgress, run_sync
from ledgerlink.errors import InvalidInput, LedgerlinkError, NotFound
from ledgerlink.log import configure_logging
from ledgerlink.practices import (
    PULL_KIND,
    add_connection,
    create_practice,
    get_connection,
    list_practices,
    resolve_practice,
)
from ledgerlink.settings import Settings, get_settings
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice, SyncRun

app = typer.Typer(
    help="Write processed payments back into practice-management ledgers, exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
practice_app = typer.Typer(help="Practices (tenants).", no_args_is_help=True)
connection_app = typer.Typer(help="PMS connections and their writeback rules.", no_args_is_help=True)
patients_app = typer.Typer(help="Patients and their PMS account numbers.", no_args_is_help=True)
transactions_app = typer.Typer(help="Transactions from the payment platform.", no_args_is_help=True)
writebacks_app = typer.Typer(help="Writebacks: list, Retry, Clear.", no_args_is_help=True)
token_app = typer.Typer(help="Staff API tokens for the HTTP API.", no_args_is_help=True)
app.add_typer(practice_app, name="practice")
app.add_typer(connection_app, name="connection")
app.add_typer(patients_app, name="patients")
app.add_typer(transactions_app, name="transactions")
app.add_typer(writebacks_app, name="writebacks")
app.add_typer(token_app, name="token")
# Sub-command groups defined in modules of their own (a module adds its import and add_typer line here).
from ledgerlink.cli.people_cli import keys_app, users_app  # noqa: E402

app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
from ledgerlink.cli.stripe_cli import stripe_app  # noqa: E402

app.add_typer(stripe_app, name="stripe")
from ledgerlink.cli.notify_cli import notify_app  # noqa: E402

app.add_typer(notify_app, name="notify")

out = Console(soft_wrap=True)
err = Console(stderr=True)
T = TypeVar("T")
ACTOR = f"cli:{os.environ.get('USER', 'unknown')}"

PracticeOpt = Annotated[
    str | None, typer.Option("--practice", "-p", help="Practice id (optional when there is one).")
]
ConnectionOpt = Annotated[
    str | None, typer.Option("--connection", "-c", help="Connection name (optional when one).")
]


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class NeedsAttention(Exception):
    """The command did its work but left something a person must look at (exit code 5)."""


def run(work: Callable[[Database, Settings], Awaitable[T]]) -> T:
    """Open the store (initialising a new data directory), run `work`, and turn errors into messages."""

    async def main() -> T:
        settings = get_settings()
        configure_logging(settings.log_level)
        db = await Database.open(settings.resolved_database_url)
        try:
            return await work(db, settings)
        finally:
            await db.close()

    try:
        return runtime.run(main())
    except LedgerlinkError as exc:
        where = f" ({exc.field})" if exc.field else ""
        err.print(f"[bold red]error{where}:[/] {exc.message}")
        raise typer.Exit(exc.exit_code) from None
    except NeedsAttention:
        raise typer.Exit(5) from None
    except KeyboardInterrupt:
        err.print("interrupted: work already recorded is kept; run the command again to continue")
        raise typer.Exit(130) from None
    except Exception as exc:  # the last line of defence: no stack traces for users
        if os.environ.get("LEDGERLINK_DEBUG"):
            raise
        err.print(f"[bold red]unexpected error:[/] {type(exc).__name__}: {exc}")
        err.print("Set LEDGERLINK_DEBUG=1 to see the details.")
        raise typer.Exit(1) from None


def parse_date(value: str | None, what: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{what} {value!r} is not a date (use YYYY-MM-DD)", field=what) from None


def parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise InvalidInput(f"{what} {value!r} must look like key=value", field=what)
        result[key.strip()] = val.strip()
    return result


async def practice_and_connection(
    db: Database, practice: str | None, connection: str | None
) -> tuple[Practice, Connection]:
    async with db.sessions() as session:
        p = await resolve_practice(session, practice)
        c = await get_connection(session, p, connection)
        return p, c


# --- set-up ----------------------------------------------------------------------------------------------


@app.command()
def init() -> None:
    """Create and migrate the data directory (done automatically on first use of any command)."""

    async def work(db: Database, settings: Settings) -> None:
        out.print(f"ledgerlink store ready: {settings.resolved_database_url.split('@')[-1]}")
        out.print(f"data directory: {settings.data_dir}")

    run(work)


@practice_app.command("create")
def practice_create(
    slug: Annotated[str, typer.Argument(help="Practice id: lower-case letters, digits, dashes.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    timezone: Annotated[str, typer.Option(help="IANA time zone for posting dates.")] = "America/New_York",
    capacity: Annotated[int | None, typer.Option(help="Patient capacity limit.")] = None,
) -> None:
    """Create a practice."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            practice = await create_practice(
                session,
                slug=slug,
                name=name or slug,
                timezone=timezone,
                patient_capacity=capacity,
                actor=ACTOR,
            )
        out.print(f"created practice [bold]{practice.slug}[/] ({practice.timezone})")

    run(work)


@practice_app.command("list")
def practice_list() -> None:
    """List practices."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            for p in await list_practices(session):
                out.print(f"{p.slug}\t{p.name}\t{p.timezone}")

    run(work)


@connection_app.command("add")
def connection_add(
    practice: PracticeOpt = None,
    name: Annotated[str, typer.Option(help="Connection name.")] = "pms",
    kind: Annotated[
        str,
        typer.Option(
            help="Connector: sandbox, opendental, or pull (the PMS downloads through the pull API)."
        ),
    ] = "sandbox",
    setting: Annotated[
        list[str] | None, typer.Option("--setting", "-s", help="Connector setting key=value.")
    ] = None,
    start_date: Annotated[
        str | None, typer.Option(help="Write back nothing dated before this (YYYY-MM-DD).")
    ] = None,
    amount: Annotated[str, typer.Option(help="net, gross or gross_plus_fee.")] = "net",
    timing: Annotated[str, typer.Option(help="instant or daily.")] = "instant",
    daily_time: Annotated[str, typer.Option(help="Local time of the daily writeback (HH:MM).")] = "18:00",
    chargebacks: Annotated[bool, typer.Option(help="Write back chargebacks as reversals.")] = True,
    rule: Annotated[
        list[str] | None, typer.Option("--type", help="Per payment type: TYPE=automatic|manual|off.")
    ] = None,
) -> None:
    """Connect a practice to a PMS."""

    async def work(db: Database, settings: Settings) -> None:
        try:
            at = time.fromisoformat(daily_time)
        except ValueError:
            raise InvalidInput(f"daily time {daily_time!r} is not HH:MM", field="daily_time") from None
        raw = parse_pairs(setting, "setting")
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            if kind == "sandbox":
                raw.setdefault("path", f"{p.slug}-{name}.db")
                raw.setdefault("timezone", p.timezone)
            if kind != PULL_KIND:  # a pull connection has no connector: the PMS downloads (docs/pull-api.md)
                connector = open_connector(kind, raw, settings.data_dir)  # validates the settings
                await connector.close()
            connection = await add_connection(
                session,
                p,
                name=name,
                kind=kind,
                settings=settings_to_store(kind, raw, settings.data_dir),  # API keys sealed
                start_date=parse_date(start_date, "start_date"),
                amount_mode=amount,
                timing=timing,
                daily_time=at,
                chargebacks_enabled=chargebacks,
                type_handling=parse_pairs(rule, "type"),
                actor=ACTOR,
            )
        out.print(f"added connection [bold]{connection.name}[/] ({kind}) to {p.slug}")
        if is_direct_db(kind, raw):
            err.print(f"[bold red]warning:[/] {DIRECT_DB_WARNING}")

    run(work)


@connection_app.command("list")
def connection_list(practice: PracticeOpt = None) -> None:
    """List a practice's connections and their rules."""

    async def work(db: Database, _: Settings) -> None:
        from sqlalchemy import select

        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            for c in await session.scalars(select(Connection).where(Connection.practice_id == p.id)):
                types = ", ".join(f"{k}={v}" for k, v in c.type_handling.items()) or "all automatic"
                out.print(
                    f"{c.name}\t{c.kind}\t{c.amount_mode}\t{c.timing}\tstart={c.start_date or '-'}\t"
                    f"chargebacks={'on' if c.chargebacks_enabled else 'off'}\t{types}"
                )

    run(work)


# --- patients --------------------------------------------------------------------------------------------


@patients_app.command("import")
def patients_import(
    file: Annotated[Path, typer.Argument(help="CSV exported from the PMS.")],
    practice: PracticeOpt = None,
    connection: ConnectionOpt = None,
    preset: Annotated[str, typer.Option(help="Column preset: generic or opendental.")] = "generic",
    column: Annotated[
        list[str] | None, typer.Option("--map", help="Map a file column: HEADER=field.")
    ] = None,
    skip_inactive: Annotated[bool, typer.Option(help="Skip inactive patients.")] = False,
    account_number: Annotated[str, typer.Option(help="opendental preset: patnum or chartnumber.")] = "patnum",
) -> None:
    """Create or update patients (and their PMS account numbers) from a CSV file."""
    from ledgerlink.patients.importer import import_patients

    async def work(db: Database, _: Settings) -> None:
        p, c = await practice_and_connection(db, practice, connection)
        with _progress("Importing patients", total=None) as advance:
            result = await import_patients(
                db,
                p,
                c,
                file,
                preset=preset,
                column_map=parse_pairs(column, "map") or None,
                skip_inactive=skip_inactive,
                account_number_source=account_number,
                progress=advance,
                actor=ACTOR,
            )
        out.print(
            f"Import {result.import_id}: {result.rows} rows: [green]{result.created} created[/], "
            f"{result.updated} updated, {result.skipped} skipped, "
            f"[{'red' if result.rejected_count else 'green'}]{result.rejected_count} rejected[/]"
        )
        for rejected in result.rejected[:50]:
            where = f"row {rejected.row}" + (f", column {rejected.column}" if rejected.column else "")
            out.print(f"  {where}: {rejected.reason}")
        if result.rejected_count > 50:
            out.print(f"  ... and {result.rejected_count - 50} more")
        if result.rejected_count:
            raise NeedsAttention

    run(work)


@patients_app.command("set-account")
def patients_set_account(
    patient_id: Annotated[str, typer.Argument(help="The payment platform's patient id.")],
    account_number: Annotated[str, typer.Argument(help="The patient's account number in the PMS.")],
    practice: PracticeOpt = None,
    connection: ConnectionOpt = None,
) -> None:
    """Fix a patient's PMS account number (then retry their failed writebacks)."""
    from ledgerlink.patients.accounts import set_account_number

    async def work(db: Database, _: Settings) -> None:
        _practice, c = await practice_and_connection(db, practice, connection)
        async with db.sessions.begin() as session:
            await set_account_number(session, c, patient_id, account_number, actor=ACTOR)
        out.print(f"patient {patient_id}: account number on {c.name} is now {account_number.strip()}")

    run(work)


# --- transactions ----------------------------------------------------------------------------------------


@transactions_app.command("import")
def transactions_import(
    file: Annotated[Path, typer.Argument(help="Processor export: .csv or .jsonl.")],
    practice: PracticeOpt = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: by extension).")
    ] = None,
    import_valid_rows: Annotated[
        bool, typer.Option(help="Import the valid rows even if some are bad.")
    ] = False,
) -> None:
    """Import a processor's transaction export. A file with bad rows imports nothing unless asked."""
    from ledgerlink.sources.transaction_import import import_transactions

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
        with _progress("Importing transactions", total=None) as advance:
            is_jsonl = (file_format or file.suffix.lstrip(".")).lower() in ("jsonl", "ndjson")
            result = await import_transactions(
                db,
                p,
                file,
                file_format=file_format,
                import_valid_rows=import_valid_rows,
                source="jsonl" if is_jsonl else "csv",
                progress=advance,
            )
        bad_rows = len({error.row for error in result.errors})
        for error in result.errors[:50]:
            err.print(f"  row {error.row}, column {error.column}: {error.reason}")
        if len(result.errors) > 50:
            err.print(f"  ... and {len(result.errors) - 50} more")
        if not result.applied:
            err.print(
                f"[bold red]{bad_rows} bad rows: nothing imported.[/] Fix the file, or pass "
                "--import-valid-rows to import the good rows."
            )
            raise NeedsAttention
        out.print(
            f"{result.rows} rows: [green]{result.imported} imported[/], {result.already_imported} already imported"
            + (f", [red]{bad_rows} bad rows skipped[/]" if result.errors else "")
        )
        if result.errors:
            raise NeedsAttention

    run(work)


# --- sync and reports ------------------------------------------------------------------------------------


@app.command()
def sync(
    practice: PracticeOpt = None,
    connection: ConnectionOpt = None,
    dry_run: Annotated[bool, typer.Option(help="Decide and report without writing anything.")] = False,
    since: Annotated[
        str | None, typer.Option(help="First local date the report covers (default yesterday).")
    ] = None,
    report_format: Annotated[
        ReportFormat, typer.Option("--format", help="table, csv or json.")
    ] = ReportFormat.table,
) -> None:
    """Write back everything due, then print the sync report."""

    async def work(db: Database, settings: Settings) -> SyncOutcome:
        p, c = await practice_and_connection(db, practice, connection)
        connector = open_connector(c.kind, c.settings, settings.data_dir)
        try:
            with _progress("Writing back" if not dry_run else "Deciding (dry run)", total=0) as advance:

                def on_progress(step: SyncProgress) -> None:
                    advance(step.done, step.total)

                outcome = await run_sync(
                    db,
                    c.id,
                    connector,
                    since=parse_date(since, "since"),
                    dry_run=dry_run,
                    progress=on_progress,
                )
        finally:
            await connector.close()
        title = f"Sync report: {p.name} / {c.name}" + (" (dry run: nothing written)" if dry_run else "")
        if outcome.run_id:
            title += f" / run {outcome.run_id}"
        _print_report(outcome.report, title, report_format, run_id=outcome.run_id, dry_run=dry_run)
        return outcome

    outcome = run(work)
    failed = (
        outcome.report.line(ReportCategory.IN_ERROR).count
        + outcome.report.line(ReportCategory.INVALID_PATIENT_ID).count
    )
    if failed and not dry_run:
        err.print(
            f"{failed} writebacks need attention: `ledgerlink writebacks list --status failed`, "
            "fix the cause, then `ledgerlink writebacks retry ID...` or `clear ID...`."
        )
        raise typer.Exit(5)


@app.command()
def report(
    practice: PracticeOpt = None,
    connection: ConnectionOpt = None,
    run_id: Annotated[int | None, typer.Option("--run", help="A sync run's id.")] = None,
    since: Annotated[str | None, typer.Option(help="First local date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Last local date (default: since, or today).")] = None,
    report_format: Annotated[
        ReportFormat, typer.Option("--format", help="table, csv or json.")
    ] = ReportFormat.table,
) -> None:
    """Print the sync report of a run (default: the latest) or of a date range."""

    async def work(db: Database, _: Settings) -> None:
        p, c = await practice_and_connection(db, practice, connection)
        async with db.sessions() as session:
            if since or until:
                start = parse_date(since, "since") or parse_date(until, "until")
                end = parse_date(until, "until") or start
                assert start is not None and end is not None
                if end < start:
                    raise InvalidInput("until is before since", field="until")
                result = await range_report(session, c.id, start, end)
                _print_report(
                    result,
                    f"Report {start} to {end}: {p.name} / {c.name}",
                    report_format,
                    since=start,
                    until=end,
                )
                return
            if run_id is None:
                from sqlalchemy import select

                latest = await session.scalar(
                    select(SyncRun.id)
                    .where(SyncRun.connection_id == c.id)
                    .order_by(SyncRun.id.desc())
                    .limit(1)
                )
                if latest is None:
                    raise InvalidInput("no sync has run yet on this connection; run `ledgerlink sync`")
                chosen = int(latest)
            else:
                chosen = run_id
                found = await session.get(SyncRun, chosen)
                if found is None or found.connection_id != c.id:
                    raise InvalidInput(f"no sync run {chosen} on this connection", field="run")
            result = await run_report(session, chosen)
            _print_report(
                result, f"Sync report: {p.name} / {c.name} / run {chosen}", report_format, run_id=chosen
            )

    run(work)


@app.command()
def runs(practice: PracticeOpt = None, connection: ConnectionOpt = None, limit: int = 20) -> None:
    """List recent sync runs."""

    async def work(db: Database, _: Settings) -> None:
        from sqlalchemy import select

        _practice, c = await practice_and_connection(db, practice, connection)
        async with db.sessions() as session:
            rows = await session.scalars(
                select(SyncRun).where(SyncRun.connection_id == c.id).order_by(SyncRun.id.desc()).limit(limit)
            )
            for r in rows:
                out.print(
                    f"{r.id}\t{r.started_at:%Y-%m-%d %H:%M:%S}Z\t{r.trigger}\t{r.status}\t{r.error or ''}"
                )

    run(work)


def _print_report(result: Any, title: str, report_format: ReportFormat, **meta: Any) -> None:
    if report_format is ReportFormat.csv:
        sys.stdout.write(report_csv(result))
    elif report_format is ReportFormat.json:
        sys.stdout.write(report_json(result, **meta) + "\n")
    else:
        out.print(report_table(result, title))


# --- writebacks ------------------------------------------------------------------------------------------


@writebacks_app.command("list")
def writebacks_list(
    practice: PracticeOpt = None,
    status: Annotated[
        str | None, typer.Option(help="pending, posted, failed, skipped, cleared, in_flight.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="First local date.")] = None,
    until: Annotated[str | None, typer.Option(help="Last local date.")] = None,
    limit: int = 200,
) -> None:
    """List writebacks with their Load Status and Load Error."""

    async def work(db: Database, _: Settings) -> None:
        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            rows = await list_writebacks(
                session,
                p.id,
                status=status,
                since=parse_date(since, "since"),
                until=parse_date(until, "until"),
                limit=limit,
            )
        out.print(writebacks_table(rows))

    run(work)


def _act(ids: list[int], practice: str | None, action: Callable[..., Awaitable[Any]]) -> None:
    async def work(db: Database, _: Settings) -> None:
        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            results = await action(session, p.id, ids, actor=ACTOR)
        bad = 0
        for result in results:
            mark = "[green]ok[/]" if result.ok else "[red]no[/]"
            out.print(f"{mark} {result.writeback_id}: {result.message}")
            bad += not result.ok
        if bad:
            raise NeedsAttention

    run(work)


@writebacks_app.command("retry")
def writebacks_retry(ids: list[int], practice: PracticeOpt = None) -> None:
    """Queue failed writebacks again (after fixing the cause); the next sync writes them."""
    _act(ids, practice, retry_writebacks)


@writebacks_app.command("clear")
def writebacks_clear(ids: list[int], practice: PracticeOpt = None) -> None:
    """Mark failed writebacks as reviewed and posted by hand; ledgerlink will not write them."""
    _act(ids, practice, clear_writebacks)


# --- demo ------------------------------------------------------------------------------------------------


@app.command()
def demo(
    practice: Annotated[str, typer.Option(help="Practice id of the demo.")] = "demo",
    keep: Annotated[
        bool, typer.Option(help="Keep an existing demo practice instead of starting afresh.")
    ] = False,
) -> None:
    """Set up a demo practice on the sandbox PMS, import a day of payments, sync, and show the report."""
    from ledgerlink.demo import run_demo

    async def work(db: Database, settings: Settings) -> None:
        await run_demo(db, settings, out, slug=practice, fresh=not keep, progress=_progress)

    run(work)


# --- helpers ---------------------------------------------------------------------------------------------


class _progress:  # lower-case: used like a function, `with _progress(...) as advance`
    """A Rich progress bar on stderr that accepts (done) or (done, total) updates; silent when not a TTY."""

    def __init__(self, label: str, total: int | None) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> Callable[..., None]:
        self.bar.start()

        def advance(done: int, total: int | None = None) -> None:
            if total is not None:
                self.bar.update(self.task, completed=done, total=total)
            else:
                self.bar.update(self.task, completed=done)

        return advance

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


@token_app.command("create")
def token_create(
    name: Annotated[
        str, typer.Option("--name", "-n", help="What the token is for, e.g. 'payment platform'.")
    ],
    practice: PracticeOpt = None,
) -> None:
    """Create a staff API token for a practice. It is shown once: store it now."""

    async def work(db: Database, _: Settings) -> None:
        from ledgerlink.tokens import issue_token

        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            issued = await issue_token(session, p, name, actor=ACTOR)
        out.print(issued.plain, highlight=False)
        err.print(f"API token {issued.token.prefix} for {p.slug}: shown once, keep it somewhere safe")

    run(work)


@token_app.command("list")
def token_list(practice: PracticeOpt = None) -> None:
    """List a practice's tokens (their public prefix, never the secret)."""

    async def work(db: Database, _: Settings) -> None:
        from sqlalchemy import select

        from ledgerlink.store.models import ApiToken

        async with db.sessions() as session:
            p = await resolve_practice(session, practice)
            tokens = await session.scalars(select(ApiToken).where(ApiToken.practice_id == p.id))
            for t in tokens:
                state = f"revoked {t.revoked_at:%Y-%m-%d}" if t.revoked_at else "active"
                out.print(f"{t.prefix}\t{t.name}\tcreated {t.created_at:%Y-%m-%d}\t{state}")

    run(work)


@token_app.command("revoke")
def token_revoke(
    prefix: Annotated[str, typer.Argument(help="The token's prefix (the part after ll_).")],
    practice: PracticeOpt = None,
) -> None:
    """Revoke a token at once: requests made with it are refused from now on."""

    async def work(db: Database, _: Settings) -> None:
        from sqlalchemy import select

        from ledgerlink.store.models import ApiToken
        from ledgerlink.tokens import revoke_token

        async with db.sessions.begin() as session:
            p = await resolve_practice(session, practice)
            token = await session.scalar(
                select(ApiToken).where(ApiToken.practice_id == p.id, ApiToken.prefix == prefix.strip())
            )
            if token is None:
                raise NotFound(
                    f"{p.slug} has no token {prefix!r} (see: ledgerlink token list)", field="prefix"
                )
            await revoke_token(session, token, actor=ACTOR)
        out.print(f"revoked token {prefix}")

    run(work)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
) -> None:
    """Serve the HTTP API (docs/api.md; OpenAPI at /openapi.json, browsable at /docs). A new data
    directory is initialised on start."""
    import uvicorn

    from ledgerlink.api.app import create_app
    from ledgerlink.serving import uvicorn_config

    settings = get_settings()
    configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    err.print(f"ledgerlink API on http://{host}:{port}/v1 (OpenAPI: /openapi.json)")
    app = create_app(settings.resolved_database_url, settings.data_dir)
    uvicorn.Server(uvicorn_config(app, host, port, log_level="warning")).run()


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, help="Connections synced at once by this process.")
    ] = 200,
    poll_interval: Annotated[
        float | None,
        typer.Option(
            min=0.01, help="Seconds between full scans for due work (default 0.2 SQLite, 5 PostgreSQL)."
        ),
    ] = None,
    grace: Annotated[float, typer.Option(min=0, help="Seconds running syncs get to end on SIGTERM.")] = 30.0,
    once: Annotated[
        bool, typer.Option(help="Sync everything due now, then exit (for cron or a test).")
    ] = False,
) -> None:
    """Run instant and daily writeback until SIGTERM. Start as many as you like, on as many machines, against
    one PostgreSQL (docs/deployment.md); on SQLite run one."""
    from ledgerlink.worker.runner import Worker, WorkerOptions

    options = WorkerOptions(concurrency=concurrency, poll_interval=poll_interval, grace=grace, once=once)

    async def work(db: Database, settings: Settings) -> None:
        if not once:
            store = "SQLite (polling)" if db.is_sqlite else "PostgreSQL (LISTEN/NOTIFY)"
            err.print(f"ledgerlink worker: {store}, {concurrency} connections at once; SIGTERM to stop")
        stats = await Worker(db, settings.data_dir, options, settings=settings).run()
        err.print(
            f"worker stopped: {stats.runs} runs, {stats.recorded} writebacks recorded, "
            f"{stats.failures} runs failed"
        )

    run(work)


@app.command("od-peer")
def od_peer(
    database_url: Annotated[
        str | None,
        typer.Option(help="Open Dental database: sqlite:///PATH or mysql+pymysql://USER@HOST/DB."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (Open Dental's local API uses 30222).")] = 30222,
    rate: Annotated[
        float | None, typer.Option(help="Requests per second allowed per customer key (429 beyond).")
    ] = None,
) -> None:
    """Serve the Open Dental API peer: Open Dental's REST API over Open Dental's schema, for trying
    ledgerlink (and integrations) without an office. Any `ODFHIR dev/customer` key is accepted."""
    from ledgerlink.opendental.peer.config import PeerConfig
    from ledgerlink.opendental.peer.server import serve

    settings = get_settings()
    url = database_url or f"sqlite:///{settings.data_dir / 'od-peer.db'}"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = PeerConfig(database_url=url, default_requests_per_second=rate)
    err.print(f"Open Dental peer on http://{host}:{port}/api/v1 (database {url.split('@')[-1]})")
    serve(config, host=host, port=port, log_level="warning")


def main() -> None:
    app()
