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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

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
from ledgerlink.domain.report import ReportCategory, SyncReport, failure_category
from ledgerlink.domain.rules import Defer, Fail, PostPayment, PostReversal, Skip, WritebackRules
from ledgerlink.engine import lease
from ledgerlink.engine.claims import claim, decide_batch
from ledgerlink.engine.rate_limit import RateLimiter
from ledgerlink.engine.retry_policy import IN_RUN_DELAYS, MAX_ATTEMPTS, next_attempt_at
from ledgerlink.engine.run_store import (
    ClaimRequest,
    FinishRequest,
    RecordRequest,
    StartRequest,
    SyncStore,
    enroll_many,
)
from ledgerlink.engine.work import (
    CLAIM_BATCH,
    CLEARED,
    FAILED,
    PENDING,
    POSTED,
    SKIPPED,
    WB,
    BatchResult,
    Item,
    Outcome,
    default_window_start,
    stored_value,
)
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.log import get_logger
from ledgerlink.practices import rules_for
from ledgerlink.store.db import Database
from ledgerlink.store.models import Alert, Connection, Practice, SyncRun
from ledgerlink.store.models import Writeback as WritebackRow

log = get_logger(__name__)


INTENT_SLICE_CHUNKS = 4  # PMS calls' worth of writes marked in flight at a time


def idempotency_key(writeback_id: int) -> str:
    """The key that travels into the PMS record. Stable for the writeback's whole life."""
    return f"ll-wb-{writeback_id}"


@dataclass(frozen=True, slots=True)
class SyncProgress:
    done: int
    total: int
    run_id: int = 0  # the run being reported on (recorded before the first report)


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    run_id: int | None
    report: SyncReport
    dry_run: bool
    recorded: int = 0  # writebacks whose outcome this run recorded (0: the run moved nothing)


async def run_sync(
    db: Database,
    connection_id: int,
    connector: PmsConnector,
    *,
    since: date | None = None,
    dry_run: bool = False,
    trigger: str = "on_demand",
    progress: Callable[[SyncProgress], None] | None = None,
    owner: str | None = None,
    stop: asyncio.Event | None = None,
    limiter: RateLimiter | None = None,
) -> SyncOutcome:
    """Write back everything due on one connection and return the run's sync report.

    `since` is the first local date the report covers (default: the practice's yesterday); earlier
    transactions that are due (retries, late arrivals) are still written.

    A worker passes the lease `owner` it already took for the connection, a `stop` event (set on
    shutdown: the run ends after the slice of writes in hand, recording everything it wrote) and the connection's
    `limiter`, which outlives the run so that back-to-back runs keep to the PMS's rate together.
    """
    if dry_run:
        async with db.sessions() as session:
            connection = await session.get(Connection, connection_id)
            if connection is None:
                raise LookupError(f"connection {connection_id} does not exist")
            practice = await session.get(Practice, connection.practice_id)
            assert practice is not None
        window_start = since or default_window_start(practice.timezone)
        return await _dry_run(db, connection, practice, rules_for(connection, practice), window_start)
    # The connection and its practice are read by the run's first store step, with everyone else's.
    return await _Sync(db, connection_id, connector, progress, owner, stop, limiter).run(since, trigger)


class _Sync:
    connection: Connection  # these three are known once the run has started
    practice: Practice
    rules: WritebackRules

    def __init__(
        self,
        db: Database,
        connection_id: int,
        connector: PmsConnector,
        progress: Callable[[SyncProgress], None] | None,
        owner: str | None = None,
        stop: asyncio.Event | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.db = db
        self.connection_id = connection_id
        self.connector = connector
        self.progress = progress
        self.store = SyncStore.of(db)
        self.owner = owner or lease.new_owner_id()
        self.stop = stop
        self.lease_renewed_at = utcnow()
        self.limiter = limiter or RateLimiter(connector.limits.requests_per_second)
        self.call_timeout = connector.limits.call_timeout_s
        self.run_id = 0
        self.done = 0
        self.total = 0

    async def run(self, since: date | None, trigger: str) -> SyncOutcome:
        started = await self.store.start.submit(
            StartRequest(self.connection_id, self.owner, trigger, since, self.progress is not None)
        )
        self.run_id, self.total = started.run_id, started.due
        self.connection, self.practice = started.connection, started.practice
        window_start = started.window_start
        self.lease_renewed_at = utcnow()
        self._report_progress()
        log.info("sync.started", run_id=self.run_id, connection_id=self.connection.id, due=self.total)
        try:
            self.rules = rules_for(self.connection, self.practice)
            await self._process_all()
            # One transaction ends the run: its totals, its status and the lease. The report is built from
            # the totals just stored rather than read back.
            totals = await self.store.finish.submit(
                FinishRequest(self.run_id, self.connection.id, self.owner, window_start)
            )
        except BaseException as exc:
            log.error("sync.failed", run_id=self.run_id, error=type(exc).__name__)
            async with self.db.sessions.begin() as session:
                await session.execute(
                    update(SyncRun)
                    .where(SyncRun.id == self.run_id, SyncRun.status == "running")
                    .values(
                        status="failed", finished_at=utcnow(), error=f"{type(exc).__name__}: {exc}"[:2000]
                    )
                )
                await lease.release(session, self.connection.id, self.owner)
            raise
        report = SyncReport.from_totals((k, c, t) for k, (c, t) in totals.items())
        log.info("sync.finished", run_id=self.run_id, written=self.done)
        return SyncOutcome(self.run_id, report, dry_run=False, recorded=self.done)

    @property
    def _stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _report_progress(self) -> None:
        if self.progress is not None:
            self.progress(SyncProgress(self.done, max(self.total, self.done), self.run_id))

    async def _process_all(self) -> None:
        """Passes over the due writebacks until nothing is left or nothing more can move."""
        while True:
            cursor = 0
            recorded = deferred = 0
            while True:
                renew = self._lease_due()
                items = await self.store.claim.submit(
                    ClaimRequest(self.connection.id, self.owner, renew, cursor, self.rules)
                )
                if renew:
                    self.lease_renewed_at = utcnow()
                if not items:
                    break
                cursor = items[-1].writeback_id
                r, d = await self._process_batch(items)
                recorded += r
                deferred += d
                if self._stopping:
                    return  # shutting down: what is left stays due for the next run
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

    def _lease_due(self) -> bool:
        """A quarter of the lease has passed since it was last renewed.

        Renewing no more often than that leaves the lease at least three quarters of its length to run, so
        nobody else can have taken it in between; renewing on every claim would cost a statement per claim.
        """
        return utcnow() - self.lease_renewed_at >= timedelta(seconds=lease.LEASE_SECONDS / 4)

    async def _keep_lease(self) -> None:
        """Renew the lease before a PMS call once it is due (see `_lease_due`).

        A claim batch can outlast the lease (a slow or rate-limited PMS); an expired lease is free for
        another sync, which would take this one's in-flight writebacks for abandoned and post them too.
        """
        if not self._lease_due():
            return
        async with self.db.sessions.begin() as session:
            await self._renew_lease(session)

    async def _process_batch(self, items: list[Item]) -> tuple[int, int]:
        batch = BatchResult()
        writes: list[Item] = []
        deferred = 0
        now = utcnow()
        for item in items:
            decision = item.decision
            if isinstance(decision, Defer):
                deferred += 1
            elif isinstance(decision, Skip):
                batch.outcomes.append(
                    Outcome(
                        item.writeback_id,
                        SKIPPED,
                        decision.category.value,
                        amount_cents=decision.amount_cents,
                        skip_reason=decision.reason.value,
                    )
                )
                if decision.cancels_original_writeback_id is not None:
                    batch.outcomes.append(
                        Outcome(
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

        # Intent is marked a slice at a time: a shutdown stops between slices with the rest never touched
        # (still plainly pending), and fewer writes are uncertain if the process dies mid-batch.
        # Each slice's outcomes are recorded as soon as it is written, with the decisions above in the first.
        recorded = 0
        for written in _chunks(writes, self.connector.limits.batch_size * INTENT_SLICE_CHUNKS):
            if self._stopping:
                break
            await self._mark_in_flight(written, now)
            await self._write(written, batch)
            recorded += await self._record_progress(batch)
            batch = BatchResult()
        if batch.outcomes:
            recorded += await self._record_progress(batch)
        return recorded, deferred

    async def _record_progress(self, batch: BatchResult) -> int:
        await self._record(batch)
        self.done += len(batch.outcomes)
        self._report_progress()
        return len(batch.outcomes)

    def _fail(
        self,
        batch: BatchResult,
        item: Item,
        code: LoadErrorCode,
        message: str,
        amount_cents: int | None = None,
        uncertain: bool = False,
    ) -> None:
        """Record a failure; `uncertain` keeps the mark that makes a later Retry look the write up first."""
        category = failure_category(code)
        batch.outcomes.append(
            Outcome(
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

    async def _mark_in_flight(self, writes: list[Item], now: datetime) -> None:
        stored_now = stored_value(self.db, WB.c.updated_at, now)
        stored_dates: dict[date, Any] = {}
        params = []
        for item in writes:
            decision = item.decision
            assert isinstance(decision, PostPayment | PostReversal)
            day = decision.posting_date
            if day not in stored_dates:
                stored_dates[day] = stored_value(self.db, WB.c.posting_date, day)
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
        await self.store.intent.submit(params)

    async def _write(self, writes: list[Item], batch: BatchResult) -> None:
        """Post the batch, looking up uncertain ones first, retrying briefly, then scheduling for later."""
        pending = list(writes)
        unknown: set[int] = {item.writeback_id for item in writes if item.maybe_written}
        last_error: PmsError | None = None
        for delay in (0.0, *IN_RUN_DELAYS):
            if not pending:
                return
            if delay:
                await asyncio.sleep(delay)
            retry: list[Item] = []
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
        self, items: list[Item], unknown: set[int], batch: BatchResult
    ) -> tuple[list[Item], list[Item]]:
        """Find writes that may have reached the PMS.

        Returns the items to post now and the items held back because their lookup itself failed: an
        uncertain write is never posted blind.
        """
        to_post: list[Item] = []
        held: list[Item] = []
        for item in items:
            if item.writeback_id not in unknown:
                to_post.append(item)
                continue
            await self._keep_lease()
            try:
                await self.limiter.wait()
                async with asyncio.timeout(self.call_timeout):
                    found = await self.connector.find_write(self._entry(item))
            except (PmsError, TimeoutError):
                held.append(item)
                continue
            unknown.discard(item.writeback_id)
            if found is not None:
                self._posted(batch, item, found)
            else:
                to_post.append(item)
        return to_post, held

    async def _post(self, chunk: Sequence[Item]) -> Sequence[WriteResult]:
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
            async with asyncio.timeout(self.call_timeout):  # no task per call, unlike wait_for
                return await call
        except TimeoutError:
            raise PmsOutcomeUnknown(f"the PMS did not answer within {self.call_timeout:.0f} s") from None

    def _entry(self, item: Item) -> PaymentEntry | ReversalEntry:
        if isinstance(item.decision, PostPayment):
            return self._payment_entry(item)
        return self._reversal_entry(item)

    def _payment_entry(self, item: Item) -> PaymentEntry:
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

    def _reversal_entry(self, item: Item) -> ReversalEntry:
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

    def _posted(self, batch: BatchResult, item: Item, write: PmsWrite) -> None:
        decision = item.decision
        assert isinstance(decision, PostPayment | PostReversal)
        batch.outcomes.append(
            Outcome(item.writeback_id, POSTED, decision.category.value, pms_ref=write.pms_ref)
        )
        if isinstance(decision, PostReversal):
            key = decision.original_writeback_id
            batch.reversed_amounts[key] = batch.reversed_amounts.get(key, 0) + decision.amount_cents

    def _reschedule(
        self, batch: BatchResult, item: Item, error: PmsError | None, *, uncertain: bool, now: datetime
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
            Outcome(
                item.writeback_id,
                PENDING,
                ReportCategory.IN_ERROR.value,
                LoadErrorCode.PMS_UNREACHABLE.value,
                f"will retry: {message}",
                uncertain=uncertain,
                next_attempt_at=next_attempt_at(now, attempts, retry_after=retry_after),
            )
        )

    async def _record(self, batch: BatchResult) -> None:
        if not batch.outcomes:
            return
        batch.alerts = await self.store.record.submit(
            RecordRequest(self.run_id, self.practice.id, self.connection.id, batch)
        )
        await self._deliver_alerts(batch)

    async def _deliver_alerts(self, batch: BatchResult) -> None:
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
                async with asyncio.timeout(self.call_timeout):
                    await self.connector.raise_alert(alert)
            except (PmsError, TimeoutError):
                continue
            async with self.db.sessions.begin() as session:
                await session.execute(
                    update(Alert)
                    .where(Alert.writeback_id == item.writeback_id, Alert.delivered_to_pms.is_(False))
                    .values(delivered_to_pms=True)
                    .execution_options(synchronize_session=False)
                )


def _chunks(items: list[Item], size: int) -> list[list[Item]]:
    """Chunks of one kind each (payments and reversals go through different calls)."""
    payments = [i for i in items if isinstance(i.decision, PostPayment)]
    reversals = [i for i in items if isinstance(i.decision, PostReversal)]
    out: list[list[Item]] = []
    for group in (payments, reversals):
        out.extend(group[k : k + size] for k in range(0, len(group), size))
    return out


async def _dry_run(
    db: Database, connection: Connection, practice: Practice, rules: WritebackRules, window_start: date
) -> SyncOutcome:
    """Decide everything due without writing to the PMS or keeping any change in the store."""
    counts: dict[ReportCategory, list[int]] = {}
    async with db.sessions() as session:
        try:  # one transaction, rolled back at the end: a dry run keeps nothing
            await enroll_many(session, [connection.id])
            cursor = 0
            while items := await claim(session, connection.id, cursor, CLAIM_BATCH):
                cursor = items[-1].writeback_id
                await decide_batch(session, connection.id, rules, items)
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
