"""The store side of sync runs, batched across all the syncs one process runs at once.

Every step a sync takes in the store (start, claim, mark intents, record outcomes, finish) goes through a
`Coalescer` (coalesce.py): the syncs that ask at the same moment share one transaction, and each step is
written to cost a few statements for the whole batch (executemany, `IN` lists), not a few per sync. A sync
running alone takes the same steps in batches of one. What each step commits, and in what order relative to
the PMS writes, is the same either way; see the module docstring of sync.py for why that order gives
exactly once.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Table,
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

from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory
from ledgerlink.domain.rules import WritebackRules
from ledgerlink.engine import lease
from ledgerlink.engine.claims import claim_many, count_due, decide_batch, new_alerts
from ledgerlink.engine.coalesce import Coalescer
from ledgerlink.engine.work import (
    CLAIM_BATCH,
    CLEARED,
    FAILED,
    IN_FLIGHT,
    PENDING,
    POSTED,
    SKIPPED,
    STORED,
    WB,
    BatchResult,
    Item,
    default_window_start,
    stored_value,
)
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.store.db import Database
from ledgerlink.store.ingest_lock import try_hold_for_enrolment
from ledgerlink.store.models import Alert, Connection, Practice, SyncRun, SyncRunTotal
from ledgerlink.store.models import Transaction as TransactionRow
from ledgerlink.store.models import Writeback as WritebackRow

_RUNS = cast(Table, SyncRun.__table__)
_CONNECTIONS = cast(Table, Connection.__table__)
_ALERTS = cast(Table, Alert.__table__)

Alerts = list[tuple[Item, LoadErrorCode, str]]


@dataclass(frozen=True, slots=True)
class StartRequest:
    connection_id: int
    owner: str
    trigger: str
    since: date | None  # the report's first local date; None for the practice's yesterday
    count_due: bool  # only a progress bar needs the number due; not worth a query otherwise


@dataclass(frozen=True, slots=True)
class Started:
    run_id: int
    due: int
    connection: Connection
    practice: Practice
    window_start: date


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    connection_id: int
    owner: str
    renew_lease: bool
    after_id: int
    rules: WritebackRules


@dataclass(frozen=True, slots=True)
class RecordRequest:
    run_id: int
    practice_id: int
    connection_id: int
    batch: BatchResult


@dataclass(frozen=True, slots=True)
class FinishRequest:
    run_id: int
    connection_id: int
    owner: str
    window_start: date


Totals = dict[str, list[int]]  # report category -> [count, total cents]

_STORES: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Database, SyncStore]
] = weakref.WeakKeyDictionary()


class SyncStore:
    """One per database and event loop: the coalescers of the steps, and the batch handlers behind them."""

    def __init__(self, db: Database) -> None:
        self._db = weakref.ref(
            db
        )  # the registry holds stores weakly by database; this must not keep it alive
        self.start: Coalescer[StartRequest, Started] = Coalescer(self._start)
        self.claim: Coalescer[ClaimRequest, list[Item]] = Coalescer(self._claim)
        self.intent: Coalescer[list[dict[str, Any]], None] = Coalescer(self._intent)
        self.record: Coalescer[RecordRequest, Alerts] = Coalescer(self._record)
        self.finish: Coalescer[FinishRequest, Totals] = Coalescer(self._finish)

    @classmethod
    def of(cls, db: Database) -> SyncStore:
        """The store of `db` on the running loop (a coalescer's batches run as tasks of one loop)."""
        per_db = _STORES.setdefault(asyncio.get_running_loop(), weakref.WeakKeyDictionary())
        store = per_db.get(db)
        if store is None:
            store = per_db[db] = cls(db)
        return store

    @property
    def db(self) -> Database:
        db = self._db()
        if db is None:
            raise RuntimeError("the database of this sync store was closed and collected")
        return db

    # --- start ----------------------------------------------------------------------------------------

    async def _start(self, requests: Sequence[StartRequest]) -> list[Started | BaseException]:
        """Take the leases, fail the runs whose process died, open a run each, and enrol new transactions."""
        results: list[Started | BaseException | None] = [None] * len(requests)
        async with self.db.sessions.begin() as session:
            now = utcnow()
            rows = await session.execute(
                select(Connection, Practice)
                .join(Practice, Practice.id == Connection.practice_id)
                .where(Connection.id.in_({r.connection_id for r in requests}))
            )
            found = {connection.id: (connection, practice) for connection, practice in rows}
            holders = await lease.acquire_many(
                session, [(r.connection_id, r.owner) for r in requests if r.connection_id in found]
            )
            live: list[int] = []
            windows: dict[int, date] = {}
            for i, request in enumerate(requests):
                holder = holders.get(request.connection_id)
                if holder is None:
                    results[i] = LookupError(f"connection {request.connection_id} does not exist")
                    continue
                if holder != request.owner:
                    try:  # held by someone else: free if its process is gone, else SyncAlreadyRunning
                        await lease.acquire(session, request.connection_id, request.owner)
                    except SyncAlreadyRunning as exc:
                        results[i] = exc
                        continue
                live.append(i)
                timezone = found[request.connection_id][1].timezone
                windows[i] = request.since or default_window_start(timezone)
            if live:
                connection = await session.connection()
                ids = [requests[i].connection_id for i in live]
                # With the lease held, a run of the connection still marked running is one whose process died.
                await connection.execute(
                    update(_RUNS)
                    .where(_RUNS.c.connection_id.in_(ids), _RUNS.c.status == "running")
                    .values(status="failed", finished_at=now, error="interrupted: the sync process died")
                )
                created = await connection.execute(
                    insert(_RUNS).returning(_RUNS.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "connection_id": requests[i].connection_id,
                            "trigger": requests[i].trigger,
                            "status": "running",
                            "dry_run": False,
                            "since_date": windows[i],
                            "started_at": now,
                        }
                        for i in live
                    ],
                )
                run_ids = list(created.scalars())
                await enroll_many(session, ids)
                for i, run_id in zip(live, run_ids, strict=True):
                    request = requests[i]
                    due = await count_due(session, request.connection_id, now) if request.count_due else 0
                    connection_row, practice = found[request.connection_id]
                    results[i] = Started(run_id, due, connection_row, practice, windows[i])
        return [r if r is not None else RuntimeError("not started") for r in results]

    # --- claim ----------------------------------------------------------------------------------------

    async def _claim(self, requests: Sequence[ClaimRequest]) -> list[list[Item] | BaseException]:
        """The next due writebacks of each connection, decided; a sync that lost its lease gets an error."""
        results: list[list[Item] | BaseException] = []
        async with self.db.sessions.begin() as session:
            lost = await lease.renew_many(
                session, [(r.connection_id, r.owner) for r in requests if r.renew_lease]
            )
            live = [r for r in requests if r.connection_id not in lost]
            claimed = await claim_many(session, [(r.connection_id, r.after_id) for r in live], CLAIM_BATCH)
            for request in requests:
                if request.connection_id in lost:
                    results.append(
                        SyncAlreadyRunning(
                            "this sync lost the connection's lease to another one and stopped before "
                            "writing more"
                        )
                    )
                    continue
                items = claimed[request.connection_id]
                await decide_batch(session, request.connection_id, request.rules, items)
                results.append(items)
        return results

    # --- intents and outcomes -------------------------------------------------------------------------

    async def _intent(self, requests: Sequence[list[dict[str, Any]]]) -> list[None]:
        """Mark writebacks in flight with the amount, fee and date about to be written (see `intent_params`)."""
        params = [row for rows in requests for row in rows]
        if params:
            async with self.db.sessions.begin() as session:
                connection = await session.connection()
                await connection.execute(
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
                    ),
                    params,
                )
        return [None] * len(requests)

    async def _record(self, requests: Sequence[RecordRequest]) -> list[Alerts]:
        """Store the outcomes of the batches; returns each batch's alerts that are new (to tell the office)."""
        now = stored_value(self.db, WB.c.updated_at, utcnow())
        posted: list[dict[str, Any]] = []
        others: list[dict[str, Any]] = []
        reversed_cents: dict[int, int] = {}
        for request in requests:
            for o in request.batch.outcomes:
                if o.status == POSTED:
                    # Most outcomes are plain postings: a statement of their own binds five values per row
                    # instead of twelve, the columns a posting clears written as SQL NULLs.
                    posted.append(
                        {
                            "wid": o.writeback_id,
                            "category": o.category,
                            "ref": o.pms_ref,
                            "run": request.run_id,
                        }
                    )
                else:
                    others.append(
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
                            "run": request.run_id,
                        }
                    )
            for original, cents in request.batch.reversed_amounts.items():
                reversed_cents[original] = reversed_cents.get(original, 0) + cents
        fresh: list[Alerts] = []
        async with self.db.sessions.begin() as session:
            connection = await session.connection()
            if posted:
                await connection.execute(
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
                        updated_at=literal(now, STORED),
                    ),
                    posted,
                )
            if others:
                await connection.execute(
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
                        amount_cents=func.coalesce(bindparam("amount", type_=BigInteger), WB.c.amount_cents),
                        skip_reason=bindparam("skip"),
                        last_run_id=bindparam("run"),
                        updated_at=literal(now, STORED),
                    ),
                    others,
                )
            if reversed_cents:
                await connection.execute(
                    update(WB)
                    .where(WB.c.id == bindparam("wid"))
                    .values(reversed_cents=WB.c.reversed_cents + bindparam("amount")),
                    [{"wid": k, "amount": v} for k, v in reversed_cents.items()],
                )
            raised = await new_alerts(session, [a for r in requests for a in r.batch.alerts])
            kept = {(item.writeback_id, code) for item, code, _ in raised}
            rows: list[dict[str, Any]] = []
            for request in requests:
                mine = [a for a in request.batch.alerts if (a[0].writeback_id, a[1]) in kept]
                fresh.append(mine)
                rows.extend(
                    {
                        "practice_id": request.practice_id,
                        "connection_id": request.connection_id,
                        "writeback_id": item.writeback_id,
                        "code": code.value,
                        "message": f"{item.txn.kind.value} {item.txn.processor_ref}: {message}",
                    }
                    for item, code, message in mine
                )
            if rows:
                await connection.execute(insert(_ALERTS), rows)
        return fresh

    # --- finish ---------------------------------------------------------------------------------------

    async def _finish(self, requests: Sequence[FinishRequest]) -> list[Totals]:
        """One transaction ends the runs: their totals, their status and their leases."""
        async with self.db.sessions.begin() as session:
            totals = await store_totals(session, requests)
            connection = await session.connection()
            await connection.execute(
                update(_RUNS)
                .where(_RUNS.c.id.in_([r.run_id for r in requests]))
                .values(status="done", finished_at=utcnow())
            )
            await lease.release_many(session, [(r.connection_id, r.owner) for r in requests])
        return [totals[r.run_id] for r in requests]


async def enroll_many(session: AsyncSession, connection_ids: Sequence[int]) -> None:
    """Give every transaction that is new to these connections (of their practice) a pending writeback.

    One statement for all: the transactions above each connection's `enrolled_through` up to the newest
    id seen now, which then becomes everyone's `enrolled_through`. While transactions are being stored
    (an import, an API request) nothing is enrolled this time: see store/ingest_lock.py.
    """
    if not await try_hold_for_enrolment(session):
        return
    high = await session.scalar(select(func.max(TransactionRow.id)))
    if high is None:
        return
    t = TransactionRow
    c = Connection
    now = utcnow()
    source = (
        select(
            t.id,
            t.local_date,
            c.id,
            literal(PENDING),
            literal(0),
            literal(0),
            literal(0),
            literal(0),
            literal(False),
            literal(now, WritebackRow.created_at.type),
            literal(now, WritebackRow.updated_at.type),
        )
        .select_from(c)
        .join(t, t.practice_id == c.practice_id)
        .where(c.id.in_(connection_ids), c.enrolled_through < high, t.id > c.enrolled_through, t.id <= high)
        .order_by(c.id, t.id)
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
    connection = await session.connection()
    await connection.execute(insert(WB).from_select(columns, source))
    await connection.execute(
        update(_CONNECTIONS)
        .where(_CONNECTIONS.c.id.in_(connection_ids), _CONNECTIONS.c.enrolled_through < high)
        .values(enrolled_through=high)
    )


async def store_totals(session: AsyncSession, requests: Sequence[FinishRequest]) -> dict[int, Totals]:
    """Aggregate each run's report in SQL: what the run wrote, plus what it found already done in its window.

    Two grouped queries for all the runs (the second once per distinct window start, usually one).
    """
    w = WritebackRow
    run_ids = [r.run_id for r in requests]
    totals: dict[int, Totals] = {run_id: {} for run_id in run_ids}

    def add(run_id: int, key: str, count: int, cents: int) -> None:
        entry = totals[run_id].setdefault(key, [0, 0])
        entry[0] += int(count)
        entry[1] += int(cents)

    own = await session.execute(
        select(w.last_run_id, w.category, func.count(), func.coalesce(func.sum(w.amount_cents), 0))
        .where(w.last_run_id.in_(run_ids))
        .group_by(w.last_run_id, w.category)
    )
    for run_id, category, count, cents in own:
        add(cast(int, run_id), category or ReportCategory.IN_ERROR.value, count, cents)
    by_window: dict[date, dict[int, int]] = {}
    for r in requests:
        by_window.setdefault(r.window_start, {})[r.connection_id] = r.run_id
    for window_start, run_of in by_window.items():
        earlier = await session.execute(
            select(
                w.connection_id,
                w.status,
                w.category,
                func.count(),
                func.coalesce(func.sum(w.amount_cents), 0),
            )
            .where(
                w.connection_id.in_(list(run_of)),
                w.local_date >= window_start,
                or_(w.last_run_id.is_(None), w.last_run_id.not_in(run_ids)),
            )
            .group_by(w.connection_id, w.status, w.category)
        )
        for connection_id, status, category, count, cents in earlier:
            if status in (POSTED, SKIPPED, CLEARED):
                key = ReportCategory.ALREADY_PROCESSED.value
            elif status == FAILED and category:
                key = category
            else:
                key = ReportCategory.IN_ERROR.value
            add(run_of[connection_id], key, count, cents)
    rows = [
        {"run_id": run_id, "category": k, "count": c, "total_cents": t}
        for run_id, run_totals in totals.items()
        for k, (c, t) in run_totals.items()
    ]
    if rows:
        await session.execute(insert(SyncRunTotal), rows)
    return totals
