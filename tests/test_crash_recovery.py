"""Exactly once under real crashes: a sync process is killed with SIGKILL and the next run must finish the job.

Each crash test runs the sync in a child process (tests/crash_worker.py). The sandbox connector's
`crash_after_writes` knob makes the child kill itself right after a PMS commit and before ledgerlink
records it, the worst moment for duplicates; other tests kill it from outside at a moment of our choosing.
Before recovering, every test checks that the crash really happened where it was meant to: the PMS holds
payments whose writebacks ledgerlink still shows `in_flight`, under a lease held by the dead process.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select

from ledgerlink.connectors.base import PaymentEntry, PmsOutcomeUnknown, WriteResult
from ledgerlink.connectors.registry import sandbox_settings
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings, open_sandbox_office
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine import lease
from ledgerlink.engine.sync import SyncOutcome, run_sync
from ledgerlink.errors import SyncAlreadyRunning
from ledgerlink.opendental.money import double_to_cents
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Patient, Practice, SyncRun, Writeback
from ledgerlink.store.models import Transaction as TransactionRow
from tests.conftest import make_practice
from tests.factories import add_patient, add_transaction, paid_cents, reversed_pay_num, sandbox_patient

WORKER = Path(__file__).with_name("crash_worker.py")
WORKER_TIMEOUT = 60.0
KILLED = -signal.SIGKILL
MARKER = re.compile(r"\[ll-wb-(\d+)\]")
SALE_FEE = 300


@dataclass
class Office:
    """A practice with one sandbox connection, its patients and its sales, as a crash test sets it up."""

    db: Database
    practice: Practice
    connection_id: int
    pms_path: Path
    patients: list[Patient]
    sale_refs: list[str] = field(default_factory=list)
    net_by_ref: dict[str, int] = field(default_factory=dict)
    patient_by_ref: dict[str, Patient] = field(default_factory=dict)
    account_by_patient: dict[int, int] = field(default_factory=dict)  # ledgerlink patient id -> PatNum

    async def add_sales(self, count: int) -> None:
        start = len(self.sale_refs)
        for i in range(start, start + count):
            ref = f"ch_{i}"
            patient = self.patients[i % len(self.patients)]
            gross = 10_000 + 37 * i  # distinct amounts, so a payment posted for the wrong sale shows
            await add_transaction(self.db, self.practice, ref, gross=gross, fee=SALE_FEE, patient=patient)
            self.sale_refs.append(ref)
            self.net_by_ref[ref] = gross - SALE_FEE
            self.patient_by_ref[ref] = patient

    async def add_reversal(self, ref: str, kind: str, original: str, gross: int, fee: int = 0) -> None:
        patient = self.patient_by_ref[original]
        await add_transaction(
            self.db, self.practice, ref, kind=kind, gross=gross, fee=fee, patient=patient, original=original
        )


async def open_office(
    db: Database, tmp_path: Path, *, patients: int, slug: str = "smile", **settings: object
) -> Office:
    practice, connection = await make_practice(db, slug=slug)
    pms_path = tmp_path / ("pms.db" if slug == "smile" else f"pms-{slug}.db")
    await change_settings(db, connection.id, path=str(pms_path), **settings)
    pms_office = open_sandbox_office(f"sqlite:///{pms_path}")
    office = Office(db, practice, connection.id, pms_path, [])
    try:
        for i in range(patients):
            account = sandbox_patient(pms_office, f"Doe{i}")
            patient = await add_patient(db, practice, connection, f"p{i}", account)
            office.patients.append(patient)
            office.account_by_patient[patient.id] = int(account)
    finally:
        pms_office.close()
    return office


async def change_settings(db: Database, connection_id: int, **changes: object) -> None:
    """Set (or, with None, remove) sandbox knobs in the connection's stored JSON settings."""
    async with db.sessions.begin() as session:
        connection = await session.get(Connection, connection_id)
        assert connection is not None
        settings = {**connection.settings, **changes}
        connection.settings = {k: v for k, v in settings.items() if v is not None}


# --- running syncs ----------------------------------------------------------------------------------------


async def start_worker(office: Office, cwd: Path, *more: Office) -> asyncio.subprocess.Process:
    """A worker syncing `office` (and `more`, all at once in one process)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        office.db.url,
        *(str(o.connection_id) for o in (office, *more)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
    )


@dataclass(frozen=True)
class WorkerResult:
    pid: int
    returncode: int
    stdout: str
    stderr: str

    def report(self) -> SyncReport:
        assert self.returncode == 0, self.stderr
        totals = json.loads(self.stdout.splitlines()[0])
        return SyncReport.from_totals((k, c, t) for k, (c, t) in totals.items())


async def finish_worker(process: asyncio.subprocess.Process) -> WorkerResult:
    """Wait (bounded) for a worker to end; a worker that hangs is killed and the test fails."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), WORKER_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"the sync worker did not end within {WORKER_TIMEOUT:.0f} s")
    assert process.returncode is not None
    return WorkerResult(process.pid, process.returncode, out.decode(), err.decode())


async def run_worker(office: Office, cwd: Path) -> WorkerResult:
    return await finish_worker(await start_worker(office, cwd))


async def stored_settings(office: Office, **overrides: object) -> SandboxSettings:
    """The sandbox settings stored on the connection, with `overrides` applied for this process only."""
    async with office.db.sessions() as session:
        connection = await session.get(Connection, office.connection_id)
        assert connection is not None
    return sandbox_settings({**connection.settings, **overrides}, office.pms_path.parent)


async def sync_here(office: Office, connector: SandboxConnector | None = None) -> SyncOutcome:
    """A sync in the test's own process, by default with the connector the stored settings describe."""
    connector = connector or SandboxConnector(await stored_settings(office))
    try:
        return await run_sync(office.db, office.connection_id, connector)
    finally:
        await connector.close()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WORKER_TIMEOUT
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"gave up after {WORKER_TIMEOUT:.0f} s waiting for {what}")
        await asyncio.sleep(0.005)


# --- looking at both sides --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PmsPayment:
    pay_num: int
    pat_num: int
    amount_cents: int
    refund_of: int  # the PayNum a reversal's note names (Open Dental has no column for it); 0 for a sale
    writeback_ids: tuple[int, ...]


def pms_payments(path: Path) -> list[PmsPayment]:
    """The sandbox's payments (Open Dental's `payment` table), read through a read-only connection (safe while
    a worker writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT PayNum, PatNum, PayAmt, PayNote FROM payment ORDER BY PayNum").fetchall()
    except sqlite3.OperationalError:  # the worker has not created the table yet
        return []
    finally:
        conn.close()
    return [
        PmsPayment(
            r[0],
            r[1],
            double_to_cents(r[2]),
            reversed_pay_num(r[3]),
            tuple(int(m) for m in MARKER.findall(r[3])),
        )
        for r in rows
    ]


@dataclass(frozen=True)
class WritebackState:
    id: int
    ref: str
    kind: str
    status: str
    pms_ref: str | None
    amount_cents: int
    reversed_cents: int


async def writeback_states(office: Office) -> dict[str, WritebackState]:
    """Every writeback of the connection, by the processor reference of its transaction."""
    async with office.db.sessions() as session:
        rows = await session.execute(
            select(
                Writeback.id,
                TransactionRow.processor_ref,
                TransactionRow.kind,
                Writeback.status,
                Writeback.pms_ref,
                Writeback.amount_cents,
                Writeback.reversed_cents,
            )
            .join(TransactionRow, TransactionRow.id == Writeback.transaction_id)
            .where(Writeback.connection_id == office.connection_id)
        )
        return {row[1]: WritebackState(*row) for row in rows}


async def lease_owner(office: Office) -> str | None:
    async with office.db.sessions() as session:
        return await session.scalar(
            select(Connection.sync_owner).where(Connection.id == office.connection_id)
        )


def held_by(owner: str | None, pid: int) -> bool:
    return owner is not None and owner.split(":")[1] == str(pid)


async def wait_for_lease(office: Office, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WORKER_TIMEOUT
    while not held_by(await lease_owner(office), process.pid):
        if loop.time() > deadline or process.returncode is not None:
            pytest.fail("the worker never held the connection's lease")
        await asyncio.sleep(0.01)


async def run_statuses(office: Office) -> list[tuple[str, str | None]]:
    async with office.db.sessions() as session:
        rows = await session.execute(
            select(SyncRun.status, SyncRun.error)
            .where(SyncRun.connection_id == office.connection_id)
            .order_by(SyncRun.id)
        )
        return [(status, error) for status, error in rows]


async def assert_killed_between_write_and_record(
    office: Office,
    worker: WorkerResult,
    refs: list[str],
    expected_written: int,
    *,
    require_in_flight: bool = True,
) -> tuple[int, int]:
    """The worker died by SIGKILL after committing `expected_written` PMS writes.

    A run marks intent and records outcomes a slice of writes at a time, so the writes of the slice in hand
    are in flight (written, not yet recorded) and earlier slices are recorded posted. Every write must be
    one or the other: a PMS payment that ledgerlink neither recorded nor marked would be posted again.
    `require_in_flight`: the kill came right after a PMS commit (the sandbox's own crash), so the slice in
    hand cannot have been recorded. Returns the count and cents of what the dead run recorded posted.
    """
    assert worker.returncode == KILLED, f"worker was not killed: {worker.returncode}\n{worker.stderr}"
    states = await writeback_states(office)
    ids = {states[ref].id: ref for ref in refs}
    written = [w for p in pms_payments(office.pms_path) for w in p.writeback_ids if w in ids]
    assert len(written) == expected_written
    assert len(set(written)) == expected_written  # the crash itself duplicated nothing
    in_flight = [w for w in written if states[ids[w]].status == "in_flight"]
    posted = {ref for ref in refs if states[ref].status == "posted"}
    assert len(in_flight) + len(posted) == expected_written
    assert posted == {ids[w] for w in written} - {ids[w] for w in in_flight}
    assert in_flight or not require_in_flight
    assert held_by(await lease_owner(office), worker.pid)  # the dead worker still holds the lease
    assert (await run_statuses(office))[-1] == ("running", None)
    return len(posted), sum(states[ref].amount_cents for ref in posted)


async def assert_exactly_once(office: Office, expected_reversed: dict[str, int] | None = None) -> None:
    """Every writeback posted, each with exactly one PMS payment that carries its key and matches it.

    `expected_reversed` is the amount each sale should have had reversed by its refunds and voids.
    """
    expected_reversed = expected_reversed or {}
    states = await writeback_states(office)
    by_id = {s.id: s for s in states.values()}
    payments = pms_payments(office.pms_path)
    carrying: dict[int, list[PmsPayment]] = {}
    for payment in payments:
        assert len(payment.writeback_ids) == 1, payment
        carrying.setdefault(payment.writeback_ids[0], []).append(payment)

    duplicates = {by_id[w].ref: [p.pay_num for p in ps] for w, ps in carrying.items() if len(ps) > 1}
    assert duplicates == {}
    assert {s.ref: s.status for s in states.values() if s.status != "posted"} == {}
    assert set(carrying) == set(by_id)
    assert len(payments) == len(states)

    for state in states.values():
        (payment,) = carrying[state.id]
        assert state.pms_ref == str(payment.pay_num), state
        if state.kind == "sale":
            assert payment.amount_cents == state.amount_cents == office.net_by_ref[state.ref]
            assert payment.pat_num == office.account_by_patient[office.patient_by_ref[state.ref].id]
            assert state.reversed_cents == expected_reversed.get(state.ref, 0), state
        else:
            assert payment.amount_cents == -state.amount_cents < 0, state
            assert payment.refund_of > 0

    pms_office = open_sandbox_office(f"sqlite:///{office.pms_path}")
    try:
        assert pms_office.integrity_problems() == []
        expected_balances: dict[int, int] = {}
        for ref in office.sale_refs:
            pat_num = office.account_by_patient[office.patient_by_ref[ref].id]
            net = office.net_by_ref[ref] - expected_reversed.get(ref, 0)
            expected_balances[pat_num] = expected_balances.get(pat_num, 0) + net
        assert {pat: paid_cents(pms_office, pat) for pat in expected_balances} == expected_balances
    finally:
        pms_office.close()


def line(report: SyncReport, category: ReportCategory) -> tuple[int, int]:
    found = report.line(category)
    return found.count, found.total_cents


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture
async def pg_db(postgres_url: str) -> AsyncIterator[Database]:
    database = await Database.open(postgres_url)
    try:
        yield database
    finally:
        await database.close()


# --- 1. killed between the PMS write and its record -------------------------------------------------------

SALES = 50
CRASH_POINTS = [
    pytest.param(batch, kill_after, id=f"batch{batch}-killed-after-write-{kill_after}")
    for batch in (1, 7)
    for kill_after in (1, 3, 7, 8, 20)
]


def writes_before_death(batch_size: int, kill_after: int, total: int) -> int:
    """The sandbox commits a whole batch, then dies once its count of writes reaches `kill_after`."""
    return min(math.ceil(kill_after / batch_size) * batch_size, total)


async def crash_then_recover_sales(
    db: Database, tmp_path: Path, batch_size: int, kill_after: int, *, recover_in_subprocess: bool
) -> None:
    office = await open_office(
        db, tmp_path, patients=10, batch_size=batch_size, crash_after_writes=kill_after
    )
    await office.add_sales(SALES)

    crashed = await run_worker(office, tmp_path)
    expected = writes_before_death(batch_size, kill_after, SALES)
    before = await assert_killed_between_write_and_record(office, crashed, office.sale_refs, expected)

    await change_settings(db, office.connection_id, crash_after_writes=None)
    if recover_in_subprocess:
        report = (await run_worker(office, tmp_path)).report()
    else:
        report = (await sync_here(office)).report
    net_total = sum(office.net_by_ref.values())
    assert line(report, ReportCategory.SALES) == (SALES - before[0], net_total - before[1])
    assert line(report, ReportCategory.IN_ERROR) == (0, 0)
    assert line(report, ReportCategory.ALREADY_PROCESSED) == before
    await assert_exactly_once(office)
    assert await lease_owner(office) is None
    assert await run_statuses(office) == [("failed", "interrupted: the sync process died"), ("done", None)]

    again = (await sync_here(office)).report
    assert line(again, ReportCategory.SALES) == (0, 0)
    assert line(again, ReportCategory.ALREADY_PROCESSED) == (SALES, net_total)
    await assert_exactly_once(office)


@pytest.mark.parametrize(("batch_size", "kill_after"), CRASH_POINTS)
async def test_sync_killed_after_pms_commit_before_record_posts_every_sale_exactly_once(
    sqlite_db: Database, tmp_path: Path, batch_size: int, kill_after: int
) -> None:
    await crash_then_recover_sales(sqlite_db, tmp_path, batch_size, kill_after, recover_in_subprocess=False)


@pytest.mark.postgres
async def test_sync_killed_after_pms_commit_before_record_posts_every_sale_exactly_once_on_postgres(
    pg_db: Database, tmp_path: Path
) -> None:
    await crash_then_recover_sales(pg_db, tmp_path, 7, 8, recover_in_subprocess=True)


# --- 2. killed from outside at an arbitrary moment --------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, 0.04, 0.15])
async def test_sync_killed_from_outside_mid_run_posts_every_sale_exactly_once(
    sqlite_db: Database, tmp_path: Path, delay: float
) -> None:
    sales = 150  # at >= 5 ms a write, the run outlasts the longest delay several times over
    office = await open_office(sqlite_db, tmp_path, patients=15, batch_size=1, latency_ms=5)
    await office.add_sales(sales)

    process = await start_worker(office, tmp_path)
    try:
        await wait_until(lambda: len(pms_payments(office.pms_path)) > 0, "the first PMS payment")
        await asyncio.sleep(delay)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        killed = await finish_worker(process)
    written = len(pms_payments(office.pms_path))
    assert 0 < written < sales, "the kill should land while the worker is still writing"
    before = await assert_killed_between_write_and_record(
        office, killed, office.sale_refs, written, require_in_flight=False
    )

    await change_settings(sqlite_db, office.connection_id, latency_ms=None)
    report = (await sync_here(office)).report
    assert line(report, ReportCategory.SALES) == (
        sales - before[0],
        sum(office.net_by_ref.values()) - before[1],
    )
    assert line(report, ReportCategory.ALREADY_PROCESSED) == before
    await assert_exactly_once(office)


async def test_worker_syncing_many_offices_killed_mid_run_posts_every_sale_exactly_once(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Four offices synced at once in one process share their store transactions (group commit); a kill
    at any moment leaves each office's writes recoverable on its own."""
    sales = 60
    offices = [
        await open_office(sqlite_db, tmp_path, patients=5, slug=f"office{n}", batch_size=1, latency_ms=5)
        for n in range(4)
    ]
    for office in offices:
        await office.add_sales(sales)
    process = await start_worker(offices[0], tmp_path, *offices[1:])
    try:
        await wait_until(
            lambda: all(len(pms_payments(o.pms_path)) > 0 for o in offices), "every office's first payment"
        )
        await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        killed = await finish_worker(process)
    assert killed.returncode == KILLED
    written = [len(pms_payments(o.pms_path)) for o in offices]
    assert all(0 < n < sales for n in written), written

    for office in offices:
        await change_settings(sqlite_db, office.connection_id, latency_ms=None)
    for office in offices:
        report = (await sync_here(office)).report
        # What the dead run recorded is Already Processed now; the rest is this run's.
        written_here, already = (
            line(report, ReportCategory.SALES),
            line(report, ReportCategory.ALREADY_PROCESSED),
        )
        assert written_here[0] + already[0] == sales
        assert written_here[1] + already[1] == sum(office.net_by_ref.values())
        await assert_exactly_once(office)


# --- 3. killed while refunds and voids are being written --------------------------------------------------

PARTIAL_REFUND = 2_000
SECOND_REFUND = 1_500


async def crash_during_reversals_then_recover(
    db: Database, tmp_path: Path, batch_size: int, kill_after: int
) -> None:
    office = await open_office(db, tmp_path, patients=6, batch_size=batch_size)
    await office.add_sales(12)
    first = (await sync_here(office)).report
    assert line(first, ReportCategory.SALES)[0] == 12

    expected_reversed: dict[str, int] = {}
    for i in range(4):  # partial refunds
        await office.add_reversal(f"re_{i}", "refund", f"ch_{i}", PARTIAL_REFUND)
        expected_reversed[f"ch_{i}"] = PARTIAL_REFUND
    for i in range(4, 7):  # voids of posted sales reverse the whole payment
        await office.add_reversal(f"vo_{i}", "void", f"ch_{i}", 10_000 + 37 * i, SALE_FEE)
        expected_reversed[f"ch_{i}"] = office.net_by_ref[f"ch_{i}"]
    await office.add_reversal("re_7", "refund", "ch_7", office.net_by_ref["ch_7"])  # a full refund
    expected_reversed["ch_7"] = office.net_by_ref["ch_7"]
    # Two refunds of one payment: the second waits for the first, so it is written in a second pass.
    await office.add_reversal("re_8a", "refund", "ch_8", PARTIAL_REFUND)
    await office.add_reversal("re_8b", "refund", "ch_8", SECOND_REFUND)
    expected_reversed["ch_8"] = PARTIAL_REFUND + SECOND_REFUND
    reversal_refs = ["re_0", "re_1", "re_2", "re_3", "vo_4", "vo_5", "vo_6", "re_7", "re_8a", "re_8b"]
    first_pass = len(reversal_refs) - 1

    await change_settings(db, office.connection_id, crash_after_writes=kill_after)
    crashed = await run_worker(office, tmp_path)
    expected = writes_before_death(batch_size, kill_after, first_pass)
    await assert_killed_between_write_and_record(office, crashed, reversal_refs, expected)
    assert sum(1 for p in pms_payments(office.pms_path) if p.amount_cents < 0) == expected

    await change_settings(db, office.connection_id, crash_after_writes=None)
    report = (await sync_here(office)).report
    refunds = sum(v for k, v in expected_reversed.items() if k not in ("ch_4", "ch_5", "ch_6"))
    voids = sum(office.net_by_ref[f"ch_{i}"] for i in (4, 5, 6))
    assert line(report, ReportCategory.REFUNDS) == (7, refunds)
    assert line(report, ReportCategory.VOIDS) == (3, voids)
    assert line(report, ReportCategory.IN_ERROR) == (0, 0)
    await assert_exactly_once(office, expected_reversed)

    states = await writeback_states(office)
    payments = {p.pay_num: p for p in pms_payments(office.pms_path)}
    for ref in reversal_refs:  # each reversal points at the payment of the sale it reverses
        reversal = payments[int(states[ref].pms_ref or 0)]
        original_ref = "ch_" + ref[3:].rstrip("ab")
        assert reversal.refund_of == int(states[original_ref].pms_ref or 0)


@pytest.mark.parametrize(
    ("batch_size", "kill_after"),
    [
        pytest.param(1, 1, id="first-reversal"),
        pytest.param(3, 2, id="mid-batch"),
        pytest.param(3, 9, id="end-of-first-pass"),
    ],
)
async def test_sync_killed_while_writing_refunds_and_voids_posts_each_reversal_exactly_once(
    sqlite_db: Database, tmp_path: Path, batch_size: int, kill_after: int
) -> None:
    await crash_during_reversals_then_recover(sqlite_db, tmp_path, batch_size, kill_after)


@pytest.mark.postgres
async def test_sync_killed_while_writing_refunds_and_voids_posts_each_reversal_exactly_once_on_postgres(
    pg_db: Database, tmp_path: Path
) -> None:
    await crash_during_reversals_then_recover(pg_db, tmp_path, 3, 2)


# --- 4. lost responses, no crash --------------------------------------------------------------------------


class LossCountingSandbox(SandboxConnector):
    """The sandbox, counting the payments whose write committed but whose answer was lost."""

    lost = 0

    async def post_payments(self, entries: Sequence[PaymentEntry]) -> Sequence[WriteResult]:
        try:
            return await super().post_payments(entries)
        except PmsOutcomeUnknown:
            self.lost += len(entries)
            raise


async def test_every_response_lost_still_posts_each_sale_once_in_one_run(
    sqlite_db: Database, tmp_path: Path
) -> None:
    office = await open_office(sqlite_db, tmp_path, patients=5, batch_size=5)
    await office.add_sales(20)
    lossy = LossCountingSandbox(await stored_settings(office, lost_response_rate=1.0, seed=7))

    report = (await sync_here(office, lossy)).report
    assert lossy.lost == 20  # every single write committed and then lost its answer
    assert line(report, ReportCategory.SALES) == (20, sum(office.net_by_ref.values()))
    assert line(report, ReportCategory.IN_ERROR) == (0, 0)
    await assert_exactly_once(office)

    again = (await sync_here(office)).report
    assert line(again, ReportCategory.ALREADY_PROCESSED)[0] == 20
    await assert_exactly_once(office)


# --- 5. one sync at a time --------------------------------------------------------------------------------


SALES_UNDER_LEASE = 25


async def test_second_sync_is_refused_while_a_live_sync_holds_the_lease(
    sqlite_db: Database, tmp_path: Path
) -> None:
    office = await open_office(sqlite_db, tmp_path, patients=5, batch_size=1, latency_ms=40)
    await office.add_sales(SALES_UNDER_LEASE)
    process = await start_worker(office, tmp_path)
    try:
        await wait_for_lease(office, process)
        with pytest.raises(SyncAlreadyRunning):
            await sync_here(office)
        assert held_by(await lease_owner(office), process.pid)  # the refused sync took nothing over
        assert len(pms_payments(office.pms_path)) < SALES_UNDER_LEASE, "the worker should still be writing"
    finally:
        worker = await finish_worker(process)

    assert line(worker.report(), ReportCategory.SALES)[0] == SALES_UNDER_LEASE
    assert await run_statuses(office) == [("done", None)]  # the refused sync left no run behind
    await assert_exactly_once(office)
    assert await lease_owner(office) is None
    again = (await sync_here(office)).report
    assert line(again, ReportCategory.ALREADY_PROCESSED)[0] == SALES_UNDER_LEASE


# --- 6. a long batch keeps its lease ----------------------------------------------------------------------


async def test_sync_whose_batch_outlasts_the_lease_keeps_it_and_posts_once(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One claim batch takes several lease lengths. Were the lease not renewed during the batch, a second
    # sync would find it expired, take it over, treat the first one's in-flight rows as abandoned and post
    # the ones not written yet while the first sync posts them as well.
    monkeypatch.setattr(lease, "LEASE_SECONDS", 1)
    office = await open_office(sqlite_db, tmp_path, patients=5, batch_size=1, latency_ms=25)
    await office.add_sales(80)
    slow = asyncio.create_task(sync_here(office))
    try:
        await wait_until(lambda: len(pms_payments(office.pms_path)) > 0, "the first PMS payment")
        await asyncio.sleep(1.5)
        assert not slow.done(), "the first sync should still be writing"
        fast = SandboxConnector(await stored_settings(office, latency_ms=0))
        with pytest.raises(SyncAlreadyRunning):
            await sync_here(office, fast)
    finally:
        first = await asyncio.wait_for(slow, WORKER_TIMEOUT)
    assert line(first.report, ReportCategory.SALES)[0] == 80
    await assert_exactly_once(office)
