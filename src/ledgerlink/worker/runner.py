"""`ledgerlink worker`: instant and daily writeback for every connection, in as many processes as wanted.

Each pass takes due connections (worker/scheduler.py) up to the worker's free capacity and syncs each in
its own task, all sharing the store's group commits (engine/run_store.py). Exactly once does not depend on
the worker: a run holds its connection's lease, marks intent before every PMS write and looks up anything
left in flight, so a worker killed at any line leaves work that the next run of any worker finishes.

Shutdown (SIGTERM or SIGINT) stops taking connections, asks running syncs to end after the batch in hand,
and waits up to `grace` seconds for them; what is cut off after that is left in flight and looked up by
the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ledgerlink.clock import utcnow
from ledgerlink.connectors.base import PmsConnector
from ledgerlink.connectors.registry import open_connector
from ledgerlink.engine import lease
from ledgerlink.engine.rate_limit import RateLimiter
from ledgerlink.engine.sync import run_sync
from ledgerlink.log import get_logger
from ledgerlink.settings import Settings
from ledgerlink.store.db import Database
from ledgerlink.worker import scheduler
from ledgerlink.worker.scheduler import Job
from ledgerlink.worker.wakeups import Wakeups, listen

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    concurrency: int = 200  # connections synced at once by this process
    poll_interval: float | None = None  # full scan period; None: 0.2 s on SQLite, 5 s on PostgreSQL
    daily_check_interval: float = 15.0
    idle_backoff: float = 5.0  # a run that moved nothing: leave the connection until new work or this
    error_backoff_max: float = 300.0
    grace: float = 30.0  # seconds running syncs get to end on shutdown
    once: bool = False  # sync everything due now, then exit


@dataclass
class WorkerStats:
    runs: int = 0
    recorded: int = 0
    failures: int = 0
    by_trigger: dict[str, int] = field(default_factory=dict)


class _Backoff:
    """Connections not to take again before a moment (monotonic): after an error, or a run that moved
    nothing (work that waits on something else, such as a refund whose original is not posted yet)."""

    def __init__(self) -> None:
        self._until: dict[int, float] = {}
        self._errors: dict[int, int] = {}

    def blocked(self, practice_ids: set[int] | None, by_practice: dict[int, int]) -> set[int]:
        now = time.monotonic()
        for cid, until in list(self._until.items()):
            # New work announced for the connection's practice lifts an idle back-off at once.
            if until <= now or (
                practice_ids and by_practice.get(cid) in practice_ids and cid not in self._errors
            ):
                del self._until[cid]
        return set(self._until)

    def idle(self, cid: int, seconds: float) -> None:
        self._errors.pop(cid, None)
        self._until[cid] = time.monotonic() + seconds

    def failed(self, cid: int, ceiling: float) -> float:
        count = self._errors[cid] = self._errors.get(cid, 0) + 1
        delay = min(ceiling, 2.0**count)
        self._until[cid] = time.monotonic() + delay
        return delay

    def succeeded(self, cid: int) -> None:
        self._errors.pop(cid, None)
        self._until.pop(cid, None)


class Worker:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        options: WorkerOptions | None = None,
        *,
        settings: Settings | None = None,
    ) -> None:
        """With `settings`, the worker also sends the alert digests (e-mail, webhooks) every
        `settings.digest_interval_seconds`: see ledgerlink/notify."""
        self.db = db
        self.settings = settings
        self.data_dir = data_dir
        self.options = options or WorkerOptions()
        self.poll_interval = self.options.poll_interval or (0.2 if db.is_sqlite else 5.0)
        self.stop = asyncio.Event()
        self.stats = WorkerStats()
        self.wakeups = Wakeups()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._practice_of: dict[int, int] = {}
        self._connectors: dict[int, tuple[str, PmsConnector]] = {}
        self._limiters: dict[int, tuple[float | None, RateLimiter]] = {}
        self._backoff = _Backoff()
        self._next_daily = 0.0
        self._backlog = False  # a pass found every slot taken: scan fully when one frees

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("worker.stopping", running=len(self._running))
        self.stop.set()
        self.wakeups.announce(None)

    async def run(self) -> WorkerStats:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop)
        listener = None if self.db.is_sqlite else asyncio.create_task(listen(self.db.url, self.wakeups))
        digests = None
        if self.settings is not None and not self.options.once:
            digests = asyncio.create_task(self._send_digests(self.settings))
        log.info("worker.started", concurrency=self.options.concurrency, poll_s=self.poll_interval)
        try:
            if self.options.once:
                await self._drain()
            else:
                while not self.stop.is_set():
                    announced = await self.wakeups.wait(self.poll_interval)
                    if not self.stop.is_set():
                        await self._pass(announced)
                    # Let the runs work: a wake-up already pending would otherwise make this loop spin
                    # without ever yielding to them.
                    await asyncio.sleep(0)
        finally:
            for helper in (listener, digests):
                if helper is not None:
                    helper.cancel()
                    await asyncio.gather(helper, return_exceptions=True)
            await self._shut_down()
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)
        log.info("worker.stopped", runs=self.stats.runs, recorded=self.stats.recorded)
        return self.stats

    async def _drain(self) -> None:
        """`--once`: passes until a pass finds nothing new and every run has ended."""
        self._next_daily = 0.0
        while not self.stop.is_set():
            started = await self._pass(None)
            if not started and not self._running:
                return
            if self._running:
                await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _pass(self, announced: set[int] | None) -> int:
        """Take what is due (announced practices only, unless a full scan) and start a sync for each."""
        free = self.options.concurrency - len(self._running)
        if free <= 0:
            self._backlog = True  # look again, fully, when a run ends (see _run)
            return 0
        skip = set(self._running) | self._backoff.blocked(announced, self._practice_of)
        now = utcnow()
        jobs: list[Job] = []
        async with self.db.sessions.begin() as session:
            jobs += await scheduler.take_instant(session, now, free, practice_ids=announced, skip=skip)
        if announced is None and time.monotonic() >= self._next_daily:
            self._next_daily = time.monotonic() + self.options.daily_check_interval
            async with self.db.sessions.begin() as session:
                jobs += await scheduler.take_daily(
                    session, now, free - len(jobs), skip=skip | {j.connection_id for j in jobs}
                )
        for job in jobs:
            self._practice_of[job.connection_id] = job.practice_id
            self._running[job.connection_id] = asyncio.create_task(self._run(job))
        return len(jobs)

    async def _run(self, job: Job) -> None:
        cid = job.connection_id
        try:
            connector = await self._connector(job)
            outcome = await run_sync(
                self.db,
                cid,
                connector,
                trigger=job.trigger,
                owner=job.owner,
                stop=self.stop,
                limiter=self._limiter(cid, connector),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one connection's trouble must not stop the others
            self.stats.failures += 1
            delay = self._backoff.failed(cid, self.options.error_backoff_max)
            await self._release(job)
            log.warning(
                "worker.run_failed",
                connection_id=cid,
                trigger=job.trigger,
                error=type(exc).__name__,
                detail=str(exc)[:300],
                retry_in_s=delay,
            )
        else:
            self.stats.runs += 1
            self.stats.recorded += outcome.recorded
            self.stats.by_trigger[job.trigger] = self.stats.by_trigger.get(job.trigger, 0) + 1
            if outcome.recorded:
                self._backoff.succeeded(cid)
            else:
                self._backoff.idle(cid, self.options.idle_backoff)
        finally:
            self._running.pop(cid, None)
            # Work may have arrived for this practice while its connection was busy, or for anyone while
            # every slot was taken.
            self.wakeups.announce(None if self._backlog else job.practice_id)
            self._backlog = False

    async def _send_digests(self, settings: Settings) -> None:
        """Every interval, the digests of new alerts; several workers may run this (notify/claim.py keeps
        a practice's digest to one sender at a time)."""
        from ledgerlink.notify.digest import send_digests

        while True:
            await asyncio.sleep(settings.digest_interval_seconds)
            try:
                summary = await send_digests(self.db, settings)
            except Exception as exc:  # the next round tries again; writeback goes on regardless
                log.warning("worker.digest_failed", error=type(exc).__name__)
                continue
            if summary.digests or summary.errors:
                log.info(
                    "worker.digests",
                    practices=len(summary.digests),
                    alerts=summary.alerts_notified,
                    failed_targets=len(summary.failures),
                )

    async def _connector(self, job: Job) -> PmsConnector:
        """One connector per connection for the worker's life (connections pools, caches), rebuilt when its
        settings change."""
        key = json.dumps(job.settings, sort_keys=True, default=str) + job.kind
        cached = self._connectors.get(job.connection_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        if cached is not None:
            with contextlib.suppress(Exception):
                await cached[1].close()
        connector = open_connector(job.kind, job.settings, self.data_dir)
        self._connectors[job.connection_id] = (key, connector)
        return connector

    def _limiter(self, cid: int, connector: PmsConnector) -> RateLimiter:
        """Per connection, shared by its back-to-back runs in this process."""
        rate = connector.limits.requests_per_second
        kept = self._limiters.get(cid)
        if kept is None or kept[0] != rate:
            kept = self._limiters[cid] = (rate, RateLimiter(rate))
        return kept[1]

    async def _release(self, job: Job) -> None:
        """A run that failed before or outside the engine (bad settings, unreachable store): free the lease
        and, for a daily run, its day."""
        with contextlib.suppress(Exception):
            async with self.db.sessions.begin() as session:
                await lease.release(session, job.connection_id, job.owner)
                if job.trigger == "daily":
                    await scheduler.give_back_daily(session, job)

    async def _shut_down(self) -> None:
        self.stop.set()
        running = list(self._running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=self.options.grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        for _, connector in self._connectors.values():
            with contextlib.suppress(Exception):
                await connector.close()
        self._connectors.clear()
