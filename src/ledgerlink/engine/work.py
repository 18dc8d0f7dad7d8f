"""What a sync run works on: a claimed writeback (`Item`), what became of it (`Outcome`), and the
writebacks table as Core sees it, shared by the run itself (sync.py), its queries (claims.py) and its
batched store steps (run_store.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Table
from sqlalchemy.types import NullType, TypeDecorator

from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.rules import Decision
from ledgerlink.domain.transactions import Transaction
from ledgerlink.store.db import Database
from ledgerlink.store.models import Writeback as WritebackRow
from ledgerlink.store.models import WritebackStatus

WB = cast(Table, WritebackRow.__table__)  # Core table: executemany updates by id without ORM bookkeeping


class _Converted(TypeDecorator[Any]):
    """Hands a bound value to the driver as it is: for values `stored_value` has converted already."""

    impl = NullType
    cache_ok = True


STORED = _Converted()
CLAIM_BATCH = 1000

PENDING = WritebackStatus.PENDING.value
IN_FLIGHT = WritebackStatus.IN_FLIGHT.value
POSTED = WritebackStatus.POSTED.value
FAILED = WritebackStatus.FAILED.value
SKIPPED = WritebackStatus.SKIPPED.value
CLEARED = WritebackStatus.CLEARED.value


def default_window_start(timezone: str) -> date:
    """Reports cover yesterday and today (practice-local) by default, so a morning sync shows last
    evening's payments and a second sync the same day shows the first one's as Already Processed."""
    return utcnow().astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def stored_value(db: Database, column: Column[Any], value: Any) -> Any:
    """`value` converted the way `column` converts it for this database, to be bound as `STORED`.

    For values repeated on many rows of one executemany (the batch's timestamp, its few posting dates):
    converted once here rather than once per row; on SQLite, converting the timestamp costs more than
    everything else SQLAlchemy does for the row.
    """
    dialect = db.engine.dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


@dataclass(slots=True)
class Item:
    """One claimed writeback with everything needed to decide and write it."""

    writeback_id: int
    status: str
    uncertain: bool
    attempts: int
    txn: Transaction
    account_number: str | None
    original_ref: str | None
    intent: tuple[int, int, date | None] = (0, 0, None)  # amount, fee and posting date of the last attempt
    original_account: str = ""  # for reversals: the account the original payment was posted to
    decision: Decision | None = None

    @property
    def maybe_written(self) -> bool:
        """The last attempt may have reached the PMS: it must be looked up before anything else happens."""
        return self.uncertain or self.status == IN_FLIGHT


@dataclass(slots=True)
class Outcome:
    writeback_id: int
    status: str
    category: str | None
    error_code: str | None = None
    error_message: str | None = None
    pms_ref: str | None = None
    uncertain: bool = False
    next_attempt_at: datetime | None = None
    amount_cents: int | None = None  # None keeps the amount already recorded
    skip_reason: str | None = None


@dataclass(slots=True)
class BatchResult:
    outcomes: list[Outcome] = field(default_factory=list)
    reversed_amounts: dict[int, int] = field(default_factory=dict)  # original writeback id -> cents
    alerts: list[tuple[Item, LoadErrorCode, str]] = field(default_factory=list)
