"""`ledgerlink demo`: a practice on the sandbox PMS, a patient list, a realistic day of payments, one sync.

Everything goes through the same services a real office uses (patient CSV import, transaction import,
sync), so the demo also shows what those files look like. The data is generated from a fixed seed; the
day is the practice's yesterday, so the default report window covers it.
"""

from __future__ import annotations

import csv
import random
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console

from ledgerlink.clock import utcnow
from ledgerlink.connectors.registry import open_connector
from ledgerlink.connectors.sandbox import open_sandbox_office
from ledgerlink.engine.sync import SyncProgress, run_sync
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.practices import add_connection, create_practice, delete_practice, find_practice
from ledgerlink.settings import Settings
from ledgerlink.store.db import Database

TIMEZONE = "America/Chicago"
FIRST_NAMES = (
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Emma",
    "Farah",
    "Gus",
    "Hana",
    "Ivan",
    "Jade",
    "Kofi",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tess",
)
LAST_NAMES = (
    "Adams",
    "Brooks",
    "Chen",
    "Diaz",
    "Evans",
    "Foster",
    "Garcia",
    "Hughes",
    "Ito",
    "Jones",
    "Khan",
    "Lopez",
    "Miller",
    "Novak",
    "Okafor",
    "Patel",
    "Quinn",
    "Reyes",
    "Singh",
    "Turner",
)
PATIENTS = 40
MISSING_NUMBER = (37, 38, 39)  # patients whose account number was never entered
WRONG_NUMBER = {40: "9040"}  # a typo: no such PatNum in the PMS

ProgressFactory = Callable[[str, int | None], AbstractContextManager[Callable[..., None]]]


@dataclass(frozen=True, slots=True)
class DemoFiles:
    patients_csv: Path
    transactions_csv: Path


async def run_demo(
    db: Database, settings: Settings, out: Console, *, slug: str, fresh: bool, progress: ProgressFactory
) -> None:
    from ledgerlink.patients.importer import import_patients
    from ledgerlink.sources.transaction_import import import_transactions

    demo_dir = settings.data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    sandbox_file = f"{slug}-pms.db"
    async with db.sessions.begin() as session:
        existing = await find_practice(session, slug)
        if existing is not None:
            if not fresh:
                out.print(
                    f"Practice {slug!r} exists; run `ledgerlink demo` without --keep to start it afresh."
                )
                return
            await delete_practice(session, existing)
    (settings.sandbox_dir / sandbox_file).unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (settings.sandbox_dir / f"{sandbox_file}{suffix}").unlink(missing_ok=True)

    async with db.sessions.begin() as session:
        practice = await create_practice(
            session,
            slug=slug,
            name="Bright Smile Dental",
            timezone=TIMEZONE,
            patient_capacity=1000,
            actor="demo",
        )
        connection = await add_connection(
            session,
            practice,
            name="pms",
            kind="sandbox",
            settings={"path": sandbox_file, "timezone": TIMEZONE},
            type_handling={"insurance": "manual"},
            actor="demo",
        )
    out.print(
        f"[bold]1.[/] Practice [bold]{practice.name}[/] ({slug}, {TIMEZONE}) with a sandbox PMS "
        f"at {settings.sandbox_dir / sandbox_file}; insurance payments are set to manual posting."
    )
    passwords = await add_dashboard_users(db, slug)

    office = open_sandbox_office(f"sqlite:///{settings.sandbox_dir / sandbox_file}", TIMEZONE)
    try:
        seed_sandbox(office)
    finally:
        office.close()
    day = utcnow().astimezone(ZoneInfo(TIMEZONE)).date() - timedelta(days=1)
    files = write_demo_files(demo_dir, day)

    with progress("Importing patients", None) as advance:
        patients = await import_patients(
            db, practice, connection, files.patients_csv, preset="generic", progress=advance
        )
    out.print(
        f"[bold]2.[/] Patients from {files.patients_csv}: {patients.created} created, "
        f"{patients.rejected_count} rejected"
        + "".join(f"\n     row {r.row}, column {r.column}: {r.reason}" for r in patients.rejected[:5])
    )
    with progress("Importing transactions", None) as advance:
        txns = await import_transactions(db, practice, files.transactions_csv, progress=advance)
    out.print(f"[bold]3.[/] Transactions of {day} from {files.transactions_csv}: {txns.imported} imported")

    connector = open_connector(connection.kind, connection.settings, settings.data_dir)
    try:
        with progress("Writing back", 0) as advance:

            def on_progress(step: SyncProgress) -> None:
                advance(step.done, step.total)

            outcome = await run_sync(db, connection.id, connector, progress=on_progress)
    finally:
        await connector.close()

    from ledgerlink.cli.render import report_table

    out.print("[bold]4.[/] Synced to the sandbox PMS:")
    out.print(report_table(outcome.report, f"Sync report: {practice.name} / run {outcome.run_id}"))
    exe = _command_name()
    out.print(
        f"\n[bold]The dashboard[/]: run `{exe} serve` and open http://127.0.0.1:8080/ ; practice [bold]{slug}[/],\n"
        + "".join(
            f"  user [bold]{user}[/] password [bold]{password}[/]\n" for user, password in passwords.items()
        )
        + "  (shown once; `ledgerlink users set-password` sets another)"
    )
    out.print(
        "\n[bold]Try next[/] (the data lives in "
        f"{settings.data_dir}; set LEDGERLINK_DATA_DIR to use another place):\n"
        f"  {exe} writebacks list --status failed       # what failed, and why\n"
        f"  {exe} patients set-account P-1037 37        # enter a missing account number\n"
        f"  {exe} patients set-account P-1040 40        # fix a mistyped one\n"
        f"  {exe} writebacks retry ID ID ...            # queue those patients' failed writebacks again\n"
        f"  {exe} sync                                  # posts them; the rest shows as Already Processed\n"
        f"  {exe} writebacks clear ID                   # or: mark one as posted by hand\n"
        f"  {exe} report --format csv                   # the last report, for a spreadsheet\n"
    )


async def add_dashboard_users(db: Database, slug: str) -> dict[str, str]:
    """An administrator and a front-desk user with fresh random passwords, returned to be shown once."""
    import secrets

    from ledgerlink.passwords import set_password
    from ledgerlink.users import IMPORT_PATIENTS, PRIVILEGES, RETRY_CLEAR, RUN_SYNC, VIEW_REPORTS, create_user

    people = {
        "admin": ("Practice Administrator", PRIVILEGES),
        "frontdesk": ("Front Desk", (VIEW_REPORTS, RUN_SYNC, RETRY_CLEAR, IMPORT_PATIENTS)),
    }
    passwords = {}
    async with db.sessions.begin() as session:
        practice = await find_practice(session, slug)
        assert practice is not None
        for username, (name, privileges) in people.items():
            user = await create_user(
                session, practice, username, actor="demo", display_name=name, privileges=privileges
            )
            passwords[username] = secrets.token_urlsafe(9)
            await set_password(session, user, passwords[username], actor="demo")
    return passwords


def _command_name() -> str:
    argv0 = sys.argv[0] if sys.argv else "ledgerlink"
    return argv0 if "/" in argv0 and Path(argv0).name == "ledgerlink" else "ledgerlink"


def seed_sandbox(office: OpenDentalOffice) -> None:
    """The office's PMS: patients 1..40 (PatNums of a fresh office), as the patient list will reference them."""
    rng = random.Random(7)
    for n in range(1, PATIENTS + 1):
        pat_num = office.add_patient(
            LAST_NAMES[(n - 1) % len(LAST_NAMES)],
            FIRST_NAMES[(n * 7) % len(FIRST_NAMES)],
            birthdate=date(1950 + rng.randrange(60), rng.randrange(1, 13), rng.randrange(1, 28)),
        )
        if pat_num != n:
            raise RuntimeError(f"the demo's sandbox office is not fresh: patient {n} got PatNum {pat_num}")


def write_demo_files(directory: Path, day: date) -> DemoFiles:
    patients_csv = directory / "patients.csv"
    with patients_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["patient_id", "first_name", "last_name", "birth_date", "email", "account_number", "status"]
        )
        rng = random.Random(7)
        for n in range(1, PATIENTS + 1):
            first = FIRST_NAMES[(n * 7) % len(FIRST_NAMES)]
            last = LAST_NAMES[(n - 1) % len(LAST_NAMES)]
            birth = date(1950 + rng.randrange(60), rng.randrange(1, 13), rng.randrange(1, 28))
            number = "" if n in MISSING_NUMBER else WRONG_NUMBER.get(n, str(n))
            writer.writerow(
                [
                    f"P-{1000 + n}",
                    first,
                    last,
                    birth.isoformat(),
                    f"{first.lower()}{n}@example.com",
                    number,
                    "active",
                ]
            )
        writer.writerow(["P-1099", "Walk", "In", "31/02/1990", "", "", "active"])  # a bad date: rejected

    transactions_csv = directory / "transactions.csv"
    with transactions_csv.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "reference",
                "time",
                "kind",
                "payment_type",
                "gross",
                "fee",
                "patient_id",
                "original_reference",
                "card_brand",
                "card_last4",
                "description",
            ]
        )
        for row in demo_transactions(day):
            writer.writerow(row)
    return DemoFiles(patients_csv, transactions_csv)


def demo_transactions(day: date) -> list[list[str]]:
    """A day at a busy practice: every kind and payment type, including the awkward cases."""
    rng = random.Random(2026)
    rows: list[list[str]] = []
    clock = datetime.combine(day, time(8, 0))
    types = ["terminal"] * 6 + ["online"] * 2 + ["collection", "insurance", "payment_plan", "membership"]
    brands = ("visa", "mastercard", "amex", "discover")

    def stamp() -> str:
        nonlocal clock
        clock += timedelta(minutes=rng.randrange(4, 15))
        return clock.isoformat(timespec="seconds")

    def fee(gross: int) -> int:
        return round(gross * 29 / 1000) + 30

    def money(cents: int) -> str:
        return f"{cents // 100}.{cents % 100:02d}"

    # A sale from last week, posted then; today it comes back as a chargeback.
    week_ago = datetime.combine(day - timedelta(days=6), time(10, 30)).isoformat(timespec="seconds")
    rows.append(
        [
            "ch_demo_0001",
            week_ago,
            "sale",
            "terminal",
            "185.00",
            money(fee(18500)),
            "P-1005",
            "",
            "visa",
            "4242",
            "Crown seat",
        ]
    )
    sales: list[tuple[str, int, str]] = []
    for n in range(2, 46):
        ptype = types[n % len(types)]
        patient = f"P-{1000 + 1 + (n * 11) % PATIENTS}"
        gross = rng.choice((2500, 4000, 7500, 9900, 12000, 15000, 22500, 35000))
        ref = f"ch_demo_{n:04d}"
        kind = "decline" if n % 13 == 0 else "sale"
        brand = rng.choice(brands)
        rows.append(
            [
                ref,
                stamp(),
                kind,
                ptype,
                money(gross),
                money(fee(gross)) if kind == "sale" else "0.00",
                patient,
                "",
                brand,
                f"{rng.randrange(10000):04d}",
                "Visit payment",
            ]
        )
        if kind == "sale":
            sales.append((ref, gross, patient))
    refund_full, refund_partial, voided = sales[3], sales[8], sales[14]
    rows.append(
        [
            f"re_demo_{refund_full[0][-4:]}",
            stamp(),
            "refund",
            "terminal",
            money(refund_full[1]),
            "0.00",
            refund_full[2],
            refund_full[0],
            "",
            "",
            "Refund: treatment cancelled",
        ]
    )
    rows.append(
        [
            f"re_demo_{refund_partial[0][-4:]}",
            stamp(),
            "refund",
            "terminal",
            money(refund_partial[1] // 2),
            "0.00",
            refund_partial[2],
            refund_partial[0],
            "",
            "",
            "Partial refund: insurance paid part",
        ]
    )
    rows.append(
        [
            f"vo_demo_{voided[0][-4:]}",
            stamp(),
            "void",
            "terminal",
            money(voided[1]),
            "0.00",
            voided[2],
            voided[0],
            "",
            "",
            "Keyed twice: voided",
        ]
    )
    rows.append(
        [
            "dp_demo_0001",
            stamp(),
            "chargeback",
            "terminal",
            "185.00",
            "15.00",
            "P-1005",
            "ch_demo_0001",
            "",
            "",
            "Dispute lost",
        ]
    )
    rows.append(
        [
            "re_demo_9999",
            stamp(),
            "refund",
            "online",
            "60.00",
            "0.00",
            "P-1012",
            "ch_legacy_2024_881",
            "",
            "",
            "Refund of a payment from before ledgerlink",
        ]
    )
    return rows
