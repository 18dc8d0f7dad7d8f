"""Sync now: a sync run in this server process as a background task, for the dashboard's Today page and
`POST /v1/connections/{id}/sync` alike.

`start_sync` starts `run_sync` as an asyncio task of the server (like a patient import), holding the
connection's lease like any sync: when a worker or another sync already holds it, `SyncAlreadyRunning` is
raised and nothing is started. The run's id comes with its first progress report (or, for a run that ended
at once, with its outcome). Progress (done of total) lives in the process that runs the
sync (`progress_of`); any other process sees the same run as running without a count, from the database.

The tasks are kept on the application's state; `stop_syncs` (called by the application's shutdown) asks them
to end after the slice of writes in hand, so each records what it wrote and frees its lease.

An unexpected failure of the task (a database error, the connection deleted meanwhile) is logged with its
type only and raised to the caller as `SyncFailed`, a `LedgerlinkError` with a short message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import State

from ledgerlink.audit import record_audit
from ledgerlink.clock import utcnow
from ledgerlink.connectors.registry import open_connector
from ledgerlink.engine import lease
from ledgerlink.engine.sync import SyncOutcome, SyncProgress, run_sync
from ledgerlink.errors import Conflict, LedgerlinkError
from ledgerlink.log import get_logger
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection

log = get_logger(__name__)

START_TIMEOUT_S = 30.0  # how long `start_sync` waits for the run to be recorded
STOP_GRACE_S = 10.0  # how long a shutdown lets a sync finish the slice of writes in hand

_TASKS = "sync_tasks"  # on app.state: task -> its tracker, until the task ends
_PROGRESS = "sync_progress"  # on app.state: run id -> its tracker, while the run runs here


class PullConnection(Conflict):
    """A pull connection has nothing to run: its PMS downloads its payments itself."""

    code = "PULL_CONNECTION"


class SyncFailed(LedgerlinkError):
    """The sync task ended with an unexpected error before it could say which run it was."""

    code = "SYNC_FAILED"


@dataclass
class SyncTracker:
    """One Sync now in this process: its lease owner, and how far it is."""

    connection_id: int
    owner: str
    done: int = 0
    total: int = 0
    run_id: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: end after the slice in hand

    def update(self, step: SyncProgress) -> None:
        self.done, self.total, self.run_id = step.done, step.total, step.run_id
        self.started.set()


@dataclass(frozen=True, slots=True)
class StartedSync:
    run_id: int | None  # None only when the run was not recorded within START_TIMEOUT_S
    tracker: SyncTracker
    running: bool  # False: the run had already ended when `start_sync` returned


def _tasks(state: State) -> dict[asyncio.Task[SyncOutcome], SyncTracker]:
    if getattr(state, _TASKS, None) is None:
        setattr(state, _TASKS, {})
    tasks: dict[asyncio.Task[SyncOutcome], SyncTracker] = getattr(state, _TASKS)
    return tasks


def _progress(state: State) -> dict[int, SyncTracker]:
    if getattr(state, _PROGRESS, None) is None:
        setattr(state, _PROGRESS, {})
    progress: dict[int, SyncTracker] = getattr(state, _PROGRESS)
    return progress


def progress_of(state: State, run_id: int) -> SyncTracker | None:
    """How far run `run_id` is, when this process runs it; None otherwise (ended, or another process's)."""
    return _progress(state).get(run_id)


def lease_held(connection: Connection) -> bool:
    """Whether some sync holds the connection's lease now. A run still marked running whose lease has lapsed
    belongs to a process that died."""
    until = connection.sync_lease_until
    return connection.sync_owner is not None and until is not None and until > utcnow()


def _keep(state: State, task: asyncio.Task[SyncOutcome], tracker: SyncTracker) -> None:
    """Hold the task until it ends (the event loop keeps only a weak reference), then forget its progress."""
    tasks, progress = _tasks(state), _progress(state)
    tasks[task] = tracker

    def ended(done: asyncio.Task[SyncOutcome]) -> None:
        tasks.pop(done, None)
        if tracker.run_id is not None:
            progress.pop(tracker.run_id, None)
        error = None if done.cancelled() else done.exception()
        if error is not None and not isinstance(error, LedgerlinkError):
            log.error("sync_now.failed", connection_id=tracker.connection_id, error=type(error).__name__)

    task.add_done_callback(ended)


async def stop_syncs(state: State, grace_s: float = STOP_GRACE_S) -> None:
    """For the server's shutdown, before the database closes: ask the syncs this process runs to stop after
    the slice of writes in hand (each records what it wrote and frees its lease), then cancel any still
    running after `grace_s` (a cancelled run records itself failed; its in-flight writes are looked up in
    the PMS by the next run)."""
    running = _tasks(state)
    tasks = list(running)
    for task in tasks:
        running[task].stop.set()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_s)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run(db: Database, connection: Connection, data_dir: Path, tracker: SyncTracker) -> SyncOutcome:
    connector = open_connector(connection.kind, connection.settings, data_dir)
    try:
        return await run_sync(
            db, connection.id, connector, progress=tracker.update, owner=tracker.owner, stop=tracker.stop
        )
    finally:
        await connector.close()


def _outcome(task: asyncio.Task[SyncOutcome]) -> SyncOutcome:
    """The ended task's outcome; what stopped it as a `LedgerlinkError` (unexpected errors as `SyncFailed`)."""
    if task.cancelled():
        raise SyncFailed("the sync was stopped before it started: the server is shutting down")
    error = task.exception()
    if isinstance(error, LedgerlinkError):
        raise error
    if error is not None:  # logged (its type only) by the task's done callback
        raise SyncFailed(
            f"the sync stopped with an unexpected error ({type(error).__name__}); see the server log"
        )
    return task.result()


async def _started_run(task: asyncio.Task[SyncOutcome], tracker: SyncTracker) -> int | None:
    """The id of the run the task started; raises what stopped it from starting (`SyncAlreadyRunning`...).
    None when it is still starting after `START_TIMEOUT_S`."""
    waiter = asyncio.ensure_future(tracker.started.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if tracker.started.is_set():
        return tracker.run_id
    return _outcome(task).run_id if task.done() else None


async def start_sync(state: State, db: Database, connection: Connection, *, actor: str) -> StartedSync:
    """Start a sync of `connection` (detached from any session: the task outlives the caller's) in this
    process and return once its run is recorded. Audited as `sync.start` by `actor`.

    Raises `PullConnection`, `SyncAlreadyRunning` (a worker or another sync holds the lease), the
    connector's `InvalidInput` for settings it cannot use, or `SyncFailed`."""
    if connection.kind == PULL_KIND:
        raise PullConnection(
            f"{connection.name} is a pull connection: the PMS downloads its payments itself, so there is "
            "no sync to run",
            field="connection_id",
        )
    tracker = SyncTracker(connection.id, lease.new_owner_id())
    task = asyncio.create_task(
        _run(db, connection, state.data_dir, tracker), name=f"sync now {connection.id}"
    )
    _keep(state, task, tracker)
    run_id = await _started_run(task, tracker)
    running = not task.done()
    if run_id is not None and running:
        _progress(state)[run_id] = tracker
    async with db.sessions.begin() as session:
        await record_audit(
            session,
            connection.practice_id,
            actor,
            "sync.start",
            f"connection:{connection.id}",
            {"run": run_id},
        )
    return StartedSync(run_id, tracker, running)
