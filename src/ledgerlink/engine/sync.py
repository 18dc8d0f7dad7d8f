"""A sync run: claim a connection's due writebacks, post them through the connector, record the outcomes.

Exactly once rests on three steps per batch, each committed before the next begins:

1. intent: the writebacks about to be written are marked `in_flight` (with the amount decided);
2. the PMS write, carrying each writeback's idempotency key into the PMS record;
3. the outcome: `posted` with the PMS reference, `failed`, or back to `pending` for a later try.

A crash between 1 and 3 leaves `in_flight` rows. The next run, holding the connection's lease, knows their
writer is gone and looks each one up in the PMS by its key before posting anything: found means posted,
not found means post now. A timeout or a lost response is handled the same way within the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Table,
    and_,
    bindparam,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.types import NullType, TypeDecorator

from ledgerlink.clock import utcnow
from ledgerlink.connectors.base import (
    PaymentEntry,
    PmsAlert,
    PmsConnector,
    PmsError,
    PmsOutcomeUnknown,
    PmsUnavailable,
    PmsWrite,
    ReversalEntry,
    WriteResult,
)
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.domain.rules import (
    Decision,
    Defer,
    Fail,
    OriginalPosting,
    OriginalState,
    PostPayment,
    PostReversal,
    Skip,
    WritebackRules,
    decide,
)
from ledgerlink.domain.transactions import PaymentType, Transaction, TransactionKind
from ledgerlink.engine import lease
from ledgerlink.engine.rate_limit import RateLimiter
from ledgerlink.engine.retry_policy import IN_RUN_DELAYS, MAX_ATTEMPTS, next_attempt_at
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.log import get_logger
from ledgerlink.practices import rules_for
from ledgerlink.store.db import Database
from ledgerlink.store.models import (
    Alert,
    Connection,
    PatientAccount,
    Practice,
    SyncRun,
    SyncRunTotal,
    WritebackStatus,
)
from ledgerlink.store.models import Transaction as TransactionRow
from ledgerlink.store.models import Writeback as WritebackRow

log = get_logger(__name__)
WB = cast(Table, WritebackRow.__table__)  # Core table: executemany updates by id without ORM bookkeeping


class _Converted(TypeDecorator[Any]):
    """Hands a bound value to the driver as it is: for values `_Sync._stored` has converted already."""

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


_FAILURE_CATEGORIES = {
    LoadErrorCode.INVALID_PATIENT_ID: ReportCategory.INVALID_PATIENT_ID,
    # Left to staff by design (a task says what to enter): reported with what waits for a person.
    LoadErrorCode.HELD_FOR_STAFF: ReportCategory.HELD_FOR_MANUAL,
}


def default_window_start(timezone: str) -> date:
    """Reports cover yesterday and today (practice-local) by default, so a morning sync shows last
    evening's payments and a second sync the same day shows the first one's as Already Processed."""
    return utcnow().astimezone(ZoneInfo(timezone)).date() - timedelta(days=1)


def idempotency_key(writeback_id: int) -> str:
    """The key that travels into the PMS record. Stable for the writeback's whole life."""
    return f"ll-wb-{writeback_id}"


@dataclass(frozen=True, slots=True)
class SyncProgress:
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    run_id: int | None
    report: SyncReport
    dry_run: bool


@dataclass(slots=True)
class _Item:
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
class _Outcome:
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
class _Batch:
    outcomes: list[_Outcome] = field(default_factory=list)
    reversed_amounts: dict[int, int] = field(default_factory=dict)  # original writeback id -> cents
    alerts: list[tuple[_Item, LoadErrorCode, str]] = field(default_factory=list)


async def run_sync(
    db: Database,
    connection_id: int,
    connector: PmsConnector,
    *,
    since: date | None = None,
    dry_run: bool = False,
    trigger: str = "on_demand",
    progress: Callable[[SyncProgress], None] | None = None,
) -> SyncOutcome:
    """Write back everything due on one connection and return the run's sync report.

    `since` is the first local date the report covers (default: the practice's yesterday); earlier
    transactions that are due (retries, late arrivals) are still written.
    """
    async with db.sessions() as session:
        connection = await session.get(Connection, connection_id)
        if connection is None:
            raise LookupError(f"connection {connection_id} does not exist")
        practice = await session.get(Practice, connection.practice_id)
        assert practice is not None
    rules = rules_for(connection, practice)
    window_start = since or default_window_start(practice.timezone)
    if dry_run:
        return await _dry_run(db, connection, practice, rules, window_start)
    sync = _Sync(db, connection, practice, rules, connector, progress)
    return await sync.run(window_start, trigger)


class _Sync:
    def __init__(
        self,
        db: Database,
        connection: Connection,
        practice: Practice,
        rules: WritebackRules,
        connector: PmsConnector,
        progress: Callable[[SyncProgress], None] | None,
    ) -> None:
        self.db = db
        self.connection = connection
        self.practice = practice
        self.rules = rules
        self.connector = connector
        self.progress = progress
        self.owner = lease.new_owner_id()
        self.lease_renewed_at = utcnow()
        self.limiter = RateLimiter(connector.limits.requests_per_second)
        self.call_timeout = connector.limits.call_timeout_s
        self.run_id = 0
        self.done = 0
        self.total = 0

    async def run(self, window_start: date, trigger: str) -> SyncOutcome:
        async with self.db.sessions.begin() as session:
            await lease.acquire(session, self.connection.id, self.owner)
            self.lease_renewed_at = utcnow()
            # With the lease held, a run of this connection still marked running is one whose process died.
            await session.execute(
                update(SyncRun)
                .where(SyncRun.connection_id == self.connection.id, SyncRun.status == "running")
                .values(status="failed", finished_at=utcnow(), error="interrupted: the sync process died")
            )
            run = SyncRun(connection_id=self.connection.id, trigger=trigger, since_date=window_start)
            session.add(run)
            await session.flush()
            self.run_id = run.id
            await enroll(session, self.connection, self.practice)
            # The total is for the progress bar only: not worth a query without one.
            if self.progress is not None:
                self.total = await _count_due(session, self.connection.id, utcnow())
        self._report_progress()
        log.info("sync.started", run_id=self.run_id, connection_id=self.connection.id, due=self.total)
        released = False
        try:
            await self._process_all()
            # One transaction ends the run: its totals, its status and the lease. The report is built from
            # the totals just stored rather than read back.
            async with self.db.sessions.begin() as session:
                totals = await _store_totals(session, self.run_id, self.connection.id, window_start)
                await session.execute(
                    update(SyncRun)
                    .where(SyncRun.id == self.run_id)
                    .values(status="done", finished_at=utcnow())
                )
                await lease.release(session, self.connection.id, self.owner)
            released = True
        except BaseException as exc:
            log.error("sync.failed", run_id=self.run_id, error=type(exc).__name__)
            async with self.db.sessions.begin() as session:
                await session.execute(
                    update(SyncRun)
                    .where(SyncRun.id == self.run_id)
                    .values(
                        status="failed", finished_at=utcnow(), error=f"{type(exc).__name__}: {exc}"[:2000]
                    )
                )
            raise
        finally:
            if not released:
                async with self.db.sessions.begin() as session:
                    await lease.release(session, self.connection.id, self.owner)
        report = SyncReport.from_totals((k, c, t) for k, (c, t) in totals.items())
        log.info("sync.finished", run_id=self.run_id, written=self.done)
        return SyncOutcome(self.run_id, report, dry_run=False)

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(SyncProgress(self.done, max(self.total, self.done)))

    async def _process_all(self) -> None:
        """Passes over the due writebacks until nothing is left or nothing more can move."""
        while True:
            cursor = 0
            recorded = deferred = 0
            while True:
                async with self.db.sessions.begin() as session:
                    await self._renew_lease(session)
                    items = await _claim(session, self.connection.id, cursor, CLAIM_BATCH)
                    if not items:
                        break
                    cursor = items[-1].writeback_id
                    await _decide_batch(session, self.connection.id, self.rules, items)
                r, d = await self._process_batch(items)
                recorded += r
                deferred += d
                if len(items) < CLAIM_BATCH:
                    break  # a short batch ends the pass: asking again would only find nothing
            if not deferred or not recorded:
                return

    async def _renew_lease(self, session: AsyncSession) -> None:
        if not await lease.renew(session, self.connection.id, self.owner):
            raise SyncAlreadyRunning(
                "this sync lost the connection's lease to another one and stopped before writing more"
            )
        self.lease_renewed_at = utcnow()

    async def _keep_lease(self) -> None:
        """Renew the lease before a PMS call once a quarter of it has passed.

        A claim batch can outlast the lease (a slow or rate-limited PMS); an expired lease is free for
        another sync, which would take this one's in-flight writebacks for abandoned and post them too.
        """
        if utcnow() - self.lease_renewed_at < timedelta(seconds=lease.LEASE_SECONDS / 4):
            return
        async with self.db.sessions.begin() as session:
            await self._renew_lease(session)

    async def _process_batch(self, items: list[_Item]) -> tuple[int, int]:
        batch = _Batch()
        writes: list[_Item] = []
        deferred = 0
        now = utcnow()
        for item in items:
            decision = item.decision
            if isinstance(decision, Defer):
                deferred += 1
            elif isinstance(decision, Skip):
                batch.outcomes.append(
                    _Outcome(
                        item.writeback_id,
                        SKIPPED,
                        decision.category.value,
                        amount_cents=decision.amount_cents,
                        skip_reason=decision.reason.value,
                    )
                )
                if decision.cancels_original_writeback_id is not None:
                    batch.outcomes.append(
                        _Outcome(
                            decision.cancels_original_writeback_id,
                            SKIPPED,
                            ReportCategory.CANCELLED_BY_VOID.value,
                            amount_cents=decision.amount_cents,
                            skip_reason=decision.reason.value,
                        )
                    )
            elif isinstance(decision, Fail):
                self._fail(
                    batch, item, decision.code, decision.message, decision.amount_cents, item.maybe_written
                )
            else:
                writes.append(item)

        if writes:
            await self._mark_in_flight(writes, now)
            await self._write(writes, batch)

        await self._record(batch)
        self.done += len(batch.outcomes)
        self._report_progress()
        return len(batch.outcomes), deferred

    def _fail(
        self,
        batch: _Batch,
        item: _Item,
        code: LoadErrorCode,
        message: str,
        amount_cents: int | None = None,
        uncertain: bool = False,
    ) -> None:
        """Record a failure; `uncertain` keeps the mark that makes a later Retry look the write up first."""
        category = _FAILURE_CATEGORIES.get(code, ReportCategory.IN_ERROR)
        batch.outcomes.append(
            _Outcome(
                item.writeback_id,
                FAILED,
                category.value,
                code.value,
                message,
                uncertain=uncertain,
                amount_cents=amount_cents,
            )
        )
        batch.alerts.append((item, code, message))

    async def _mark_in_flight(self, writes: list[_Item], now: datetime) -> None:
        stored_now = self._stored(WB.c.updated_at, now)
        stored_dates: dict[date, Any] = {}
        params = []
        for item in writes:
            decision = item.decision
            assert isinstance(decision, PostPayment | PostReversal)
            day = decision.posting_date
            if day not in stored_dates:
                stored_dates[day] = self._stored(WB.c.posting_date, day)
            params.append(
                {
                    "wid": item.writeback_id,
                    "category": decision.category.value,
                    "amount": decision.amount_cents,
                    "fee": decision.fee_cents,
                    "posting_date": stored_dates[day],
                    "run": self.run_id,
                    "now": stored_now,
                }
            )
        async with self.db.sessions.begin() as session:
            await session.execute(
                update(WB)
                .where(WB.c.id == bindparam("wid"))
                .values(
                    status=IN_FLIGHT,
                    attempts=WB.c.attempts + 1,
                    category=bindparam("category"),
                    amount_cents=bindparam("amount"),
                    fee_cents=bindparam("fee"),
                    posting_date=bindparam("posting_date", type_=STORED),
                    last_run_id=bindparam("run"),
                    updated_at=bindparam("now", type_=STORED),
                )
                .execution_options(synchronize_session=False),
                params,
            )

    def _stored(self, column: Column[Any], value: Any) -> Any:
        """`value` converted the way `column` converts it for this database, to be bound as `STORED`.

        For values repeated on many rows of one executemany (the batch's timestamp, its few posting dates):
        converted once here rather than once per row; on SQLite, converting the timestamp costs more than
        everything else SQLAlchemy does for the row.
        """
        dialect = self.db.engine.dialect
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
        return value if process is None else process(value)

    async def _write(self, writes: list[_Item], batch: _Batch) -> None:
        """Post the batch, looking up uncertain ones first, retrying briefly, then scheduling for later."""
        pending = list(writes)
        unknown: set[int] = {item.writeback_id for item in writes if item.maybe_written}
        last_error: PmsError | None = None
        for delay in (0.0, *IN_RUN_DELAYS):
            if not pending:
                return
            if delay:
                await asyncio.sleep(delay)
            retry: list[_Item] = []
            if unknown:
                pending, held = await self._look_up(pending, unknown, batch)
                retry.extend(held)
            for chunk in _chunks(pending, self.connector.limits.batch_size):
                try:
                    results = await self._post(chunk)
                except PmsOutcomeUnknown as exc:
                    unknown.update(item.writeback_id for item in chunk)
                    retry.extend(chunk)
                    last_error = exc
                    continue
                except PmsUnavailable as exc:
                    retry.extend(chunk)
                    last_error = exc
                    continue
                for item, result in zip(chunk, results, strict=True):
                    if isinstance(result, PmsWrite):
                        self._posted(batch, item, result)
                        unknown.discard(item.writeback_id)
                    elif isinstance(result, PmsOutcomeUnknown):
                        unknown.add(item.writeback_id)
                        retry.append(item)
                        last_error = result
                    elif isinstance(result, PmsUnavailable):
                        retry.append(item)
                        last_error = result
                    else:
                        unknown.discard(item.writeback_id)
                        self._fail(batch, item, result.code, result.message)
            pending = retry
        now = utcnow()
        for item in pending:
            self._reschedule(batch, item, last_error, uncertain=item.writeback_id in unknown, now=now)

    async def _look_up(
        self, items: list[_Item], unknown: set[int], batch: _Batch
    ) -> tuple[list[_Item], list[_Item]]:
        """Find writes that may have reached the PMS.

        Returns the items to post now and the items held back because their lookup itself failed: an
        uncertain write is never posted blind.
        """
        to_post: list[_Item] = []
        held: list[_Item] = []
        for item in items:
            if item.writeback_id not in unknown:
                to_post.append(item)
                continue
            await self._keep_lease()
            try:
                await self.limiter.wait()
                found = await asyncio.wait_for(
                    self.connector.find_write(self._entry(item)), self.call_timeout
                )
            except (PmsError, TimeoutError):
                held.append(item)
                continue
            unknown.discard(item.writeback_id)
            if found is not None:
                self._posted(batch, item, found)
            else:
                to_post.append(item)
        return to_post, held

    async def _post(self, chunk: Sequence[_Item]) -> Sequence[WriteResult]:
        first = chunk[0].decision
        await self._keep_lease()
        await self.limiter.wait()
        try:
            if isinstance(first, PostPayment):
                entries = [self._payment_entry(item) for item in chunk]
                call = self.connector.post_payments(entries)
            else:
                reversals = [self._reversal_entry(item) for item in chunk]
                call = self.connector.post_reversals(reversals)
            return await asyncio.wait_for(call, self.call_timeout)
        except TimeoutError:
            raise PmsOutcomeUnknown(f"the PMS did not answer within {self.call_timeout:.0f} s") from None

    def _entry(self, item: _Item) -> PaymentEntry | ReversalEntry:
        if isinstance(item.decision, PostPayment):
            return self._payment_entry(item)
        return self._reversal_entry(item)

    def _payment_entry(self, item: _Item) -> PaymentEntry:
        decision = item.decision
        assert isinstance(decision, PostPayment) and item.account_number is not None
        return PaymentEntry(
            idempotency_key=idempotency_key(item.writeback_id),
            account_number=item.account_number,
            amount_cents=decision.amount_cents,
            fee_cents=decision.fee_cents,
            posting_date=decision.posting_date,
            payment_type=item.txn.payment_type.value,
            note=f"{item.txn.payment_type.label} payment {item.txn.processor_ref} via ledgerlink",
        )

    def _reversal_entry(self, item: _Item) -> ReversalEntry:
        decision = item.decision
        assert isinstance(decision, PostReversal)
        return ReversalEntry(
            idempotency_key=idempotency_key(item.writeback_id),
            account_number=item.account_number or "",
            original_pms_ref=decision.original_pms_ref,
            amount_cents=decision.amount_cents,
            is_full=decision.is_full,
            posting_date=decision.posting_date,
            note=f"{item.txn.kind.value.title()} {item.txn.processor_ref} via ledgerlink",
            fee_cents=decision.fee_cents,
            original_account_number=item.original_account,
        )

    def _posted(self, batch: _Batch, item: _Item, write: PmsWrite) -> None:
        decision = item.decision
        assert isinstance(decision, PostPayment | PostReversal)
        batch.outcomes.append(
            _Outcome(item.writeback_id, POSTED, decision.category.value, pms_ref=write.pms_ref)
        )
        if isinstance(decision, PostReversal):
            key = decision.original_writeback_id
            batch.reversed_amounts[key] = batch.reversed_amounts.get(key, 0) + decision.amount_cents

    def _reschedule(
        self, batch: _Batch, item: _Item, error: PmsError | None, *, uncertain: bool, now: datetime
    ) -> None:
        message = error.message if error else "the PMS could not be reached"
        attempts = item.attempts + 1
        if attempts >= MAX_ATTEMPTS and not uncertain:
            self._fail(
                batch, item, LoadErrorCode.PMS_UNREACHABLE, f"gave up after {attempts} attempts: {message}"
            )
            return
        retry_after = error.retry_after if isinstance(error, PmsUnavailable) else None
        batch.outcomes.append(
            _Outcome(
                item.writeback_id,
                PENDING,
                ReportCategory.IN_ERROR.value,
                LoadErrorCode.PMS_UNREACHABLE.value,
                f"will retry: {message}",
                uncertain=uncertain,
                next_attempt_at=next_attempt_at(now, attempts, retry_after=retry_after),
            )
        )

    async def _record(self, batch: _Batch) -> None:
        if not batch.outcomes:
            return
        now = self._stored(WB.c.updated_at, utcnow())
        # Most outcomes are plain postings (built by `_posted` only): they get a statement of their own that
        # binds five values per row instead of twelve, the columns a posting clears written as SQL NULLs.
        posted = [
            {"wid": o.writeback_id, "category": o.category, "ref": o.pms_ref, "run": self.run_id, "now": now}
            for o in batch.outcomes
            if o.status == POSTED
        ]
        others = [
            {
                "wid": o.writeback_id,
                "status": o.status,
                "category": o.category,
                "code": o.error_code,
                "message": o.error_message,
                "ref": o.pms_ref,
                "uncertain": o.uncertain,
                "next_at": o.next_attempt_at,
                "amount": o.amount_cents,
                "skip": o.skip_reason,
                "run": self.run_id,
                "now": now,
            }
            for o in batch.outcomes
            if o.status != POSTED
        ]
        async with self.db.sessions.begin() as session:
            if posted:
                await session.execute(
                    update(WB)
                    .where(WB.c.id == bindparam("wid"))
                    .values(
                        status=POSTED,
                        category=bindparam("category"),
                        error_code=null(),
                        error_message=null(),
                        pms_ref=bindparam("ref"),
                        uncertain=false(),
                        next_attempt_at=null(),
                        skip_reason=null(),
                        last_run_id=bindparam("run"),
                        updated_at=bindparam("now", type_=STORED),
                    )
                    .execution_options(synchronize_session=False),
                    posted,
                )
            if others:
                await session.execute(
                    update(WB)
                    .where(WB.c.id == bindparam("wid"))
                    .values(
                        status=bindparam("status"),
                        category=bindparam("category"),
                        error_code=bindparam("code"),
                        error_message=bindparam("message"),
                        pms_ref=bindparam("ref"),
                        uncertain=bindparam("uncertain"),
                        next_attempt_at=bindparam("next_at"),
                        amount_cents=func.coalesce(
                            bindparam("amount", type_=BigInteger), WritebackRow.amount_cents
                        ),
                        skip_reason=bindparam("skip"),
                        last_run_id=bindparam("run"),
                        updated_at=bindparam("now", type_=STORED),
                    )
                    .execution_options(synchronize_session=False),
                    others,
                )
            if batch.reversed_amounts:
                await session.execute(
                    update(WB)
                    .where(WB.c.id == bindparam("wid"))
                    .values(reversed_cents=WB.c.reversed_cents + bindparam("amount"))
                    .execution_options(synchronize_session=False),
                    [{"wid": k, "amount": v} for k, v in batch.reversed_amounts.items()],
                )
            batch.alerts = await _new_alerts(session, batch.alerts)
            for item, code, message in batch.alerts:
                session.add(
                    Alert(
                        practice_id=self.practice.id,
                        connection_id=self.connection.id,
                        writeback_id=item.writeback_id,
                        code=code.value,
                        message=f"{item.txn.kind.value} {item.txn.processor_ref}: {message}",
                    )
                )
        await self._deliver_alerts(batch)

    async def _deliver_alerts(self, batch: _Batch) -> None:
        """Tell the office inside the PMS (a task, and a note on the patient). Best effort: the alert row
        stays undelivered in ledgerlink when the PMS cannot take it."""
        for item, code, message in batch.alerts:
            alert = PmsAlert(
                title=f"Payment not posted ({code.value})",
                message=f"{item.txn.processor_ref}: {message}. {code.explanation}",
                account_number=item.account_number if code is not LoadErrorCode.INVALID_PATIENT_ID else None,
            )
            try:
                await self.limiter.wait()
                await asyncio.wait_for(self.connector.raise_alert(alert), self.call_timeout)
            except (PmsError, TimeoutError):
                continue
            async with self.db.sessions.begin() as session:
                await session.execute(
                    update(Alert)
                    .where(Alert.writeback_id == item.writeback_id, Alert.delivered_to_pms.is_(False))
                    .values(delivered_to_pms=True)
                    .execution_options(synchronize_session=False)
                )


async def _new_alerts(
    session: AsyncSession, alerts: list[tuple[_Item, LoadErrorCode, str]]
) -> list[tuple[_Item, LoadErrorCode, str]]:
    """The alerts not raised before: a writeback retried and failing again for the same reason would
    otherwise leave the office a second task for one problem."""
    if not alerts:
        return alerts
    ids = [item.writeback_id for item, _, _ in alerts]
    rows = await session.execute(select(Alert.writeback_id, Alert.code).where(Alert.writeback_id.in_(ids)))
    raised = {(writeback_id, code) for writeback_id, code in rows}
    return [(item, code, m) for item, code, m in alerts if (item.writeback_id, code.value) not in raised]


def _chunks(items: list[_Item], size: int) -> list[list[_Item]]:
    """Chunks of one kind each (payments and reversals go through different calls)."""
    payments = [i for i in items if isinstance(i.decision, PostPayment)]
    reversals = [i for i in items if isinstance(i.decision, PostReversal)]
    out: list[list[_Item]] = []
    for group in (payments, reversals):
        out.extend(group[k : k + size] for k in range(0, len(group), size))
    return out


# --- queries ---------------------------------------------------------------------------------------------


async def enroll(session: AsyncSession, connection: Connection, practice: Practice) -> int:
    """Give every transaction of the practice that is new to this connection a pending writeback."""
    high = await session.scalar(
        select(func.max(TransactionRow.id)).where(TransactionRow.practice_id == practice.id)
    )
    if high is None or high <= connection.enrolled_through:
        return 0
    now = utcnow()
    source = (
        select(
            TransactionRow.id,
            TransactionRow.local_date,
            literal(connection.id),
            literal(PENDING),
            literal(0),
            literal(0),
            literal(0),
            literal(0),
            literal(False),
            literal(now, WritebackRow.created_at.type),
            literal(now, WritebackRow.updated_at.type),
        )
        .where(
            TransactionRow.practice_id == practice.id,
            TransactionRow.id > connection.enrolled_through,
            TransactionRow.id <= high,
        )
        .order_by(TransactionRow.id)
    )
    columns = [
        "transaction_id",
        "local_date",
        "connection_id",
        "status",
        "amount_cents",
        "fee_cents",
        "reversed_cents",
        "attempts",
        "uncertain",
        "created_at",
        "updated_at",
    ]
    result = await session.execute(insert(WritebackRow).from_select(columns, source))
    await session.execute(
        update(Connection).where(Connection.id == connection.id).values(enrolled_through=high)
    )
    connection.enrolled_through = high
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


DUE_STATUSES = (PENDING, IN_FLIGHT)


def _due_filter(connection_id: int, now: datetime, statuses: Sequence[str] = DUE_STATUSES) -> Any:
    return and_(
        WritebackRow.connection_id == connection_id,
        WritebackRow.status.in_(statuses),
        or_(WritebackRow.next_attempt_at.is_(None), WritebackRow.next_attempt_at <= now),
    )


async def _count_due(session: AsyncSession, connection_id: int, now: datetime) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(WritebackRow).where(_due_filter(connection_id, now))
        )
        or 0
    )


async def _claim(session: AsyncSession, connection_id: int, after_id: int, limit: int) -> list[_Item]:
    """The next `limit` due writebacks after `after_id`, in id order.

    One query per due status: with `status IN (...)` the due index cannot hand rows over in id order, so
    SQLite (and PostgreSQL before 17) would join and sort every remaining due row on each claim, which makes
    a long backlog quadratic. Per status, the index walks in id order and stops after `limit` rows.
    """
    now = utcnow()
    items: list[_Item] = []
    for status in DUE_STATUSES:
        items.extend(await _claim_status(session, connection_id, status, now, after_id, limit))
    items.sort(key=lambda item: item.writeback_id)
    return items[:limit]


async def _claim_status(
    session: AsyncSession, connection_id: int, status: str, now: datetime, after_id: int, limit: int
) -> list[_Item]:
    t = TransactionRow
    w = WritebackRow
    query = (
        select(
            w.id,
            w.status,
            w.uncertain,
            w.attempts,
            t.id,
            t.kind,
            t.payment_type,
            t.gross_cents,
            t.fee_cents,
            t.net_cents,
            t.occurred_at,
            t.processor_ref,
            t.original_id,
            t.original_ref,
            PatientAccount.account_number,
            w.amount_cents,
            w.fee_cents,
            w.posting_date,
        )
        .join(t, t.id == w.transaction_id)
        .outerjoin(
            PatientAccount,
            and_(PatientAccount.patient_id == t.patient_id, PatientAccount.connection_id == w.connection_id),
        )
        .where(_due_filter(connection_id, now, (status,)), w.id > after_id)
        .order_by(w.id)
        .limit(limit)
    )
    items = []
    connection = await session.connection()  # Core rows: the ORM adds nothing to plain columns but cost
    for row in await connection.execute(query):
        txn = Transaction(
            id=row[4],
            kind=TransactionKind(row[5]),
            payment_type=PaymentType(row[6]),
            gross_cents=row[7],
            fee_cents=row[8],
            net_cents=row[9],
            occurred_at=row[10],
            processor_ref=row[11],
            original_id=row[12],
        )
        account = row[14].strip() if row[14] else None
        items.append(
            _Item(
                row[0],
                row[1],
                bool(row[2]),
                row[3],
                txn,
                account or None,
                row[13],
                (row[15], row[16], row[17]),
            )
        )
    return items


async def _decide_batch(
    session: AsyncSession, connection_id: int, rules: WritebackRules, items: list[_Item]
) -> None:
    """Attach a decision to each item, resolving originals of refunds, voids and chargebacks."""
    await _resolve_late_originals(session, items)
    original_ids = {item.txn.original_id for item in items if item.txn.original_id is not None}
    originals: dict[int, tuple[Any, ...]] = {}
    if original_ids:
        rows = await session.execute(
            select(
                WritebackRow.transaction_id,
                WritebackRow.id,
                WritebackRow.status,
                WritebackRow.uncertain,
                WritebackRow.pms_ref,
                WritebackRow.amount_cents,
                WritebackRow.reversed_cents,
                WritebackRow.fee_cents,
                PatientAccount.account_number,
            )
            .join(TransactionRow, TransactionRow.id == WritebackRow.transaction_id)
            .outerjoin(
                PatientAccount,
                and_(
                    PatientAccount.patient_id == TransactionRow.patient_id,
                    PatientAccount.connection_id == WritebackRow.connection_id,
                ),
            )
            .where(WritebackRow.connection_id == connection_id, WritebackRow.transaction_id.in_(original_ids))
        )
        originals = {row[0]: tuple(row) for row in rows}
    unconfirmed = await _unconfirmed_reversals(session, connection_id, original_ids)

    cancelled: set[int] = set()
    reversing: set[int] = set()
    # Voids first, so a sale voided before posting is cancelled before this very batch could post it.
    ordered = sorted(items, key=lambda i: i.txn.kind is not TransactionKind.VOID)
    for item in ordered:
        if item.writeback_id in cancelled:
            continue
        original = None
        if item.txn.kind.reverses_original:
            row = originals.get(item.txn.original_id or -1)
            original = _original_posting(item, row)
            item.original_account = (row[8] or "").strip() if row is not None else ""
            if original.writeback_id is not None and original.writeback_id in reversing:
                item.decision = Defer("another reversal of the same payment is in this batch")
                continue
            if unconfirmed.get(item.txn.original_id or -1, set()) - {item.writeback_id}:
                # Its amount is not yet counted as reversed: deciding now could reverse the payment twice.
                item.decision = Defer(
                    "an earlier reversal of the same payment awaits confirmation from the PMS"
                )
                continue
        decision = decide(item.txn, rules, account_number=item.account_number, original=original)
        if item.maybe_written:
            decision = _as_attempted(item, decision)
        if isinstance(decision, PostReversal):
            reversing.add(decision.original_writeback_id)
        if isinstance(decision, Skip) and decision.cancels_original_writeback_id is not None:
            cancelled.add(decision.cancels_original_writeback_id)
        item.decision = decision
    for item in items:
        if item.writeback_id in cancelled:
            item.decision = Defer("cancelled by a void in this batch")  # recorded with the void's outcome


async def _unconfirmed_reversals(
    session: AsyncSession, connection_id: int, original_ids: set[int]
) -> dict[int, set[int]]:
    """Reversals whose last attempt may have reached the PMS, by the transaction id of their original.

    Two small queries on purpose: the reversals of these originals (index on `original_id`), then their
    writebacks on this connection (unique index on `transaction_id`). Joined in one statement, SQLite
    walks the connection's pending writebacks instead, which is the whole backlog early in a long run.
    """
    if not original_ids:
        return {}
    reversal_of: dict[int, int] = {}
    for txn_id, original_id in await session.execute(
        select(TransactionRow.id, TransactionRow.original_id).where(
            TransactionRow.original_id.in_(original_ids)
        )
    ):
        if original_id is not None:
            reversal_of[txn_id] = original_id
    rows = await session.execute(
        select(WritebackRow.transaction_id, WritebackRow.id).where(
            WritebackRow.transaction_id.in_(list(reversal_of)),
            WritebackRow.connection_id == connection_id,
            or_(
                WritebackRow.status == IN_FLIGHT,
                and_(WritebackRow.status.in_((PENDING, FAILED)), WritebackRow.uncertain.is_(True)),
            ),
        )
    )
    found: dict[int, set[int]] = {}
    for txn_id, writeback_id in rows:
        found.setdefault(reversal_of[txn_id], set()).add(writeback_id)
    return found


def _as_attempted(item: _Item, decision: Decision) -> Decision:
    """The decision for a writeback whose last attempt may be in the PMS: exactly what was attempted.

    The lookup that comes first matches what was written, and a repeat must be the same entry; amounts and
    dates decided afresh could differ (settings changed, another reversal was posted since).
    """
    amount, fee, posting_date = item.intent
    if isinstance(decision, PostPayment | PostReversal) and posting_date is not None and amount > 0:
        return dataclasses.replace(decision, amount_cents=amount, fee_cents=fee, posting_date=posting_date)
    if isinstance(decision, Fail | Skip):
        why = decision.message if isinstance(decision, Fail) else decision.reason.description
        return Fail(
            LoadErrorCode.MAY_BE_IN_PMS,
            f"an earlier attempt may be in the PMS, and it cannot be written again as it was: {why}",
            ReportCategory.IN_ERROR,
            amount or decision.amount_cents,
        )
    return decision


async def _resolve_late_originals(session: AsyncSession, items: list[_Item]) -> None:
    """A refund imported before its original: link it now if the original has arrived since."""
    missing = {
        item.original_ref: item for item in items if item.txn.original_id is None and item.original_ref
    }
    if not missing:
        return
    practice_id = await session.scalar(
        select(TransactionRow.practice_id).where(TransactionRow.id == items[0].txn.id)
    )
    rows = await session.execute(
        select(TransactionRow.processor_ref, TransactionRow.id).where(
            TransactionRow.practice_id == practice_id, TransactionRow.processor_ref.in_(list(missing))
        )
    )
    for ref, original_id in rows:
        for item in items:
            if item.original_ref == ref and item.txn.original_id is None:
                item.txn = dataclasses.replace(item.txn, original_id=original_id)
                await session.execute(
                    update(TransactionRow)
                    .where(TransactionRow.id == item.txn.id)
                    .values(original_id=original_id)
                )


def _original_posting(item: _Item, row: tuple[Any, ...] | None) -> OriginalPosting:
    if row is None:
        return OriginalPosting(OriginalState.UNKNOWN)
    _, wid, status, uncertain, pms_ref, amount, reversed_cents, fee, _account = row
    if status == POSTED:
        state = OriginalState.POSTED
    elif status in (SKIPPED, CLEARED):
        state = OriginalState.HANDLED_ELSEWHERE
    elif status == FAILED:
        state = OriginalState.NOT_YET_POSTED
    elif status == PENDING and not uncertain and item.txn.kind is TransactionKind.VOID:
        state = OriginalState.NOT_YET_POSTED  # a void cancels a sale that has not been written yet
    else:
        state = OriginalState.IN_FLIGHT
    return OriginalPosting(state, wid, pms_ref, amount, reversed_cents, fee_cents=fee)


async def _store_totals(
    session: AsyncSession, run_id: int, connection_id: int, window_start: date
) -> dict[str, list[int]]:
    """Aggregate the run's report in SQL: what this run wrote, plus what it found already done in its window."""
    w = WritebackRow
    own = await session.execute(
        select(w.category, func.count(), func.coalesce(func.sum(w.amount_cents), 0))
        .where(w.last_run_id == run_id)
        .group_by(w.category)
    )
    totals: dict[str, list[int]] = {}
    for category, count, total in own:
        key = category or ReportCategory.IN_ERROR.value
        totals.setdefault(key, [0, 0])
        totals[key][0] += int(count)
        totals[key][1] += int(total)
    earlier = await session.execute(
        select(w.status, w.category, func.count(), func.coalesce(func.sum(w.amount_cents), 0))
        .where(
            w.connection_id == connection_id,
            w.local_date >= window_start,
            or_(w.last_run_id.is_(None), w.last_run_id != run_id),
        )
        .group_by(w.status, w.category)
    )
    for status, category, count, total in earlier:
        if status in (POSTED, SKIPPED, CLEARED):
            key = ReportCategory.ALREADY_PROCESSED.value
        elif status == FAILED and category:
            key = category
        else:
            key = ReportCategory.IN_ERROR.value
        totals.setdefault(key, [0, 0])
        totals[key][0] += int(count)
        totals[key][1] += int(total)
    if totals:
        await session.execute(
            insert(SyncRunTotal),
            [{"run_id": run_id, "category": k, "count": c, "total_cents": t} for k, (c, t) in totals.items()],
        )
    return totals


async def _dry_run(
    db: Database, connection: Connection, practice: Practice, rules: WritebackRules, window_start: date
) -> SyncOutcome:
    """Decide everything due without writing to the PMS or keeping any change in the store."""
    counts: dict[ReportCategory, list[int]] = {}
    async with db.sessions() as session:
        try:  # one transaction, rolled back at the end: a dry run keeps nothing
            await enroll(session, connection, practice)
            cursor = 0
            while items := await _claim(session, connection.id, cursor, CLAIM_BATCH):
                cursor = items[-1].writeback_id
                await _decide_batch(session, connection.id, rules, items)
                for item in items:
                    decision = item.decision
                    if isinstance(decision, Defer) or decision is None:
                        continue
                    category = decision.category
                    if isinstance(decision, Fail) and decision.code is not LoadErrorCode.INVALID_PATIENT_ID:
                        category = ReportCategory.IN_ERROR
                    amount = decision.amount_cents
                    counts.setdefault(category, [0, 0])
                    counts[category][0] += 1
                    counts[category][1] += amount
            done = await session.execute(
                select(func.count(), func.coalesce(func.sum(WritebackRow.amount_cents), 0)).where(
                    WritebackRow.connection_id == connection.id,
                    WritebackRow.local_date >= window_start,
                    WritebackRow.status.in_((POSTED, SKIPPED, CLEARED)),
                )
            )
            count, total = done.one()
            counts[ReportCategory.ALREADY_PROCESSED] = [int(count), int(total)]
        finally:
            await session.rollback()
    report = SyncReport.from_totals((k, c, t) for k, (c, t) in counts.items())
    return SyncOutcome(None, report, dry_run=True)
