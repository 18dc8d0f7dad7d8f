"""Open Dental's tables as SQLAlchemy Core metadata: the same tables, columns, types and nullability as schema.sql.

schema.sql is the faithful MariaDB DDL (Open Dental's own types, defaults and keys); this module is its twin for
two jobs: creating the tables on SQLite (the sandbox), and building statements that run on both backends.
A test creates both on MariaDB and compares column names and nullability, so the two cannot drift.

Type mapping: bigint -> BigInteger (INTEGER on SQLite for the primary keys, so they are rowid aliases and
autoincrement), tinyint/smallint -> SmallInteger, int -> Integer, double -> Double, varchar(n) -> String(n),
text -> Text, date -> Date, datetime and timestamp -> DateTime.

Server defaults: NOT NULL columns without a DEFAULT in Open Dental have none here either, so that SQLite refuses
an INSERT that forgets one, as MariaDB does under its strict sql_mode. Open Dental's '0000-00-00' defaults
(PayDate, ProcDate, CommDateTime, LogDateTime) are left out: SQLite could not read them back as dates, and
the office always writes those columns.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeEngine

metadata = MetaData()

NO_DATE = "0001-01-01"
NO_DATETIME = "0001-01-01 00:00:00"

_PK_TYPE: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


def _pk(name: str) -> Column[int]:
    return Column(name, _PK_TYPE, primary_key=True, autoincrement=True)


def _big(name: str, *, nullable: bool = False, default: str | None = None) -> Column[int]:
    return Column(name, BigInteger(), nullable=nullable, server_default=default)


def _small(name: str, *, nullable: bool = False, default: str | None = None) -> Column[int]:
    return Column(name, SmallInteger(), nullable=nullable, server_default=default)


def _int(name: str, *, nullable: bool = False, default: str | None = None) -> Column[int]:
    return Column(name, Integer(), nullable=nullable, server_default=default)


def _double(name: str, *, nullable: bool = False, default: str | None = None) -> Column[float]:
    return Column(name, Double(), nullable=nullable, server_default=default)


def _str(name: str, length: int, *, nullable: bool = True, default: str | None = None) -> Column[str]:
    return Column(name, String(length), nullable=nullable, server_default=default)


def _text(name: str, *, nullable: bool = True) -> Column[str]:
    return Column(name, Text(), nullable=nullable)


def _date(name: str, *, default: str | None = NO_DATE) -> Column[Any]:
    return Column(name, Date(), nullable=False, server_default=default)


def _datetime(name: str, *, default: str | None = NO_DATETIME) -> Column[Any]:
    return Column(name, DateTime(), nullable=False, server_default=default)


def _timestamp(name: str) -> Column[Any]:
    """Open Dental's `timestamp ... DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP` columns."""
    return Column(name, DateTime(), nullable=False, server_default=text("CURRENT_TIMESTAMP"))


patient = Table(
    "patient",
    metadata,
    _pk("PatNum"),
    _str("LName", 100, default=""),
    _str("FName", 100, default=""),
    _str("MiddleI", 100, default=""),
    _str("Preferred", 100, default=""),
    _small("PatStatus", default="0"),
    _date("Birthdate"),
    _str("HmPhone", 30, default=""),
    _str("WirelessPhone", 30, default=""),
    _big("Guarantor"),
    _str("Email", 100, default=""),
    _double("EstBalance", default="0"),
    _big("PriProv"),
    _big("SecProv"),
    _big("BillingType"),
    _str("ChartNumber", 100, nullable=False, default=""),
    _double("BalTotal", default="0"),
    _big("ClinicNum"),
    _timestamp("DateTStamp"),
    _big("SecUserNumEntry"),
    _date("SecDateEntry"),
    _str("SecurityHash", 255, nullable=False),
    Index("indexLFName", "LName", "FName"),
    Index("indexGuarantor", "Guarantor"),
    Index("ChartNumber", "ChartNumber"),
    Index("patient_ClinicNum", "ClinicNum"),
)

payment = Table(
    "payment",
    metadata,
    _pk("PayNum"),
    _big("PayType"),
    _date("PayDate", default=None),
    _double("PayAmt", default="0"),
    _str("CheckNum", 25, default=""),
    _str("BankBranch", 25, default=""),
    _text("PayNote", nullable=False),
    _small("IsSplit", default="0"),
    _big("PatNum"),
    _big("ClinicNum"),
    _date("DateEntry"),
    _big("DepositNum"),
    _text("Receipt", nullable=False),
    _small("IsRecurringCC"),
    _big("SecUserNumEntry"),
    _timestamp("SecDateTEdit"),
    _small("PaymentSource"),
    _small("ProcessStatus"),
    _date("RecurringChargeDate"),
    _str("ExternalId", 255, nullable=False),
    _small("PaymentStatus"),
    _small("IsCcCompleted"),
    _double("MerchantFee"),
    Index("payment_indexPatNum", "PatNum"),
    Index("payment_DepositNum", "DepositNum"),
    Index("payment_ClinicNum", "ClinicNum"),
    Index("payment_PayType", "PayType"),
)

paysplit = Table(
    "paysplit",
    metadata,
    _pk("SplitNum"),
    _double("SplitAmt", default="0"),
    _big("PatNum"),
    _date("ProcDate", default=None),
    _big("PayNum"),
    _small("IsDiscount", default="0"),
    _small("DiscountType", default="0"),
    _big("ProvNum"),
    _big("PayPlanNum"),
    _date("DatePay"),
    _big("ProcNum"),
    _date("DateEntry"),
    _big("UnearnedType"),
    _big("ClinicNum"),
    _big("SecUserNumEntry"),
    _timestamp("SecDateTEdit"),
    _big("FSplitNum"),
    _big("AdjNum"),
    _big("PayPlanChargeNum"),
    _small("PayPlanDebitType"),
    _str("SecurityHash", 255, nullable=False),
    Index("paysplit_indexPatNum", "PatNum"),
    Index("paysplit_PayNum", "PayNum"),
    Index("paysplit_DatePay", "DatePay"),
)

adjustment = Table(
    "adjustment",
    metadata,
    _pk("AdjNum"),
    _date("AdjDate"),
    _double("AdjAmt", default="0"),
    _big("PatNum"),
    _big("AdjType"),
    _big("ProvNum"),
    _text("AdjNote"),
    _date("ProcDate"),
    _big("ProcNum"),
    _date("DateEntry"),
    _big("ClinicNum"),
    _big("StatementNum"),
    _big("SecUserNumEntry"),
    _timestamp("SecDateTEdit"),
    _big("TaxTransID"),
    Index("adjustment_indexPatNum", "PatNum"),
)

definition = Table(
    "definition",
    metadata,
    _pk("DefNum"),
    _small("Category", default="0"),
    _small("ItemOrder", default="0"),
    _str("ItemName", 255, default=""),
    _str("ItemValue", 255, default=""),
    _int("ItemColor", default="0"),
    _small("IsHidden", default="0"),
)

provider = Table(
    "provider",
    metadata,
    _pk("ProvNum"),
    _str("Abbr", 255, default=""),
    _small("ItemOrder", default="0"),
    _str("LName", 100, default=""),
    _str("FName", 100, default=""),
    _small("IsHidden", default="0"),
    _small("ProvStatus"),
)

clinic = Table(
    "clinic",
    metadata,
    _pk("ClinicNum"),
    _str("Description", 255, default=""),
    _str("Abbr", 255, nullable=False),
    _small("IsHidden"),
)

userod = Table(
    "userod",
    metadata,
    _pk("UserNum"),
    _str("UserName", 255, default=""),
    _big("ClinicNum"),
    _small("IsHidden", default="0"),
    _big("TaskListInBox"),
)

tasklist = Table(
    "tasklist",
    metadata,
    _pk("TaskListNum"),
    _str("Descript", 255, default=""),
    _big("Parent"),
    _date("DateTL"),
    _small("IsRepeating", default="0"),
    _small("DateType", default="0"),
    _big("FromNum"),
    _small("ObjectType", default="0"),
    _datetime("DateTimeEntry"),
    _small("GlobalTaskFilterType"),
    _small("TaskListStatus"),
)

task = Table(
    "task",
    metadata,
    _pk("TaskNum"),
    _big("TaskListNum"),
    _date("DateTask"),
    _big("KeyNum"),
    _text("Descript"),
    _small("TaskStatus", default="0"),
    _small("IsRepeating", default="0"),
    _small("DateType", default="0"),
    _big("FromNum"),
    _small("ObjectType", default="0"),
    _datetime("DateTimeEntry"),
    _big("UserNum"),
    _datetime("DateTimeFinished", default=None),
    _big("PriorityDefNum"),
    _str("ReminderGroupId", 20, nullable=False),
    _small("ReminderType"),
    _int("ReminderFrequency"),
    _datetime("DateTimeOriginal"),
    _timestamp("SecDateTEdit"),
    _str("DescriptOverride", 255, nullable=False),
    _small("IsReadOnly", default="0"),
    _big("TriageCategory"),
    Index("task_indexTaskListNum", "TaskListNum"),
)

taskunread = Table(
    "taskunread",
    metadata,
    _pk("TaskUnreadNum"),
    _big("TaskNum"),
    _big("UserNum"),
    Index("taskunread_TaskNum", "TaskNum"),
)

commlog = Table(
    "commlog",
    metadata,
    _pk("CommlogNum"),
    _big("PatNum"),
    _datetime("CommDateTime", default=None),
    _big("CommType"),
    _text("Note"),
    _small("Mode_", default="0"),
    _small("SentOrReceived", default="0"),
    _big("UserNum"),
    _text("Signature", nullable=False),
    _small("SigIsTopaz"),
    _timestamp("DateTStamp"),
    _datetime("DateTimeEnd"),
    _small("CommSource", nullable=True),
    _big("ProgramNum"),
    _datetime("DateTEntry"),
    _big("ReferralNum"),
    _small("CommReferralBehavior"),
    Index("commlog_indexPNCDateCType", "PatNum", "CommDateTime", "CommType"),
)

popup = Table(
    "popup",
    metadata,
    _pk("PopupNum"),
    _big("PatNum"),
    _text("Description"),
    _small("IsDisabled"),
    _small("PopupLevel"),
    _big("UserNum"),
    _datetime("DateTimeEntry", default=None),
    _small("IsArchived"),
    _big("PopupNumArchive"),
    _datetime("DateTimeDisabled"),
)

securitylog = Table(
    "securitylog",
    metadata,
    _pk("SecurityLogNum"),
    _small("PermType"),
    _big("UserNum"),
    _datetime("LogDateTime", default=None),
    _text("LogText"),
    _big("PatNum"),
    _str("CompName", 255, nullable=False),
    _big("FKey"),
    _small("LogSource"),
    _big("DefNum"),
    _big("DefNumError"),
    _datetime("DateTPrevious"),
    Index("securitylog_PatNum", "PatNum"),
    Index("securitylog_FKey", "FKey"),
)

preference = Table(
    "preference",
    metadata,
    _str("PrefName", 255, nullable=False, default=""),
    _text("ValueString", nullable=False),
    _pk("PrefNum"),
    _text("Comments"),
    Index("preference_PrefName", "PrefName"),
)
