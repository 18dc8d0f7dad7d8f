"""The sandbox ledger: Open Dental's tables and rules, cut down to what a payment writeback touches.

Kept close to Open Dental (research/opendental.md) so that the Open Dental peer can grow out of it:
- patients carry PatNum and an optional ChartNumber (not unique), PatStatus 4 means Deleted;
- a payment is one `payment` row plus splits that sum to PayAmt, each split's DatePay equal to PayDate;
- refunds and reversals are new negative payments, the original is never edited;
- offices see tasks (in a task list) and commlogs (notes on the patient).
One deliberate difference: money is stored as integer cents, where Open Dental stores doubles.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TypeVar

from ledgerlink.clock import utcnow

_T = TypeVar("_T")

PAT_STATUS_DELETED = 4
PAYMENT_SOURCE_API = 13
DEFINITION_CATEGORY_PAYMENT_TYPE = 10
TASK_OBJECT_PATIENT = 1

DEFAULT_PAYMENT_TYPES = (
    "Credit Card",
    "Payment Plan",
    "Insurance",
    "Membership",
    "Collection",
    "Online Payment",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS definition (
    DefNum INTEGER PRIMARY KEY, Category INTEGER NOT NULL, ItemName TEXT NOT NULL, IsHidden INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS provider (ProvNum INTEGER PRIMARY KEY, Abbr TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS patient (
    PatNum INTEGER PRIMARY KEY, LName TEXT NOT NULL DEFAULT '', FName TEXT NOT NULL DEFAULT '',
    Birthdate TEXT NOT NULL DEFAULT '0001-01-01', ChartNumber TEXT NOT NULL DEFAULT '',
    PatStatus INTEGER NOT NULL DEFAULT 0, Guarantor INTEGER NOT NULL DEFAULT 0,
    PriProv INTEGER NOT NULL DEFAULT 1, ClinicNum INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ix_patient_chart ON patient (ChartNumber);
CREATE TABLE IF NOT EXISTS payment (
    PayNum INTEGER PRIMARY KEY, PayType INTEGER NOT NULL, PayDate TEXT NOT NULL, PayAmt INTEGER NOT NULL,
    PayNote TEXT NOT NULL DEFAULT '', PatNum INTEGER NOT NULL, ClinicNum INTEGER NOT NULL DEFAULT 0,
    DateEntry TEXT NOT NULL, PaymentSource INTEGER NOT NULL DEFAULT 13, RefundOf INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ix_payment_pat ON payment (PatNum, DateEntry);
CREATE TABLE IF NOT EXISTS paysplit (
    SplitNum INTEGER PRIMARY KEY, SplitAmt INTEGER NOT NULL, PatNum INTEGER NOT NULL,
    PayNum INTEGER NOT NULL REFERENCES payment (PayNum), ProvNum INTEGER NOT NULL, DatePay TEXT NOT NULL,
    ClinicNum INTEGER NOT NULL DEFAULT 0, UnearnedType INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS ix_paysplit_pay ON paysplit (PayNum);
CREATE TABLE IF NOT EXISTS adjustment (
    AdjNum INTEGER PRIMARY KEY, AdjAmt INTEGER NOT NULL, PatNum INTEGER NOT NULL, AdjType INTEGER NOT NULL,
    AdjDate TEXT NOT NULL, AdjNote TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS tasklist (TaskListNum INTEGER PRIMARY KEY, Descript TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS task (
    TaskNum INTEGER PRIMARY KEY, TaskListNum INTEGER NOT NULL, KeyNum INTEGER NOT NULL DEFAULT 0,
    ObjectType INTEGER NOT NULL DEFAULT 0, Descript TEXT NOT NULL, TaskStatus INTEGER NOT NULL DEFAULT 0,
    DateTimeEntry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commlog (
    CommlogNum INTEGER PRIMARY KEY, PatNum INTEGER NOT NULL, CommDateTime TEXT NOT NULL, Note TEXT NOT NULL,
    Mode_ INTEGER NOT NULL DEFAULT 0, CommSource INTEGER NOT NULL DEFAULT 7);
"""


class LedgerRuleViolation(Exception):
    """An entry Open Dental itself would refuse (no splits, splits not summing, unknown patient...)."""


@dataclass(frozen=True, slots=True)
class LedgerPatient:
    pat_num: int
    last_name: str
    first_name: str
    birth_date: date | None
    chart_number: str
    status: int


@dataclass(frozen=True, slots=True)
class LedgerPayment:
    pay_num: int
    pat_num: int
    pay_type: int
    pay_date: date
    amount_cents: int
    note: str
    refund_of: int


@dataclass(frozen=True, slots=True)
class NewPayment:
    """A payment to insert: one `payment` row and its single split."""

    pat_num: int
    amount_cents: int
    pay_date: date
    pay_type: int
    note: str
    refund_of: int = 0


class SandboxLedger:
    """One office's ledger in a SQLite file. Synchronous: callers run it where blocking is acceptable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        # 64 MB of page cache instead of 2: payments land on random patients, so with a large ledger every
        # insert into the per-patient index would otherwise read its page back from the file.
        self._db.execute("PRAGMA cache_size=-65536")
        self._db.executescript(_SCHEMA)
        self._seed_definitions()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _seed_definitions(self) -> None:
        with self.transaction() as db:
            if db.execute("SELECT COUNT(*) FROM definition WHERE Category = 10").fetchone()[0]:
                return
            db.executemany(
                "INSERT INTO definition (Category, ItemName) VALUES (?, ?)",
                [(DEFINITION_CATEGORY_PAYMENT_TYPE, name) for name in DEFAULT_PAYMENT_TYPES],
            )
            db.execute("INSERT OR IGNORE INTO provider (ProvNum, Abbr) VALUES (1, 'DOC1')")
            db.execute("INSERT OR IGNORE INTO tasklist (TaskListNum, Descript) VALUES (1, 'Payments')")

    # --- patients -------------------------------------------------------------------------------------

    def add_patient(
        self,
        last_name: str,
        first_name: str,
        *,
        birth_date: date | None = None,
        chart_number: str = "",
        status: int = 0,
        pat_num: int | None = None,
    ) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO patient (PatNum, LName, FName, Birthdate, ChartNumber, PatStatus) VALUES (?,?,?,?,?,?)",
                (
                    pat_num,
                    last_name,
                    first_name,
                    (birth_date or date(1, 1, 1)).isoformat(),
                    chart_number,
                    status,
                ),
            )
            new = int(cursor.lastrowid or 0)
            db.execute("UPDATE patient SET Guarantor = PatNum WHERE PatNum = ?", (new,))
            return new

    def set_patient_status(self, pat_num: int, status: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE patient SET PatStatus = ? WHERE PatNum = ?", (status, pat_num))

    def resolve_account(self, account_number: str, by: str) -> tuple[int | None, str]:
        """PatNum for a statement account number, or None and the reason it matches no single patient."""
        number = account_number.strip()
        if by == "chartnumber":
            rows = self._db.execute(
                "SELECT PatNum FROM patient WHERE ChartNumber = ? AND PatStatus != ?",
                (number, PAT_STATUS_DELETED),
            ).fetchall()
            if not rows:
                return None, f"no patient has ChartNumber {number!r}"
            if len(rows) > 1:
                return None, f"ChartNumber {number!r} belongs to {len(rows)} patients"
            return int(rows[0][0]), ""
        if not number.isdigit():
            return None, f"{number!r} is not a PatNum (PatNums are numbers)"
        row = self._db.execute("SELECT PatStatus FROM patient WHERE PatNum = ?", (int(number),)).fetchone()
        if row is None:
            return None, f"no patient has PatNum {number}"
        if row[0] == PAT_STATUS_DELETED:
            return None, f"patient {number} is deleted in the PMS"
        return int(number), ""

    def resolve_accounts(self, account_numbers: Sequence[str], by: str) -> dict[str, tuple[int | None, str]]:
        """`resolve_account` for many account numbers at once (one query per chunk instead of one each)."""
        numbers = {n: n.strip() for n in account_numbers}
        found: dict[str, list[tuple[int, int]]] = {}  # stripped number -> [(PatNum, PatStatus)]
        if by == "chartnumber":
            sql = "SELECT ChartNumber, PatNum, PatStatus FROM patient WHERE PatStatus != ? AND ChartNumber IN ({})"
            keys = sorted(set(numbers.values()))
            for chunk in _chunked(keys):
                query = sql.format(",".join("?" * len(chunk)))
                for chart, pat_num, status in self._db.execute(query, (PAT_STATUS_DELETED, *chunk)):
                    found.setdefault(chart, []).append((int(pat_num), int(status)))
        else:
            keys = sorted({n for n in numbers.values() if n.isdigit()})
            sql = "SELECT PatNum, PatStatus FROM patient WHERE PatNum IN ({})"
            for chunk in _chunked(keys):
                query = sql.format(",".join("?" * len(chunk)))
                for pat_num, status in self._db.execute(query, [int(k) for k in chunk]):
                    found.setdefault(str(pat_num), []).append((int(pat_num), int(status)))
        return {
            raw: _account_match(number, by, found.get(_pat_num_key(number, by), []))
            for raw, number in numbers.items()
        }

    def patient(self, pat_num: int) -> LedgerPatient | None:
        row = self._db.execute(
            "SELECT PatNum, LName, FName, Birthdate, ChartNumber, PatStatus FROM patient WHERE PatNum = ?",
            (pat_num,),
        ).fetchone()
        if row is None:
            return None
        birth = date.fromisoformat(row[3])
        return LedgerPatient(row[0], row[1], row[2], None if birth.year == 1 else birth, row[4], row[5])

    # --- payments -------------------------------------------------------------------------------------

    def payment_type_num(self, name: str) -> int:
        row = self._db.execute(
            "SELECT DefNum FROM definition WHERE Category = 10 AND ItemName = ? AND IsHidden = 0", (name,)
        ).fetchone()
        if row is None:
            raise LedgerRuleViolation(f"payment type {name!r} is not defined in the PMS")
        return int(row[0])

    def insert_payment(
        self,
        db: sqlite3.Connection,
        pat_num: int,
        amount_cents: int,
        pay_date: date,
        pay_type: int,
        note: str,
        refund_of: int = 0,
    ) -> int:
        """Insert a payment and its single split inside the caller's transaction (Open Dental's API path)."""
        payment = NewPayment(pat_num, amount_cents, pay_date, pay_type, note, refund_of)
        return self.insert_payments(db, [payment])[0]

    def insert_payments(self, db: sqlite3.Connection, payments: Sequence[NewPayment]) -> list[int]:
        """Insert payments, each with its single split, inside the caller's transaction; their PayNums in order.

        Nothing is inserted when one of them breaks a rule. PayNums are assigned here the way SQLite would
        (the highest plus one; the caller's transaction holds the write lock), so a batch takes two
        executemany calls instead of three statements per payment.
        """
        providers = self._providers(db, {p.pat_num for p in payments})
        for p in payments:
            if p.amount_cents == 0:
                raise LedgerRuleViolation("a payment needs a non-zero amount")
            if p.pat_num not in providers:
                raise LedgerRuleViolation(f"no patient has PatNum {p.pat_num}")
        first = int(db.execute("SELECT COALESCE(MAX(PayNum), 0) + 1 FROM payment").fetchone()[0])
        pay_nums = list(range(first, first + len(payments)))
        entered = utcnow().date().isoformat()
        days = [p.pay_date.isoformat() for p in payments]
        db.executemany(
            "INSERT INTO payment (PayNum, PayType, PayDate, PayAmt, PayNote, PatNum, DateEntry, RefundOf)"
            " VALUES (?,?,?,?,?,?,?,?)",
            [
                (num, p.pay_type, day, p.amount_cents, p.note, p.pat_num, entered, p.refund_of)
                for num, p, day in zip(pay_nums, payments, days, strict=True)
            ],
        )
        db.executemany(
            "INSERT INTO paysplit (SplitAmt, PatNum, PayNum, ProvNum, DatePay) VALUES (?,?,?,?,?)",
            [
                (p.amount_cents, p.pat_num, num, providers[p.pat_num], day)
                for num, p, day in zip(pay_nums, payments, days, strict=True)
            ],
        )
        return pay_nums

    def _providers(self, db: sqlite3.Connection, pat_nums: set[int]) -> dict[int, int]:
        """Each existing patient's primary provider (the provider a split is credited to)."""
        providers: dict[int, int] = {}
        for chunk in _chunked(sorted(pat_nums)):
            query = f"SELECT PatNum, PriProv FROM patient WHERE PatNum IN ({','.join('?' * len(chunk))})"
            providers.update((int(n), int(prov)) for n, prov in db.execute(query, chunk))
        return providers

    def insert_adjustment(
        self, db: sqlite3.Connection, pat_num: int, amount_cents: int, day: date, note: str
    ) -> int:
        cursor = db.execute(
            "INSERT INTO adjustment (AdjAmt, PatNum, AdjType, AdjDate, AdjNote) VALUES (?,?,0,?,?)",
            (amount_cents, pat_num, day.isoformat(), note),
        )
        return int(cursor.lastrowid or 0)

    def payment(self, pay_num: int) -> LedgerPayment | None:
        row = self._db.execute(
            "SELECT PayNum, PatNum, PayType, PayDate, PayAmt, PayNote, RefundOf FROM payment WHERE PayNum = ?",
            (pay_num,),
        ).fetchone()
        return None if row is None else _payment(row)

    def find_payment_by_marker(self, pat_num: int, marker: str) -> LedgerPayment | None:
        """The payment whose note carries `marker`, searched the way the API allows: per patient."""
        row = self._db.execute(
            "SELECT PayNum, PatNum, PayType, PayDate, PayAmt, PayNote, RefundOf FROM payment"
            " WHERE PatNum = ? AND instr(PayNote, ?) > 0 ORDER BY PayNum LIMIT 1",
            (pat_num, marker),
        ).fetchone()
        return None if row is None else _payment(row)

    def payments(self) -> list[LedgerPayment]:
        rows = self._db.execute(
            "SELECT PayNum, PatNum, PayType, PayDate, PayAmt, PayNote, RefundOf FROM payment ORDER BY PayNum"
        ).fetchall()
        return [_payment(row) for row in rows]

    def balance_paid(self, pat_num: int) -> int:
        """Net payments credited to a patient, from the splits (only splits move balances in Open Dental)."""
        row = self._db.execute("SELECT COALESCE(SUM(SplitAmt), 0) FROM paysplit WHERE PatNum = ?", (pat_num,))
        return int(row.fetchone()[0])

    def total_paid(self) -> int:
        return int(self._db.execute("SELECT COALESCE(SUM(SplitAmt), 0) FROM paysplit").fetchone()[0])

    def count(self, table: str) -> int:
        if table not in ("payment", "paysplit", "adjustment", "task", "commlog", "patient"):
            raise ValueError(table)
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # --- alerts ---------------------------------------------------------------------------------------

    def add_task(self, descript: str, pat_num: int | None, task_list: int = 1) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO task (TaskListNum, KeyNum, ObjectType, Descript, DateTimeEntry) VALUES (?,?,?,?,?)",
                (task_list, pat_num or 0, TASK_OBJECT_PATIENT if pat_num else 0, descript, _now()),
            )
            return int(cursor.lastrowid or 0)

    def add_commlog(self, pat_num: int, note: str) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO commlog (PatNum, CommDateTime, Note) VALUES (?,?,?)", (pat_num, _now(), note)
            )
            return int(cursor.lastrowid or 0)

    def tasks(self) -> list[tuple[int, int, str]]:
        return [
            tuple(r) for r in self._db.execute("SELECT TaskNum, KeyNum, Descript FROM task ORDER BY TaskNum")
        ]

    def commlogs(self) -> list[tuple[int, int, str]]:
        return [
            tuple(r)
            for r in self._db.execute("SELECT CommlogNum, PatNum, Note FROM commlog ORDER BY CommlogNum")
        ]

    # --- integrity ------------------------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """Open Dental's own database-maintenance checks for payments (research §4.1-4.4)."""
        checks = {
            "payment without splits": "SELECT PayNum FROM payment p WHERE NOT EXISTS "
            "(SELECT 1 FROM paysplit s WHERE s.PayNum = p.PayNum)",
            "splits not summing to the payment": "SELECT p.PayNum FROM payment p JOIN paysplit s ON s.PayNum = p.PayNum "
            "GROUP BY p.PayNum HAVING SUM(s.SplitAmt) != MAX(p.PayAmt)",
            "split without payment": "SELECT SplitNum FROM paysplit s WHERE NOT EXISTS "
            "(SELECT 1 FROM payment p WHERE p.PayNum = s.PayNum)",
            "DatePay differs from PayDate": "SELECT SplitNum FROM paysplit s JOIN payment p ON p.PayNum = s.PayNum "
            "WHERE s.DatePay != p.PayDate",
        }
        problems = []
        for what, sql in checks.items():
            ids = [row[0] for row in self._db.execute(sql).fetchall()]
            if ids:
                problems.append(f"{what}: {ids[:10]}")
        return problems


def _chunked(values: Sequence[_T], size: int = 500) -> Iterator[Sequence[_T]]:
    """Slices small enough for one `IN (...)` list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _pat_num_key(number: str, by: str) -> str:
    return number if by == "chartnumber" or not number.isdigit() else str(int(number))


def _account_match(number: str, by: str, matches: list[tuple[int, int]]) -> tuple[int | None, str]:
    """The outcome `resolve_account` gives for `number`, from the patients found for it."""
    if by == "chartnumber":
        if not matches:
            return None, f"no patient has ChartNumber {number!r}"
        if len(matches) > 1:
            return None, f"ChartNumber {number!r} belongs to {len(matches)} patients"
        return matches[0][0], ""
    if not number.isdigit():
        return None, f"{number!r} is not a PatNum (PatNums are numbers)"
    if not matches:
        return None, f"no patient has PatNum {number}"
    if matches[0][1] == PAT_STATUS_DELETED:
        return None, f"patient {number} is deleted in the PMS"
    return int(number), ""


def _payment(row: tuple[int, int, int, str, int, str, int]) -> LedgerPayment:
    return LedgerPayment(row[0], row[1], row[2], date.fromisoformat(row[3]), row[4], row[5], row[6])


def _now() -> str:
    return datetime.now(utcnow().tzinfo).strftime("%Y-%m-%d %H:%M:%S")
