"""Which connections have work now, and taking them: PostgreSQL is the only coordination between workers.

A worker takes a connection by writing its lease (see engine/lease.py) in the same transaction that found
the connection due. On PostgreSQL that transaction reads the candidates `FOR UPDATE SKIP LOCKED`: two
workers scanning at the same moment each skip the rows the other is taking instead of waiting for them or
taking them twice, and the lease written before commit keeps the connection theirs for the run. On SQLite
the database's single writer does the same job.

Instant connections are due when their practice has transactions they have not enrolled yet, or when they
have writebacks due now (pending, a retry whose time has come, or in flight after a crash). Daily
connections are due once per local day at their `daily_time` in the practice's time zone; `last_daily_on`
records the day, so whichever worker takes the run, the day gets one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import time_zone
from ledgerlink.engine import lease
from ledgerlink.engine.claims import due_filter
from ledgerlink.practices import PULL_KIND  # the PMS downloads these itself: no worker runs them
from ledgerlink.store.models import Connection, Practice, SyncRun
from ledgerlink.store.models import Transaction as TransactionRow

_C = cast(Table, Connection.__table__)


@dataclass(frozen=True, slots=True)
class Job:
    """A connection a worker has taken (its lease is held by `owner`) and is to sync now."""

    connection_id: int
    practice_id: int
    kind: str
    settings: dict[str, Any]
    trigger: str  # "instant" or "daily"
    owner: str
    daily_on: date | None = None  # the local day a daily run is for
    previous_daily_on: date | None = None


def _takeable(owner: str | None, until: datetime | None, now: datetime) -> bool:
    """Free, expired, or held by a process of this machine that is gone (killed workers free at once)."""
    return owner is None or until is None or until < now or lease.holder_is_dead(owner)


def _instant_query(now: datetime, practice_ids: Collection[int] | None, limit: int) -> Select[Any]:
    c, t = Connection, TransactionRow
    has_new = exists().where(t.practice_id == c.practice_id, t.id > c.enrolled_through)
    has_due = exists().where(due_filter(c.id, now))
    query = (
        select(c.id, c.practice_id, c.kind, c.settings, c.sync_owner, c.sync_lease_until)
        .where(c.timing == "instant", c.kind != PULL_KIND, or_(has_new, has_due))
        .order_by(c.id)
        .limit(limit)
    )
    if practice_ids is not None:
        query = query.where(c.practice_id.in_(sorted(practice_ids)))
    return query


async def take_instant(
    session: AsyncSession,
    now: datetime,
    capacity: int,
    *,
    practice_ids: Collection[int] | None = None,
    skip: Collection[int] = (),
) -> list[Job]:
    """Take up to `capacity` instant connections with work (only of `practice_ids` when given)."""
    if capacity <= 0:
        return []
    query = _instant_query(now, practice_ids, capacity + len(skip))
    rows = (await session.execute(await _locking(session, query))).all()
    picked = [
        Job(cid, pid, kind, settings, "instant", lease.new_owner_id())
        for cid, pid, kind, settings, owner, until in rows
        if cid not in skip and _takeable(owner, until, now)
    ][:capacity]
    return await _write_leases(session, picked, now, {r[0]: r[4] for r in rows})


async def take_daily(
    session: AsyncSession, now: datetime, capacity: int, *, skip: Collection[int] = ()
) -> list[Job]:
    """Take the daily connections whose local `daily_time` has passed today and whose day has no run yet.

    A daily run whose worker died (its run still marked running, its lease free) is taken again the same
    day, so a crash does not leave the day's writebacks until tomorrow.
    """
    if capacity <= 0:
        return []
    c = Connection
    interrupted = exists().where(
        SyncRun.connection_id == c.id, SyncRun.status == "running", SyncRun.trigger == "daily"
    )
    query = (
        select(
            c.id,
            c.practice_id,
            c.kind,
            c.settings,
            c.sync_owner,
            c.sync_lease_until,
            c.daily_time,
            c.last_daily_on,
            Practice.timezone,
            interrupted.label("interrupted"),
        )
        .join(Practice, Practice.id == c.practice_id)
        .where(c.timing == "daily", c.kind != PULL_KIND)
        .order_by(c.id)
    )
    picked: list[Job] = []
    holders: dict[int, str | None] = {}
    for cid, pid, kind, settings, owner, until, at, last_on, zone, was_interrupted in await session.execute(
        await _locking(session, query)
    ):
        local = now.astimezone(time_zone(zone))
        today = local.date()
        due_today = local.time() >= at and (last_on is None or last_on < today)
        if cid in skip or not _takeable(owner, until, now) or not (due_today or was_interrupted):
            continue
        holders[cid] = owner
        picked.append(Job(cid, pid, kind, settings, "daily", lease.new_owner_id(), today, last_on))
        if len(picked) >= capacity:
            break
    jobs = await _write_leases(session, picked, now, holders)
    if jobs:
        connection = await session.connection()
        await connection.execute(
            update(_C).where(_C.c.id == bindparam("cid")).values(last_daily_on=bindparam("day")),
            [{"cid": job.connection_id, "day": job.daily_on} for job in jobs],
        )
    return jobs


async def give_back_daily(session: AsyncSession, job: Job) -> None:
    """A daily run that failed before it wrote its day: make the day due again (after the worker's back-off)."""
    await session.execute(
        update(Connection)
        .where(Connection.id == job.connection_id, Connection.last_daily_on == job.daily_on)
        .values(last_daily_on=job.previous_daily_on)
        .execution_options(synchronize_session=False)
    )


async def _locking(session: AsyncSession, query: Select[Any]) -> Select[Any]:
    """On PostgreSQL, lock the candidate rows and skip those another worker is taking right now."""
    if (await session.connection()).dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True, of=Connection)
    return query


async def _write_leases(
    session: AsyncSession, jobs: Sequence[Job], now: datetime, seen_holders: dict[int, str | None]
) -> list[Job]:
    """Write each job's lease where the holder is still the one the scan saw; keep the jobs that got it."""
    if not jobs:
        return []
    until = now + timedelta(seconds=lease.LEASE_SECONDS)
    connection = await session.connection()
    await connection.execute(
        update(_C)
        .where(
            _C.c.id == bindparam("cid"),
            or_(_C.c.sync_owner.is_not_distinct_from(bindparam("seen")), _C.c.sync_lease_until < now),
        )
        .values(sync_owner=bindparam("owner"), sync_lease_until=until),
        [{"cid": j.connection_id, "seen": seen_holders.get(j.connection_id), "owner": j.owner} for j in jobs],
    )
    held = await lease.holders(session, [job.connection_id for job in jobs])
    return [job for job in jobs if held.get(job.connection_id) == job.owner]
