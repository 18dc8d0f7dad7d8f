"""Open Dental's behaviour for the writes ledgerlink makes, on an Open Dental database (SQLite or MariaDB).

Every method mirrors what Open Dental's own code does (see ../shared/research/opendental.md, sections 1-4
and 9, and docs/connectors/opendental-office.md for the method-by-method sources), so that a test that
passes against it says something about a real office. Money crosses this interface as `Decimal` dollars
with two places (Open Dental stores `double`); dates are `date`.
Errors Open Dental's API answers with 400 / 404 are raised as `OdBadRequest` / `OdNotFound` carrying
Open Dental's message, so the peer can serve them unchanged and the in-process users can map them.

The same class is the sandbox PMS (in process, SQLite), the store behind the Open Dental API peer
(opendental/peer/) and the unsafe direct-database connector mode, so it must be safe to share between
threads: every public method runs in its own connection and transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal
from importlib import resources
from operator import itemgetter
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Row, make_url

from ledgerlink.clock import utcnow
from ledgerlink.opendental import tables as t
from ledgerlink.opendental.money import MoneyError, format_money, from_double, to_double


class OdError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OdBadRequest(OdError):
    """What Open Dental answers with 400 BadRequest (with explanation)."""


class OdNotFound(OdError):
    """What Open Dental answers with 404 NotFound (with explanation)."""


PAYMENT_SOURCE_API = 13
PAYMENT_SOURCE_NONE = 0
PAT_STATUS_DELETED = 4

# definition.Category (enum DefCat)
DEF_CAT_ADJ_TYPES: Final = 1
DEF_CAT_PAYMENT_TYPES: Final = 10
DEF_CAT_COMMLOG_TYPES: Final = 27
DEF_CAT_UNEARNED_TYPES: Final = 29
DEF_CAT_TASK_PRIORITIES: Final = 33

# securitylog.PermType (enum Permissions, OpenDentBusiness/TableTypes/GroupPermission.cs)
PERM_PAYMENT_CREATE: Final = 15
PERM_PAYMENT_EDIT: Final = 16
PERM_ADJUSTMENT_CREATE: Final = 17
LOG_SOURCE_API: Final = 23  # securitylog.LogSource (enum LogSources)

RIGOROUS_ACCOUNTING_DONT_ENFORCE: Final = 2
TASK_OBJECT_NONE: Final = 0
TASK_OBJECT_PATIENT: Final = 1
COMM_SOURCE_API: Final = 7  # commlog.CommSource (enum CommItemSource)
COMM_MODE_PHONE: Final = 3  # commlog.Mode_: the API's default
COMM_SENT: Final = 1  # commlog.SentOrReceived: the API's default

NO_DATE: Final = date.min  # Open Dental's "no date", 0001-01-01
NO_DATETIME: Final = datetime.min  # noqa: DTZ901 -- Open Dental stores naive local times
_NO_DATE_SQL: Final = "0001-01-01"
_NO_DATETIME_SQL: Final = "0001-01-01 00:00:00"

SCHEMA_SQL: Final = "schema.sql"


@dataclass(frozen=True, slots=True)
class OdPatient:
    pat_num: int
    last_name: str
    first_name: str
    birthdate: date | None  # None for Open Dental's '0001-01-01'
    chart_number: str
    pat_status: int
    guarantor: int
    pri_prov: int
    clinic_num: int


@dataclass(frozen=True, slots=True)
class OdPayment:
    pay_num: int
    pat_num: int
    pay_type: int
    pay_date: date
    pay_amt: Decimal
    pay_note: str
    clinic_num: int
    date_entry: date
    payment_source: int
    merchant_fee: Decimal

    @property
    def amount_cents(self) -> int:
        return int(self.pay_amt * 100)


@dataclass(frozen=True, slots=True)
class OdPaySplit:
    split_num: int
    pay_num: int
    pat_num: int
    split_amt: Decimal
    prov_num: int
    unearned_type: int
    clinic_num: int
    date_pay: date
    pay_plan_num: int


@dataclass(frozen=True, slots=True)
class OdDefinition:
    def_num: int
    category: int
    item_name: str
    item_value: str
    is_hidden: bool


@dataclass(frozen=True, slots=True)
class OdAdjustment:
    adj_num: int
    pat_num: int
    adj_type: int
    adj_amt: Decimal
    adj_date: date
    adj_note: str
    prov_num: int
    clinic_num: int
    proc_date: date
    date_entry: date


@dataclass(frozen=True, slots=True)
class OdTask:
    task_num: int
    task_list_num: int
    key_num: int
    object_type: int
    descript: str
    task_status: int
    user_num: int
    date_time_entry: datetime
    priority_def_num: int


@dataclass(frozen=True, slots=True)
class OdCommlog:
    commlog_num: int
    pat_num: int
    comm_date_time: datetime
    comm_type: int
    note: str
    mode: int
    sent_or_received: int
    user_num: int
    comm_source: int


@dataclass(frozen=True, slots=True)
class OdSecurityLog:
    security_log_num: int
    perm_type: int
    user_num: int
    log_date_time: datetime
    log_text: str
    pat_num: int
    fkey: int
    log_source: int


@dataclass(frozen=True, slots=True)
class NewOdPayment:
    """The fields of `POST /payments` that ledgerlink uses."""

    pat_num: int
    pay_amt: Decimal
    pay_type: int | None = None  # None: preference ApiPaymentType
    pay_date: date | None = None  # None: today (the office's date)
    pay_note: str = ""
    clinic_num: int | None = None  # None: the patient's clinic
    is_patient_preferred: bool = False
    merchant_fee: Decimal = Decimal("0")


@dataclass(slots=True)
class _PaymentContext:
    """What validating a batch of payments needs, read once per batch instead of once per payment."""

    patients: dict[int, Any]
    pay_types: dict[int, str]
    prefs: dict[str, str]
    clinics: set[int]
    first_provider: int
    today: date
    now: datetime
    today_sql: str
    now_sql: str


class OpenDentalOffice:
    """One Open Dental database (SQLite file or MariaDB database), with Open Dental's write rules.

    Synchronous (SQLAlchemy Core, sync engine): the peer runs it in a thread pool, the sandbox calls it
    directly. Safe to share between threads: each method runs in its own transaction.
    """

    def __init__(
        self, engine: Engine, *, clock: Callable[[], datetime] | None = None, tz: tzinfo | None = None
    ) -> None:
        """Use `open()`; this takes an engine already configured by it.

        `clock` returns the office's wall-clock time (naive, local to the office); when None the office reads
        `ledgerlink.clock.utcnow()` converted to `tz` (None: this machine's zone), so tests that move the
        project's one clock move the office too.
        """
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # Writes on SQLite take the write lock at BEGIN (IMMEDIATE): they read before they write, and a
        # deferred transaction that upgrades under WAL fails at once instead of waiting for the lock.
        self._write_engine = engine.execution_options(od_write=True)
        self.clock = clock
        self.tz = tz
        self._mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._raw_sql: dict[tuple[str, bool], tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]] = {}

    # --- opening -----------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = False,
        storage_engine: str | None = None,
        clock: Callable[[], datetime] | None = None,
        tz: tzinfo | None = None,
    ) -> OpenDentalOffice:
        """Open the office at a SQLAlchemy URL (`sqlite:///path`, `mysql+pymysql://...`).

        `create=True` installs the schema (MariaDB: the faithful DDL of schema.sql, in strict mode;
        SQLite: the same tables from tables.py) and Open Dental's seed rows when the tables are missing.
        `storage_engine="MyISAM"` creates the MariaDB tables without transactions, as older offices run.
        """
        engine = _create_engine(url)
        office = cls(engine, clock=clock, tz=tz)
        if create:
            office._install(storage_engine)
        return office

    def close(self) -> None:
        self._engine.dispose()

    def _install(self, storage_engine: str | None) -> None:
        present = set(inspect(self._engine).get_table_names())
        wanted = set(t.metadata.tables)
        if wanted <= present:
            return  # idempotent: an existing office is never touched
        if present & wanted:
            raise RuntimeError(
                f"the database has some of Open Dental's tables but not all (missing: {sorted(wanted - present)})"
            )
        statements = split_sql(resources.files("ledgerlink.opendental").joinpath(SCHEMA_SQL).read_text())
        with self._engine.begin() as conn:
            if self._sqlite:
                t.metadata.create_all(conn)
                for statement in statements:
                    if statement.upper().startswith("INSERT"):
                        conn.exec_driver_sql(statement)
                return
            if storage_engine is not None:
                if not re.fullmatch(r"[A-Za-z]+", storage_engine):
                    raise ValueError(f"not a storage engine: {storage_engine!r}")
                conn.exec_driver_sql(f"SET SESSION default_storage_engine={storage_engine}")
            for statement in statements:
                conn.exec_driver_sql(statement)

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    # --- the clock ---------------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The office's clock (DateEntry, securitylog); tests may move it (`office.clock = ...`).

        Naive local time to the second, as Open Dental's `NOW()` and `DateTime.Now` give it.
        """
        if self.clock is not None:
            return self.clock().replace(microsecond=0)
        return utcnow().astimezone(self.tz).replace(tzinfo=None, microsecond=0)

    def today(self) -> date:
        return self.now().date()

    # --- set-up and reading ------------------------------------------------------------------------------

    def add_patient(
        self,
        last_name: str,
        first_name: str,
        *,
        chart_number: str = "",
        birthdate: date | None = None,
        pat_status: int = 0,
        guarantor: int | None = None,  # None: the patient is their own guarantor
        clinic_num: int = 0,
        pri_prov: int | None = None,  # None: preference PracticeDefaultProv
        user_num: int = 0,
    ) -> int:
        """A patient row with every NOT NULL column given (SecurityHash '' marks it as written from outside)."""
        today = self.today()
        with self._write() as conn:
            prov = pri_prov if pri_prov is not None else _int(self._pref(conn, "PracticeDefaultProv", "0"))
            result = conn.execute(
                t.patient.insert().values(
                    LName=last_name,
                    FName=first_name,
                    MiddleI="",
                    Preferred="",
                    PatStatus=pat_status,
                    Birthdate=birthdate or NO_DATE,
                    HmPhone="",
                    WirelessPhone="",
                    Guarantor=guarantor or 0,
                    Email="",
                    EstBalance=0.0,
                    PriProv=prov,
                    SecProv=0,
                    BillingType=0,
                    ChartNumber=chart_number,
                    BalTotal=0.0,
                    ClinicNum=clinic_num,
                    DateTStamp=self.now(),
                    SecUserNumEntry=user_num,
                    SecDateEntry=today,
                    SecurityHash="",
                )
            )
            pat_num = _pk(result.inserted_primary_key)
            if guarantor is None:
                conn.execute(update(t.patient).where(t.patient.c.PatNum == pat_num).values(Guarantor=pat_num))
        return pat_num

    def set_patient_status(self, pat_num: int, pat_status: int) -> None:
        with self._write() as conn:
            if conn.execute(select(t.patient.c.PatNum).where(t.patient.c.PatNum == pat_num)).first() is None:
                raise OdNotFound("Patient not found.")
            conn.execute(update(t.patient).where(t.patient.c.PatNum == pat_num).values(PatStatus=pat_status))

    def patient(self, pat_num: int) -> OdPatient | None:
        with self._read() as conn:
            row = conn.execute(select(t.patient).where(t.patient.c.PatNum == pat_num)).first()
        return _patient(row) if row is not None else None

    def patients_by_chart_number(self, chart_number: str) -> list[OdPatient]:
        """As `GET /patients?ChartNumber=`: a PREFIX match (research §9.4), deleted patients included.

        The caller must compare ChartNumber exactly itself: `A100` also finds `A1001`.
        """
        escaped = chart_number.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(t.patient)
            .where(t.patient.c.ChartNumber.like(escaped + "%", escape="\\"))
            .order_by(t.patient.c.PatNum)
        )
        with self._read() as conn:
            return [_patient(row) for row in conn.execute(query)]

    def patients_matching(
        self, *, last_name: str = "", first_name: str = "", birthdate: date | None = None
    ) -> list[OdPatient]:
        """As `GET /patients?LName=&FName=&Birthdate=`: names match from their start ignoring case, the birth
        date exactly; the filters given all apply; deleted patients included, as in the ChartNumber search.

        The caller compares names exactly itself, as it does for ChartNumber.
        """
        query = select(t.patient).order_by(t.patient.c.PatNum)
        for column, prefix in ((t.patient.c.LName, last_name), (t.patient.c.FName, first_name)):
            if prefix:
                escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                query = query.where(func.lower(column).like(escaped + "%", escape="\\"))
        if birthdate is not None:
            query = query.where(t.patient.c.Birthdate == birthdate)
        with self._read() as conn:
            return [_patient(row) for row in conn.execute(query)]

    def definitions(self, category: int) -> list[OdDefinition]:
        """All definitions of a category in Open Dental's display order, hidden ones included (still valid)."""
        query = (
            select(t.definition)
            .where(t.definition.c.Category == category)
            .order_by(t.definition.c.ItemOrder, t.definition.c.DefNum)
        )
        with self._read() as conn:
            return [_definition(row) for row in conn.execute(query)]

    def add_definition(
        self, category: int, item_name: str, item_value: str = "", hidden: bool = False
    ) -> int:
        with self._write() as conn:
            order = conn.execute(
                select(func.coalesce(func.max(t.definition.c.ItemOrder) + 1, 0)).where(
                    t.definition.c.Category == category
                )
            ).scalar_one()
            result = conn.execute(
                t.definition.insert().values(
                    Category=category,
                    ItemOrder=order,
                    ItemName=item_name,
                    ItemValue=item_value,
                    ItemColor=0,
                    IsHidden=int(hidden),
                )
            )
            return _pk(result.inserted_primary_key)

    def preference(self, name: str) -> str:
        """A preference's ValueString; KeyError when the office has no such preference (Open Dental throws)."""
        with self._read() as conn:
            value = conn.execute(
                select(t.preference.c.ValueString).where(t.preference.c.PrefName == name)
            ).scalar()
        if value is None:
            raise KeyError(name)
        return str(value)

    def set_preference(self, name: str, value: str) -> None:
        with self._write() as conn:
            done = conn.execute(
                update(t.preference).where(t.preference.c.PrefName == name).values(ValueString=value)
            )
            if done.rowcount == 0:
                conn.execute(t.preference.insert().values(PrefName=name, ValueString=value, Comments=None))

    def add_provider(
        self, abbr: str, last_name: str = "", first_name: str = "", *, hidden: bool = False
    ) -> int:
        with self._write() as conn:
            order = conn.execute(select(func.coalesce(func.max(t.provider.c.ItemOrder) + 1, 0))).scalar_one()
            result = conn.execute(
                t.provider.insert().values(
                    Abbr=abbr,
                    ItemOrder=order,
                    LName=last_name,
                    FName=first_name,
                    IsHidden=int(hidden),
                    ProvStatus=0,
                )
            )
            return _pk(result.inserted_primary_key)

    def add_clinic(self, abbr: str, description: str = "") -> int:
        with self._write() as conn:
            result = conn.execute(t.clinic.insert().values(Description=description, Abbr=abbr, IsHidden=0))
            return _pk(result.inserted_primary_key)

    def add_task_list(self, descript: str, *, parent: int = 0) -> int:
        with self._write() as conn:
            result = conn.execute(
                t.tasklist.insert().values(
                    Descript=descript,
                    Parent=parent,
                    DateTL=NO_DATE,
                    IsRepeating=0,
                    DateType=0,
                    FromNum=0,
                    ObjectType=0,
                    DateTimeEntry=self.now(),
                    GlobalTaskFilterType=0,
                    TaskListStatus=0,
                )
            )
            return _pk(result.inserted_primary_key)

    def add_user(self, user_name: str, *, task_list_in_box: int = 0, clinic_num: int = 0) -> int:
        with self._write() as conn:
            result = conn.execute(
                t.userod.insert().values(
                    UserName=user_name, ClinicNum=clinic_num, IsHidden=0, TaskListInBox=task_list_in_box
                )
            )
            return _pk(result.inserted_primary_key)

    def payment(self, pay_num: int) -> OdPayment | None:
        with self._read() as conn:
            row = conn.execute(select(t.payment).where(t.payment.c.PayNum == pay_num)).first()
        return _payment(row) if row is not None else None

    def payments(
        self,
        *,
        pat_num: int | None = None,
        date_entry_from: date | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[OdPayment]:
        """As `GET /payments?PatNum=&DateEntry=` (DateEntry: on or after), in PayNum order.

        `limit`/`offset` are the API's paging (`Limit`, `Offset`; Open Dental pages at 100).
        """
        query = select(t.payment).order_by(t.payment.c.PayNum)
        if pat_num is not None:
            query = query.where(t.payment.c.PatNum == pat_num)
        if date_entry_from is not None:
            query = query.where(t.payment.c.DateEntry >= date_entry_from)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self._read() as conn:
            return [_payment(row) for row in conn.execute(query)]

    def paysplits(self, *, pay_num: int | None = None, pat_num: int | None = None) -> list[OdPaySplit]:
        """As `GET /paysplits?PayNum=&PatNum=`, in SplitNum order."""
        query = select(t.paysplit).order_by(t.paysplit.c.SplitNum)
        if pay_num is not None:
            query = query.where(t.paysplit.c.PayNum == pay_num)
        if pat_num is not None:
            query = query.where(t.paysplit.c.PatNum == pat_num)
        with self._read() as conn:
            return [_paysplit(row) for row in conn.execute(query)]

    def paid_total(self, pat_num: int) -> Decimal:
        """What the patient's account has been credited: the sum of the splits to them (only splits move money)."""
        with self._read() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(t.paysplit.c.SplitAmt), 0.0)).where(
                    t.paysplit.c.PatNum == pat_num
                )
            ).scalar_one()
        return from_double(float(total))

    def adjustments(self, pat_num: int) -> list[OdAdjustment]:
        """As `GET /adjustments?PatNum=`, in AdjNum order."""
        query = select(t.adjustment).where(t.adjustment.c.PatNum == pat_num).order_by(t.adjustment.c.AdjNum)
        with self._read() as conn:
            return [_adjustment(row) for row in conn.execute(query)]

    def tasks(self, *, task_list_num: int | None = None) -> list[OdTask]:
        query = select(t.task).order_by(t.task.c.TaskNum)
        if task_list_num is not None:
            query = query.where(t.task.c.TaskListNum == task_list_num)
        with self._read() as conn:
            return [_task(row) for row in conn.execute(query)]

    def task_unread_users(self, task_num: int) -> list[int]:
        """The users for whom the task shows as new (taskunread rows), in UserNum order."""
        query = (
            select(t.taskunread.c.UserNum)
            .where(t.taskunread.c.TaskNum == task_num)
            .order_by(t.taskunread.c.UserNum)
        )
        with self._read() as conn:
            return [int(user) for user in conn.execute(query).scalars()]

    def commlogs(self, pat_num: int | None = None) -> list[OdCommlog]:
        """As `GET /commlogs?PatNum=`, in CommlogNum order (all commlogs when pat_num is None)."""
        query = select(t.commlog).order_by(t.commlog.c.CommlogNum)
        if pat_num is not None:
            query = query.where(t.commlog.c.PatNum == pat_num)
        with self._read() as conn:
            return [_commlog(row) for row in conn.execute(query)]

    def securitylog(self, *, pat_num: int | None = None) -> list[OdSecurityLog]:
        query = select(t.securitylog).order_by(t.securitylog.c.SecurityLogNum)
        if pat_num is not None:
            query = query.where(t.securitylog.c.PatNum == pat_num)
        with self._read() as conn:
            return [_securitylog(row) for row in conn.execute(query)]

    def count(self, table: str) -> int:
        """Rows in one of Open Dental's tables (tests and benchmarks)."""
        with self._read() as conn:
            return int(conn.execute(select(func.count()).select_from(t.metadata.tables[table])).scalar_one())

    # --- writes, as Open Dental makes them ------------------------------------------------------------------

    def create_payment(self, new: NewOdPayment, *, user_num: int = 0) -> OdPayment:
        """`POST /payments` (Payments.ProcessPaymentForWeb): one payment row, its split(s) summing to PayAmt,
        DatePay = PayDate, PaymentSource API, DateEntry today, the provider per RigorousAccounting,
        a securitylog PaymentCreate row. Raises OdBadRequest / OdNotFound with Open Dental's messages."""
        (result,) = self.create_payments([new], user_num=user_num)
        if isinstance(result, OdError):
            raise result
        return result

    def create_payments(self, new: Sequence[NewOdPayment], *, user_num: int = 0) -> list[OdPayment | OdError]:
        """Many `create_payment`s in one transaction (the sandbox's fast path); one result per entry, a
        refused entry does not stop the others.

        Everything a payment is checked against (patients, payment types, preferences) is read once for the
        batch; then each payment row is inserted on the driver's cursor (its PayNum is needed by its split)
        and the splits and securitylog rows go in with one executemany each.
        """
        if not new:
            return []
        now = self.now()
        with self._write() as conn:
            ctx = self._payment_context(conn, {entry.pat_num for entry in new}, now)
            results: list[OdPayment | OdError] = []
            accepted: list[tuple[int, dict[str, Any], OdPayment]] = []
            for entry in new:
                try:
                    payment_row, made = self._payment_row(ctx, entry, user_num)
                except OdError as refused:
                    results.append(refused)
                    continue
                accepted.append((len(results), payment_row, made))
                results.append(made)
            if accepted:
                self._insert_payments(conn, ctx, accepted, results, user_num)
        return results

    def _payment_context(self, conn: Connection, pat_nums: set[int], now: datetime) -> _PaymentContext:
        patients: dict[int, Any] = {}
        wanted = sorted(pat_nums)
        for start in range(0, len(wanted), 500):
            for row in conn.execute(_BATCH_PATIENTS, {"pat_nums": wanted[start : start + 500]}):
                patients[int(row.PatNum)] = row
        pay_types = {int(row.DefNum): str(row.ItemName or "") for row in conn.execute(_PAYMENT_TYPES)}
        prefs = {str(row.PrefName): str(row.ValueString) for row in conn.execute(_ALL_PREFERENCES)}
        clinics = {int(num) for num in conn.execute(_ALL_CLINICS).scalars()}
        return _PaymentContext(
            patients=patients,
            pay_types=pay_types,
            prefs=prefs,
            clinics=clinics,
            first_provider=self._first_provider(conn),
            today=now.date(),
            now=now,
            today_sql=now.date().isoformat(),
            now_sql=_sql_datetime(now),
        )

    def _payment_row(
        self, ctx: _PaymentContext, new: NewOdPayment, user_num: int
    ) -> tuple[dict[str, Any], OdPayment]:
        """Validate one `POST /payments` body as Open Dental does, and build its payment row (every column)."""
        patient = ctx.patients.get(new.pat_num)
        if patient is None or patient.PatStatus == PAT_STATUS_DELETED:
            raise OdNotFound("Patient not found.")
        try:
            pay_amt = to_double(new.pay_amt)
            merchant_fee = to_double(new.merchant_fee)
        except MoneyError as exc:
            raise OdBadRequest(f"PayAmt is invalid: {exc}.") from exc
        if pay_amt == 0:
            raise OdBadRequest("PayAmt is required and cannot be 0.")
        pay_type = new.pay_type if new.pay_type is not None else _int(ctx.prefs.get("ApiPaymentType", "0"))
        if pay_type not in ctx.pay_types:
            raise OdBadRequest(
                "PayType is invalid. Must be a definition.DefNum where definition.Category=10."
            )
        pay_date = new.pay_date if new.pay_date is not None else ctx.today
        future_allowed = (
            ctx.prefs.get("AccountAllowFutureDebits") == "1"
            or ctx.prefs.get("FutureTransDatesAllowed") == "1"
        )
        if pay_date > ctx.today and not future_allowed:
            raise OdBadRequest("Payment Date must not be a future date.")
        if pay_date.year < 1880:
            raise OdBadRequest("Invalid Payment Date")
        clinic_num = new.clinic_num if new.clinic_num is not None else int(patient.ClinicNum)
        if clinic_num != 0 and clinic_num not in ctx.clinics:
            raise OdBadRequest("ClinicNum is invalid.")
        row = {
            "PayType": pay_type,
            "PayDate": pay_date.isoformat(),
            "PayAmt": pay_amt,
            "CheckNum": "",
            "BankBranch": "",
            "PayNote": new.pay_note,
            "IsSplit": 0,
            "PatNum": new.pat_num,
            "ClinicNum": clinic_num,
            "DateEntry": ctx.today_sql,
            "DepositNum": 0,
            "Receipt": "",
            "IsRecurringCC": 0,
            "SecUserNumEntry": user_num,
            "SecDateTEdit": ctx.now_sql,
            "PaymentSource": PAYMENT_SOURCE_API,
            "ProcessStatus": 0,  # OfficeProcessed
            "RecurringChargeDate": _NO_DATE_SQL,
            "ExternalId": "",
            "PaymentStatus": 0,
            "IsCcCompleted": 0,
            "MerchantFee": merchant_fee,
        }
        made = OdPayment(
            pay_num=0,
            pat_num=new.pat_num,
            pay_type=pay_type,
            pay_date=pay_date,
            pay_amt=new.pay_amt.quantize(Decimal("0.01")),
            pay_note=new.pay_note,
            clinic_num=clinic_num,
            date_entry=ctx.today,
            payment_source=PAYMENT_SOURCE_API,
            merchant_fee=new.merchant_fee.quantize(Decimal("0.01")),
        )
        return row, made

    def _insert_payments(
        self,
        conn: Connection,
        ctx: _PaymentContext,
        accepted: list[tuple[int, dict[str, Any], OdPayment]],
        results: list[OdPayment | OdError],
        user_num: int,
    ) -> None:
        """Payments.Insert(pay, splits) for each accepted payment: the row, its single split, its securitylog."""
        rigorous = _int(ctx.prefs.get("RigorousAccounting", "0"))
        unearned_default = _int(ctx.prefs.get("PrepaymentUnearnedType", "0"))
        default_prov = _int(ctx.prefs.get("PracticeDefaultProv", "0"))
        now_sql = ctx.now_sql
        split_sql, split_values = self._raw_insert(t.paysplit)
        log_sql, log_values = self._raw_insert(t.securitylog)
        splits: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            pay_nums = self._insert_payment_rows(cursor, [row for _, row, _ in accepted])
            for pay_num, (index, row, made) in zip(pay_nums, accepted, strict=True):
                patient = ctx.patients[made.pat_num]
                # CreateSinglePaySplitForWeb: there are no procedures here, so AutoSplitForPayment suggests no
                # split and the whole amount goes to one split on the payment's patient.
                if rigorous == RIGOROUS_ACCOUNTING_DONT_ENFORCE:
                    prov_num = int(patient.PriProv) or default_prov or ctx.first_provider
                    unearned_type = 0
                else:
                    prov_num = 0
                    unearned_type = unearned_default
                split = {
                    "SplitAmt": row["PayAmt"],
                    "PatNum": made.pat_num,
                    "ProcDate": _NO_DATE_SQL,
                    "PayNum": pay_num,
                    "IsDiscount": 0,
                    "DiscountType": 0,
                    "ProvNum": prov_num,
                    "PayPlanNum": 0,
                    "DatePay": row["PayDate"],
                    "ProcNum": 0,
                    "DateEntry": row["DateEntry"],
                    "UnearnedType": unearned_type,
                    "ClinicNum": row["ClinicNum"],
                    "SecUserNumEntry": user_num,
                    "SecDateTEdit": now_sql,
                    "FSplitNum": 0,
                    "AdjNum": 0,
                    "PayPlanChargeNum": 0,
                    "PayPlanDebitType": 0,
                    "SecurityHash": "",  # salted in Open Dental's closed CDT.dll: nobody outside can compute it
                }
                splits.append(split_values(split))
                log_text = (
                    f"Payment created through API for {_name_lf(patient)} with payment type "
                    f"'{ctx.pay_types[made.pay_type]}', amount '{format_money(made.pay_amt)}'"
                )
                logs.append(
                    log_values(
                        _log_row(PERM_PAYMENT_CREATE, user_num, now_sql, log_text, made.pat_num, pay_num)
                    )
                )
                results[index] = _with_pay_num(made, pay_num)
            cursor.executemany(split_sql, splits)
            cursor.executemany(log_sql, logs)
        finally:
            cursor.close()

    def _insert_payment_rows(self, cursor: Any, rows: list[dict[str, Any]]) -> list[int]:
        """Insert payment rows on the driver's cursor; their PayNums, in order.

        SQLite: the transaction began IMMEDIATE, so no one else can insert before we commit and the next
        PayNums after MAX(PayNum) are ours (what SQLite would pick itself): one executemany. MariaDB: one
        INSERT per row and its LAST_INSERT_ID(), which stays right beside concurrent writers on any
        innodb_autoinc_lock_mode.
        """
        if self._sqlite:
            cursor.execute("SELECT COALESCE(MAX(PayNum), 0) FROM payment")
            first = int(cursor.fetchone()[0]) + 1
            pay_nums = list(range(first, first + len(rows)))
            sql, values = self._raw_insert(t.payment, with_key=True)
            for pay_num, row in zip(pay_nums, rows, strict=True):
                row["PayNum"] = pay_num
            cursor.executemany(sql, [values(row) for row in rows])
            return pay_nums
        sql, values = self._raw_insert(t.payment)
        pay_nums = []
        for row in rows:
            cursor.execute(sql, values(row))
            pay_nums.append(int(cursor.lastrowid))
        return pay_nums

    def _raw_insert(
        self, table: Table, *, with_key: bool = False
    ) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
        """`INSERT INTO table (every column, the key only when asked) VALUES (...)` in the driver's own parameter
        style, and the function that turns a row (a dict by column name) into its parameters."""
        cached = self._raw_sql.get((table.name, with_key))
        if cached is None:
            quote = self._engine.dialect.identifier_preparer.quote
            cols = tuple(col.name for col in table.columns if with_key or not col.primary_key)
            sql = (
                f"INSERT INTO {quote(table.name)} ({', '.join(quote(col) for col in cols)}) "
                f"VALUES ({', '.join([self._mark] * len(cols))})"
            )
            cached = self._raw_sql[(table.name, with_key)] = (sql, itemgetter(*cols))
        return cached

    def refund_payment(self, pay_num: int, *, user_num: int = 0) -> OdPayment:
        """`POST /payments/Refund` (Payments.MakeNegativePaymentsRefund): a new payment mirroring the
        original with negated splits, dated today, empty note (research §9.1, §9.5).

        Refused when the original has a split of 0 or less (a refund of a refund) or a split on a payment
        plan. Nothing stops a second refund of the same original, as in Open Dental (§9.1).
        """
        now = self.now()
        today = now.date()
        with self._write() as conn:
            original = conn.execute(select(t.payment).where(t.payment.c.PayNum == pay_num)).first()
            if original is None:
                raise OdNotFound("Payment not found.")
            splits = conn.execute(
                select(t.paysplit).where(t.paysplit.c.PayNum == pay_num).order_by(t.paysplit.c.SplitNum)
            ).all()
            if not splits:
                raise OdBadRequest("Payment has no paysplits and cannot be refunded.")
            if any(float(split.SplitAmt) <= 0 for split in splits):
                raise OdBadRequest("Payments with paysplits of zero or less cannot be refunded.")
            if any(int(split.PayPlanNum) != 0 for split in splits):
                raise OdBadRequest("Payments with paysplits attached to payment plans cannot be refunded.")
            pay_amt = -float(original.PayAmt)
            result = conn.execute(
                t.payment.insert().values(
                    PayType=original.PayType,
                    PayDate=today,
                    PayAmt=pay_amt,
                    CheckNum="",
                    BankBranch="",
                    PayNote="",
                    IsSplit=original.IsSplit,
                    PatNum=original.PatNum,
                    ClinicNum=original.ClinicNum,
                    DateEntry=today,
                    DepositNum=0,
                    Receipt="",
                    IsRecurringCC=0,
                    SecUserNumEntry=user_num,
                    SecDateTEdit=now,
                    PaymentSource=PAYMENT_SOURCE_NONE,
                    ProcessStatus=0,
                    RecurringChargeDate=NO_DATE,
                    ExternalId="",
                    PaymentStatus=0,
                    IsCcCompleted=0,
                    MerchantFee=0.0,
                )
            )
            refund_num = _pk(result.inserted_primary_key)
            conn.execute(
                t.paysplit.insert(),
                [
                    {
                        **{col: getattr(split, col) for col in _SPLIT_COPIED},
                        "SplitAmt": -float(split.SplitAmt),
                        "PayNum": refund_num,
                        "DatePay": today,
                        "DateEntry": today,
                        "SecUserNumEntry": user_num,
                        "SecDateTEdit": now,
                        "SecurityHash": "",
                    }
                    for split in splits
                ],
            )
            patient = conn.execute(
                select(t.patient.c.LName, t.patient.c.FName).where(t.patient.c.PatNum == original.PatNum)
            ).first()
            amount = from_double(pay_amt)
            log_text = (
                f"Payment created through API for {_name_lf(patient)}: refund of payment {pay_num}, "
                f"amount '{format_money(amount)}'"
            )
            conn.execute(
                t.securitylog.insert().values(
                    _log_row(PERM_PAYMENT_CREATE, user_num, now, log_text, int(original.PatNum), refund_num)
                )
            )
            refund = conn.execute(select(t.payment).where(t.payment.c.PayNum == refund_num)).one()
        return _payment(refund)

    def update_payment_note(self, pay_num: int, pay_note: str, *, user_num: int = 0) -> OdPayment:
        """`PUT /payments/{PayNum}` with PayNote (overwrites the note); logs PaymentEdit."""
        now = self.now()
        with self._write() as conn:
            original = conn.execute(select(t.payment).where(t.payment.c.PayNum == pay_num)).first()
            if original is None:
                raise OdNotFound("Payment not found.")
            conn.execute(
                update(t.payment)
                .where(t.payment.c.PayNum == pay_num)
                .values(PayNote=pay_note, SecDateTEdit=now)
            )
            patient = conn.execute(
                select(t.patient.c.LName, t.patient.c.FName).where(t.patient.c.PatNum == original.PatNum)
            ).first()
            conn.execute(
                t.securitylog.insert().values(
                    _log_row(
                        PERM_PAYMENT_EDIT,
                        user_num,
                        now,
                        f"Payment edited through API for {_name_lf(patient)}: note changed",
                        int(original.PatNum),
                        pay_num,
                    )
                )
            )
            row = conn.execute(select(t.payment).where(t.payment.c.PayNum == pay_num)).one()
        return _payment(row)

    def create_adjustment(
        self,
        pat_num: int,
        adj_type: int,
        adj_amt: Decimal,
        adj_date: date,
        adj_note: str,
        *,
        user_num: int = 0,
    ) -> int:
        """`POST /adjustments`: the sign must match the AdjType's '+'/'-' (definition Category 1).

        AdjDate may not be in the future; ProvNum and ClinicNum default to the patient's, ProcDate to today
        (the API's documented defaults); logs AdjustmentCreate.
        """
        now = self.now()
        today = now.date()
        with self._write() as conn:
            patient = conn.execute(select(t.patient).where(t.patient.c.PatNum == pat_num)).first()
            if patient is None or patient.PatStatus == PAT_STATUS_DELETED:
                raise OdNotFound("Patient not found.")
            kind = conn.execute(
                select(t.definition.c.ItemValue, t.definition.c.ItemName).where(
                    t.definition.c.DefNum == adj_type, t.definition.c.Category == DEF_CAT_ADJ_TYPES
                )
            ).first()
            if kind is None or kind.ItemValue not in ("+", "-"):
                raise OdBadRequest(
                    'AdjType is invalid. Must be a definition.DefNum where definition.Category=1 and ItemValue is "+" or "-".'
                )
            try:
                amount = to_double(adj_amt)
            except MoneyError as exc:
                raise OdBadRequest(f"AdjAmt is invalid: {exc}.") from exc
            if kind.ItemValue == "+" and not amount > 0:
                raise OdBadRequest('AdjAmt must be positive for an AdjType with an ItemValue of "+".')
            if kind.ItemValue == "-" and not amount < 0:
                raise OdBadRequest('AdjAmt must be negative for an AdjType with an ItemValue of "-".')
            if adj_date > today:
                raise OdBadRequest("AdjDate cannot be a future date.")
            prov_num = int(patient.PriProv) or _int(self._pref(conn, "PracticeDefaultProv", "0"))
            prov_num = prov_num or self._first_provider(conn)
            result = conn.execute(
                t.adjustment.insert().values(
                    AdjDate=adj_date,
                    AdjAmt=amount,
                    PatNum=pat_num,
                    AdjType=adj_type,
                    ProvNum=prov_num,
                    AdjNote=adj_note,
                    ProcDate=today,
                    ProcNum=0,
                    DateEntry=today,
                    ClinicNum=patient.ClinicNum,
                    StatementNum=0,
                    SecUserNumEntry=user_num,
                    SecDateTEdit=now,
                    TaxTransID=0,
                )
            )
            adj_num = _pk(result.inserted_primary_key)
            log_text = (
                f"Adjustment created through API for {_name_lf(patient)} with type '{kind.ItemName}', "
                f"amount '{format_money(adj_amt)}'"
            )
            conn.execute(
                t.securitylog.insert().values(
                    _log_row(PERM_ADJUSTMENT_CREATE, user_num, now, log_text, pat_num, adj_num)
                )
            )
        return adj_num

    def create_task(
        self,
        task_list_num: int,
        descript: str,
        user_num: int,
        *,
        pat_num: int = 0,
        priority_def_num: int | None = None,
        acting_user_num: int | None = None,
    ) -> int:
        """`POST /tasks`: a task (ObjectType Patient when pat_num) plus the taskunread rows Open Dental adds.

        Unread rows follow TaskUnreads.AddUnreads, simplified: the task's owner (`user_num`) unless they are
        the acting user (the API key's user; None: the owner), and every user whose inbox is this task list
        (`userod.TaskListInBox`), except the acting user. Subscriptions to ancestor lists
        (`tasksubscription` x `taskancestor`) are not modelled.
        """
        now = self.now()
        acting = user_num if acting_user_num is None else acting_user_num
        if not descript:
            raise OdBadRequest("Descript is required.")
        with self._write() as conn:
            if (
                conn.execute(
                    select(t.tasklist.c.TaskListNum).where(t.tasklist.c.TaskListNum == task_list_num)
                ).first()
                is None
            ):
                raise OdNotFound("TaskList not found.")
            if conn.execute(select(t.userod.c.UserNum).where(t.userod.c.UserNum == user_num)).first() is None:
                raise OdNotFound("User not found.")
            if (
                pat_num
                and conn.execute(select(t.patient.c.PatNum).where(t.patient.c.PatNum == pat_num)).first()
                is None
            ):
                raise OdNotFound("Patient not found.")
            if priority_def_num is None:
                priority_def_num = self._default_def(conn, DEF_CAT_TASK_PRIORITIES, "D")
            elif not self._is_def(conn, priority_def_num, DEF_CAT_TASK_PRIORITIES):
                raise OdBadRequest(
                    "PriorityDefNum is invalid. Must be a definition.DefNum where definition.Category=33."
                )
            result = conn.execute(
                t.task.insert().values(
                    TaskListNum=task_list_num,
                    DateTask=NO_DATE,
                    KeyNum=pat_num,
                    Descript=descript,
                    TaskStatus=0,
                    IsRepeating=0,
                    DateType=0,
                    FromNum=0,
                    ObjectType=TASK_OBJECT_PATIENT if pat_num else TASK_OBJECT_NONE,
                    DateTimeEntry=now,
                    UserNum=user_num,
                    DateTimeFinished=NO_DATETIME,
                    PriorityDefNum=priority_def_num,
                    ReminderGroupId="",
                    ReminderType=0,
                    ReminderFrequency=0,
                    DateTimeOriginal=now,
                    SecDateTEdit=now,
                    DescriptOverride="",
                    IsReadOnly=0,
                    TriageCategory=0,
                )
            )
            task_num = _pk(result.inserted_primary_key)
            inbox_owners = conn.execute(
                select(t.userod.c.UserNum).where(
                    t.userod.c.TaskListInBox == task_list_num, t.userod.c.IsHidden == 0
                )
            ).scalars()
            unread = {int(user) for user in inbox_owners}
            unread.add(user_num)
            unread.discard(acting)
            if unread:
                conn.execute(
                    t.taskunread.insert(), [{"TaskNum": task_num, "UserNum": user} for user in sorted(unread)]
                )
        return task_num

    def create_commlog(
        self,
        pat_num: int,
        note: str,
        *,
        comm_type: int | None = None,
        user_num: int = 0,
        mode: int = COMM_MODE_PHONE,
        sent_or_received: int = COMM_SENT,
        comm_date_time: datetime | None = None,
    ) -> int:
        """`POST /commlogs`: a commlog on the patient (CommSource API).

        The API's documented defaults: CommType the "Misc" type (Category 27, ItemValue 'MISC'; the first
        commlog type when an office has none), Mode_ Phone, SentOrReceived Sent, CommDateTime now.
        """
        now = self.now()
        if not note:
            raise OdBadRequest("Note is required.")
        with self._write() as conn:
            patient = conn.execute(select(t.patient.c.PatNum).where(t.patient.c.PatNum == pat_num)).first()
            if patient is None:
                raise OdNotFound("Patient not found.")
            if comm_type is None:
                comm_type = self._default_def(conn, DEF_CAT_COMMLOG_TYPES, "MISC")
            elif not self._is_def(conn, comm_type, DEF_CAT_COMMLOG_TYPES):
                raise OdBadRequest(
                    "CommType is invalid. Must be a definition.DefNum where definition.Category=27."
                )
            result = conn.execute(
                t.commlog.insert().values(
                    PatNum=pat_num,
                    CommDateTime=comm_date_time or now,
                    CommType=comm_type,
                    Note=note,
                    Mode_=mode,
                    SentOrReceived=sent_or_received,
                    UserNum=user_num,
                    Signature="",
                    SigIsTopaz=0,
                    DateTStamp=now,
                    DateTimeEnd=NO_DATETIME,
                    CommSource=COMM_SOURCE_API,
                    ProgramNum=0,
                    DateTEntry=now,
                    ReferralNum=0,
                    CommReferralBehavior=0,
                )
            )
            return _pk(result.inserted_primary_key)

    # --- checks ------------------------------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """Open Dental's database maintenance checks that a writer must never trip: payments without splits,
        splits not summing to the payment (rounded to cents), splits without a payment, DatePay != PayDate."""
        problems: list[str] = []
        with self._read() as conn:
            for (pay_num,) in conn.execute(text(_PAYMENTS_WITHOUT_SPLITS)):
                problems.append(f"payment {pay_num} has no paysplit (PaymentMissingPaySplit)")
            for pay_num, pay_amt, split_total in conn.execute(text(_SPLITS_NOT_SUMMING)):
                problems.append(
                    f"payment {pay_num}: PayAmt {from_double(pay_amt)} but its splits sum to "
                    f"{from_double(split_total)} (PaymentAmtNotMatchPaySplitTotal)"
                )
            for (split_num,) in conn.execute(text(_SPLITS_WITHOUT_PAYMENT)):
                problems.append(f"paysplit {split_num} has no payment (PaySplitWithInvalidPayNum)")
            for split_num, date_pay, pay_date in conn.execute(text(_DATEPAY_NOT_PAYDATE)):
                problems.append(
                    f"paysplit {split_num}: DatePay {date_pay} differs from its payment's PayDate {pay_date}"
                )
        return problems

    # --- helpers -----------------------------------------------------------------------------------------

    def _pref(self, conn: Connection, name: str, default: str) -> str:
        value = conn.execute(
            select(t.preference.c.ValueString).where(t.preference.c.PrefName == name)
        ).scalar()
        return default if value is None else str(value)

    def _first_provider(self, conn: Connection) -> int:
        """Providers.GetFirstOrDefault(isShort): the first provider shown in lists, 0 when there is none."""
        first = conn.execute(_FIRST_PROVIDER).scalar()
        return int(first or 0)

    def _is_def(self, conn: Connection, def_num: int, category: int) -> bool:
        return (
            conn.execute(
                select(t.definition.c.DefNum).where(
                    t.definition.c.DefNum == def_num, t.definition.c.Category == category
                )
            ).first()
            is not None
        )

    def _default_def(self, conn: Connection, category: int, item_value: str) -> int:
        """The definition Open Dental picks by its ItemValue marker ('MISC', 'D'), else the category's first."""
        rows = conn.execute(
            select(t.definition.c.DefNum, t.definition.c.ItemValue, t.definition.c.IsHidden)
            .where(t.definition.c.Category == category)
            .order_by(t.definition.c.ItemOrder, t.definition.c.DefNum)
        ).all()
        for row in rows:
            if row.ItemValue == item_value and not row.IsHidden:
                return int(row.DefNum)
        visible = [row for row in rows if not row.IsHidden]
        return int(visible[0].DefNum) if visible else 0


# --- module helpers ----------------------------------------------------------------------------------------

_SPLIT_COPIED: Final = (
    "PatNum",
    "ProcDate",
    "IsDiscount",
    "DiscountType",
    "ProvNum",
    "PayPlanNum",
    "ProcNum",
    "UnearnedType",
    "ClinicNum",
    "FSplitNum",
    "AdjNum",
    "PayPlanChargeNum",
    "PayPlanDebitType",
)
"""The split columns MakeNegativePaymentsRefund keeps from the original (it copies the split, then sets the
amount, payment and dates)."""

# Statements of the payment fast path, built once (building a select costs more than running it on SQLite).
_BATCH_PATIENTS: Final = select(
    t.patient.c.PatNum,
    t.patient.c.LName,
    t.patient.c.FName,
    t.patient.c.PatStatus,
    t.patient.c.PriProv,
    t.patient.c.ClinicNum,
).where(t.patient.c.PatNum.in_(bindparam("pat_nums", expanding=True)))
_PAYMENT_TYPES: Final = select(t.definition.c.DefNum, t.definition.c.ItemName).where(
    t.definition.c.Category == DEF_CAT_PAYMENT_TYPES
)
_ALL_PREFERENCES: Final = select(t.preference.c.PrefName, t.preference.c.ValueString)
_ALL_CLINICS: Final = select(t.clinic.c.ClinicNum)
_FIRST_PROVIDER: Final = (
    select(t.provider.c.ProvNum)
    .where(t.provider.c.IsHidden == 0)
    .order_by(t.provider.c.ItemOrder, t.provider.c.ProvNum)
    .limit(1)
)

_PAYMENTS_WITHOUT_SPLITS: Final = """
SELECT p.PayNum FROM payment p
WHERE NOT EXISTS (SELECT 1 FROM paysplit s WHERE s.PayNum = p.PayNum)
ORDER BY p.PayNum"""
_SPLITS_NOT_SUMMING: Final = """
SELECT p.PayNum, p.PayAmt, SUM(s.SplitAmt) FROM payment p JOIN paysplit s ON s.PayNum = p.PayNum
GROUP BY p.PayNum, p.PayAmt
HAVING ROUND(p.PayAmt, 2) <> ROUND(SUM(s.SplitAmt), 2)
ORDER BY p.PayNum"""
_SPLITS_WITHOUT_PAYMENT: Final = """
SELECT s.SplitNum FROM paysplit s
WHERE NOT EXISTS (SELECT 1 FROM payment p WHERE p.PayNum = s.PayNum)
ORDER BY s.SplitNum"""
_DATEPAY_NOT_PAYDATE: Final = """
SELECT s.SplitNum, s.DatePay, p.PayDate FROM paysplit s JOIN payment p ON p.PayNum = s.PayNum
WHERE s.DatePay <> p.PayDate
ORDER BY s.SplitNum"""


def split_sql(script: str) -> list[str]:
    """The statements of a SQL script: `--` comments dropped, split on `;` outside quoted strings.

    Enough for schema.sql (MariaDB's DDL and INSERTs, '' and backslash escapes in strings); not a SQL parser.
    """
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(script):
        char = script[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and i + 1 < len(script):
                current.append(script[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in ("'", '"', "`"):
            quote = char
            current.append(char)
        elif script.startswith("--", i):
            end = script.find("\n", i)
            i = len(script) if end < 0 else end
            continue
        elif char == ";":
            statement = "".join(current).strip()
            if statement:
                statements.append(statement)
            current = []
        else:
            current.append(char)
        i += 1
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def _create_engine(url: str) -> Engine:
    """A sync engine: sqlite3 in WAL mode or pymysql, with a pool sized for the peer's thread pool (~40)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            connect_args={"check_same_thread": False, "timeout": 30},
            # As many kept connections as the peer has threads: an overflow connection is closed when
            # returned, so a smaller pool would open a connection per request under load.
            pool_size=40,
            max_overflow=10,
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "mysql":
        return create_engine(
            parsed,
            connect_args={"charset": "utf8mb4"},
            pool_size=40,
            max_overflow=10,
            pool_pre_ping=True,
            pool_recycle=3600,
        )
    raise ValueError(
        f"Open Dental runs on MariaDB/MySQL (or SQLite for the sandbox), not {parsed.get_backend_name()}"
    )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling off (isolation_level None): _sqlite_begin emits BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("od_write") else "BEGIN")


def _int(value: str) -> int:
    try:
        return int(value.strip() or 0)
    except ValueError:
        return 0


def _pk(key: Any) -> int:
    return int(key[0])


def _sql_datetime(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _date(value: Any) -> date:
    """A date column as Python: MariaDB hands '0000-00-00' back as None, which is no date too."""
    if value is None:
        return NO_DATE
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _datetime(value: Any) -> datetime:
    if value is None:
        return NO_DATETIME
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _name_lf(patient: Any) -> str:
    """Patient.GetNameLF: 'Last, First' (empty when the patient row is gone)."""
    if patient is None:
        return ""
    return f"{patient.LName or ''}, {patient.FName or ''}"


def _log_row(
    perm_type: int, user_num: int, when: datetime | str, log_text: str, pat_num: int, fkey: int
) -> dict[str, Any]:
    """SecurityLogs.MakeLogEntry with LogSource API: every securitylog column."""
    return {
        "PermType": perm_type,
        "UserNum": user_num,
        "LogDateTime": when,
        "LogText": log_text,
        "PatNum": pat_num,
        "CompName": "",
        "FKey": fkey,
        "LogSource": LOG_SOURCE_API,
        "DefNum": 0,
        "DefNumError": 0,
        "DateTPrevious": _NO_DATETIME_SQL if isinstance(when, str) else NO_DATETIME,
    }


def _with_pay_num(made: OdPayment, pay_num: int) -> OdPayment:
    return OdPayment(
        pay_num=pay_num,
        pat_num=made.pat_num,
        pay_type=made.pay_type,
        pay_date=made.pay_date,
        pay_amt=made.pay_amt,
        pay_note=made.pay_note,
        clinic_num=made.clinic_num,
        date_entry=made.date_entry,
        payment_source=made.payment_source,
        merchant_fee=made.merchant_fee,
    )


def _patient(row: Row[Any]) -> OdPatient:
    birthdate = _date(row.Birthdate)
    return OdPatient(
        pat_num=int(row.PatNum),
        last_name=str(row.LName or ""),
        first_name=str(row.FName or ""),
        birthdate=None if birthdate <= NO_DATE else birthdate,
        chart_number=str(row.ChartNumber or ""),
        pat_status=int(row.PatStatus),
        guarantor=int(row.Guarantor),
        pri_prov=int(row.PriProv),
        clinic_num=int(row.ClinicNum),
    )


def _payment(row: Row[Any]) -> OdPayment:
    return OdPayment(
        pay_num=int(row.PayNum),
        pat_num=int(row.PatNum),
        pay_type=int(row.PayType),
        pay_date=_date(row.PayDate),
        pay_amt=from_double(row.PayAmt),
        pay_note=str(row.PayNote or ""),
        clinic_num=int(row.ClinicNum),
        date_entry=_date(row.DateEntry),
        payment_source=int(row.PaymentSource),
        merchant_fee=from_double(row.MerchantFee),
    )


def _paysplit(row: Row[Any]) -> OdPaySplit:
    return OdPaySplit(
        split_num=int(row.SplitNum),
        pay_num=int(row.PayNum),
        pat_num=int(row.PatNum),
        split_amt=from_double(row.SplitAmt),
        prov_num=int(row.ProvNum),
        unearned_type=int(row.UnearnedType),
        clinic_num=int(row.ClinicNum),
        date_pay=_date(row.DatePay),
        pay_plan_num=int(row.PayPlanNum),
    )


def _definition(row: Row[Any]) -> OdDefinition:
    return OdDefinition(
        def_num=int(row.DefNum),
        category=int(row.Category),
        item_name=str(row.ItemName or ""),
        item_value=str(row.ItemValue or ""),
        is_hidden=bool(row.IsHidden),
    )


def _adjustment(row: Row[Any]) -> OdAdjustment:
    return OdAdjustment(
        adj_num=int(row.AdjNum),
        pat_num=int(row.PatNum),
        adj_type=int(row.AdjType),
        adj_amt=from_double(row.AdjAmt),
        adj_date=_date(row.AdjDate),
        adj_note=str(row.AdjNote or ""),
        prov_num=int(row.ProvNum),
        clinic_num=int(row.ClinicNum),
        proc_date=_date(row.ProcDate),
        date_entry=_date(row.DateEntry),
    )


def _task(row: Row[Any]) -> OdTask:
    return OdTask(
        task_num=int(row.TaskNum),
        task_list_num=int(row.TaskListNum),
        key_num=int(row.KeyNum),
        object_type=int(row.ObjectType),
        descript=str(row.Descript or ""),
        task_status=int(row.TaskStatus),
        user_num=int(row.UserNum),
        date_time_entry=_datetime(row.DateTimeEntry),
        priority_def_num=int(row.PriorityDefNum),
    )


def _commlog(row: Row[Any]) -> OdCommlog:
    return OdCommlog(
        commlog_num=int(row.CommlogNum),
        pat_num=int(row.PatNum),
        comm_date_time=_datetime(row.CommDateTime),
        comm_type=int(row.CommType),
        note=str(row.Note or ""),
        mode=int(row.Mode_),
        sent_or_received=int(row.SentOrReceived),
        user_num=int(row.UserNum),
        comm_source=int(row.CommSource or 0),
    )


def _securitylog(row: Row[Any]) -> OdSecurityLog:
    return OdSecurityLog(
        security_log_num=int(row.SecurityLogNum),
        perm_type=int(row.PermType),
        user_num=int(row.UserNum),
        log_date_time=_datetime(row.LogDateTime),
        log_text=str(row.LogText or ""),
        pat_num=int(row.PatNum),
        fkey=int(row.FKey),
        log_source=int(row.LogSource),
    )
