"""Whatever happens, in whatever order, the PMS ledger ends where a simple model of SPEC section 3 says.

Hypothesis draws a sequence of sales, refunds, voids, chargebacks and declines across a few patients,
with sync runs at arbitrary points against a sandbox PMS that refuses calls and loses answers. At the
end, after syncing until nothing is pending, each patient's ledger must equal the model's balance, no
writeback may appear twice in the PMS, and the PMS ledger must pass Open Dental's integrity checks.

The model: a sale posts its net amount; a void makes the sale count for nothing (cancelled before posting,
or its remainder reversed after); refunds and chargebacks reverse their amount, never more than what is
left of the sale; a decline posts nothing.

Each example runs in its own directory with its own SQLite store and sandbox PMS (function-scoped
fixtures would be shared between examples).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings, open_sandbox_office
from ledgerlink.engine import sync as sync_engine
from ledgerlink.engine.sync import run_sync
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.store.db import Database, migrate
from ledgerlink.store.models import Connection, Patient, Practice, Writeback
from tests.factories import add_patient, add_transaction, paid_cents, sandbox_patient

PATIENTS = 3
MARKER = re.compile(r"\[(ll-wb-\d+)\]")
MAX_DRAIN_RUNS = 40
EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --- what can happen -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sale:
    patient: int
    gross: int
    fee: int


@dataclass(frozen=True)
class Reversal:
    """A refund or chargeback of `amount`, or a void, of one earlier sale.

    As drawn, `sale` picks among the sales so far (modulo their number); `playable` turns it into the
    sale's position among all sales.
    """

    kind: str
    sale: int
    amount: int


@dataclass(frozen=True)
class Decline:
    patient: int
    gross: int


@dataclass(frozen=True)
class Sync:
    """A sync run against a PMS that refuses `failure_rate` of the calls and loses the answer to
    `lost_response_rate` of the writes it commits."""

    failure_rate: float = 0.0
    lost_response_rate: float = 0.0
    seed: int = 0


Step = Sale | Reversal | Decline | Sync

amounts = st.integers(min_value=100, max_value=20000)
sales = st.builds(
    lambda patient, gross, fee_percent: Sale(patient, gross, gross * fee_percent // 100),
    st.integers(0, PATIENTS - 1),
    amounts,
    st.integers(0, 5),
)
# Small sale numbers make several reversals of the same sale common.
reversal_kinds = st.sampled_from(["refund", "refund", "void", "chargeback"])
reversals = st.builds(Reversal, reversal_kinds, st.integers(0, 5), amounts)
declines = st.builds(Decline, st.integers(0, PATIENTS - 1), amounts)
seeds = st.integers(0, 2**16)
failure_rates = st.sampled_from([0.0, 0.3, 0.7])
drain_failure_rates = st.sampled_from([0.0, 0.2, 0.5])
reliable_syncs = st.builds(Sync, failure_rates, st.just(0.0), seeds)
lossy_syncs = st.builds(Sync, failure_rates, st.sampled_from([0.0, 0.5, 1.0]), seeds)
reliable_drains = st.builds(Sync, drain_failure_rates, st.just(0.0), seeds)
lossy_drains = st.builds(Sync, drain_failure_rates, st.sampled_from([0.0, 0.3, 0.6]), seeds)
batch_sizes = st.sampled_from([1, 3, 200])


dropping_syncs = st.builds(Sync, st.sampled_from([0.5, 0.7]), st.just(1.0), seeds)


@st.composite
def reversals_of_one_payment(draw: st.DrawFn) -> list[Step]:
    """One posted sale, then several reversals of it between syncs against a PMS that drops every answer."""
    gross = draw(amounts)
    reversal = st.builds(Reversal, reversal_kinds, st.just(0), st.integers(gross // 3, gross))
    tail = draw(st.lists(st.one_of(reversal, dropping_syncs), min_size=3, max_size=10))
    return [Sale(0, gross, 0), Sync(), *tail]


def plans(syncs: st.SearchStrategy[Sync]) -> st.SearchStrategy[list[Step]]:
    return st.lists(
        st.one_of(sales, sales, reversals, reversals, declines, syncs, syncs), min_size=1, max_size=20
    )


def playable(plan: list[Step], *, one_reversal_per_sale: bool = False) -> list[Step]:
    """The plan with each reversal naming its sale by position among all sales; reversals drawn before
    any sale (and, when asked, further reversals of an already reversed sale) are dropped."""
    result: list[Step] = []
    sales_so_far = 0
    reversed_sales: set[int] = set()
    for step in plan:
        if isinstance(step, Sale):
            sales_so_far += 1
        elif isinstance(step, Reversal):
            if not sales_so_far:
                continue
            step = replace(step, sale=step.sale % sales_so_far)
            if one_reversal_per_sale and step.sale in reversed_sales:
                continue
            reversed_sales.add(step.sale)
        result.append(step)
    return result


# --- the model -------------------------------------------------------------------------------------------


@dataclass
class ModelSale:
    patient: int
    net: int
    reversed: int = 0
    voided: bool = False

    @property
    def balance(self) -> int:
        return 0 if self.voided else max(0, self.net - self.reversed)


def expected_balances(plan: list[Step]) -> dict[int, int]:
    model: list[ModelSale] = []
    for step in plan:
        if isinstance(step, Sale):
            model.append(ModelSale(step.patient, step.gross - step.fee))
        elif isinstance(step, Reversal):
            if step.kind == "void":
                model[step.sale].voided = True
            else:
                model[step.sale].reversed += step.amount
    balances = dict.fromkeys(range(PATIENTS), 0)
    for sale in model:
        balances[sale.patient] += sale.balance
    return balances


# --- the real thing --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty store at the newest schema, copied for each example instead of migrating each time."""
    path = tmp_path_factory.mktemp("store-template") / "ledgerlink.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


class Office:
    """One practice with one sandbox connection and a few patients, in a directory of its own."""

    db: Database
    practice: Practice
    connection: Connection

    def __init__(self, workdir: Path, batch_size: int) -> None:
        self.workdir = workdir
        self.batch_size = batch_size
        self.ledger = open_sandbox_office(
            f"sqlite:///{workdir / 'pms.db'}"
        )  # the PMS side, read by the checks
        self.patients: list[Patient] = []
        self.pat_nums: list[int] = []
        self.sales: list[tuple[str, int]] = []  # reference and patient of each sale, in order

    async def open(self, template: Path) -> None:
        shutil.copyfile(template, self.workdir / "ledgerlink.db")
        self.db = await Database.open(f"sqlite+aiosqlite:///{self.workdir / 'ledgerlink.db'}")
        async with self.db.sessions.begin() as session:
            self.practice = await create_practice(
                session, slug="smile", name="Smile", timezone="America/Chicago"
            )
            self.connection = await add_connection(session, self.practice, name="pms", kind="sandbox")
        for n in range(PATIENTS):
            account = sandbox_patient(self.ledger, f"Patient{n}")
            self.patients.append(await add_patient(self.db, self.practice, self.connection, f"p{n}", account))
            self.pat_nums.append(int(account))

    async def close(self) -> None:
        self.ledger.close()
        await self.db.close()

    async def sync(self, run: Sync) -> None:
        pms = SandboxConnector(
            SandboxSettings(
                path=self.workdir / "pms.db",
                failure_rate=run.failure_rate,
                lost_response_rate=run.lost_response_rate,
                batch_size=self.batch_size,
                seed=run.seed,
            )
        )
        try:
            await run_sync(self.db, self.connection.id, pms)
        finally:
            await pms.close()

    async def record(self, ref: str, step: Sale | Reversal | Decline) -> None:
        """Store the transaction the payment platform processed."""
        if isinstance(step, Sale):
            patient = self.patients[step.patient]
            await add_transaction(
                self.db, self.practice, ref, gross=step.gross, fee=step.fee, patient=patient
            )
            self.sales.append((ref, step.patient))
        elif isinstance(step, Decline):
            patient = self.patients[step.patient]
            await add_transaction(
                self.db, self.practice, ref, kind="decline", gross=step.gross, fee=0, patient=patient
            )
        else:
            original, patient_number = self.sales[step.sale]
            await add_transaction(
                self.db,
                self.practice,
                ref,
                kind=step.kind,
                gross=step.amount,
                fee=0,  # nothing of the fee comes back: net equals gross
                patient=self.patients[patient_number],
                original=original,
            )

    async def sync_until_settled(self, run: Sync) -> None:
        """Sync, making backed-off retries due at once between runs, until nothing is left pending."""
        for attempt in range(MAX_DRAIN_RUNS):
            await self.sync(replace(run, seed=run.seed + attempt))  # the same seed would fail the same way
            async with self.db.sessions.begin() as session:
                await session.execute(update(Writeback).values(next_attempt_at=None))
                left = await session.scalar(
                    select(func.count())
                    .select_from(Writeback)
                    .where(Writeback.status.in_(("pending", "in_flight")))
                )
            if not left:
                return
        raise AssertionError(f"writebacks still pending after {MAX_DRAIN_RUNS} runs")

    async def failure_codes(self) -> set[str | None]:
        async with self.db.sessions() as session:
            return set(
                await session.scalars(select(Writeback.error_code).where(Writeback.status == "failed"))
            )


async def play(plan: list[Step], drain: Sync, batch_size: int, workdir: Path, template: Path) -> None:
    office = Office(workdir, batch_size)
    try:
        await office.open(template)
        for number, step in enumerate(plan):
            if isinstance(step, Sync):
                await office.sync(step)
            else:
                await office.record(f"tx_{number}", step)
        await office.sync_until_settled(drain)

        # A refund of more than is left is the only failure a person should have to look at here.
        assert await office.failure_codes() <= {"REFUND_EXCEEDS_ORIGINAL"}
        markers = Counter(m for p in office.ledger.payments() for m in MARKER.findall(p.pay_note))
        assert [m for m, n in markers.items() if n > 1] == [], "a writeback was posted twice"
        assert office.ledger.integrity_problems() == []
        actual = {n: paid_cents(office.ledger, office.pat_nums[n]) for n in range(PATIENTS)}
        assert actual == expected_balances(plan)
    finally:
        await office.close()


def run_example(
    monkeypatch: pytest.MonkeyPatch, plan: list[Step], drain: Sync, batch_size: int, template: Path
) -> None:
    # In-run retry pauses only slow the examples down; what is under test is retrying across runs.
    monkeypatch.setattr(sync_engine, "IN_RUN_DELAYS", (0.0, 0.0, 0.0))
    with tempfile.TemporaryDirectory() as workdir:
        asyncio.run(play(plan, drain, batch_size, Path(workdir), template))


# --- the properties --------------------------------------------------------------------------------------


@EXAMPLES
@given(plan=plans(reliable_syncs), drain=reliable_drains, batch_size=batch_sizes)
def test_ledger_matches_the_model_with_any_reversals_when_the_pms_refuses_calls(
    monkeypatch: pytest.MonkeyPatch, migrated_store: Path, plan: list[Step], drain: Sync, batch_size: int
) -> None:
    run_example(monkeypatch, playable(plan), drain, batch_size, migrated_store)


@EXAMPLES
@given(plan=plans(lossy_syncs), drain=lossy_drains, batch_size=batch_sizes)
def test_ledger_matches_the_model_when_the_pms_also_loses_answers(
    monkeypatch: pytest.MonkeyPatch, migrated_store: Path, plan: list[Step], drain: Sync, batch_size: int
) -> None:
    run_example(monkeypatch, playable(plan, one_reversal_per_sale=True), drain, batch_size, migrated_store)


@settings(EXAMPLES, derandomize=True, phases=[Phase.generate])  # reproducible, and no minutes of shrinking
@given(plan=reversals_of_one_payment(), drain=lossy_drains, batch_size=batch_sizes)
def test_several_reversals_of_a_payment_never_reverse_more_than_was_posted_when_answers_are_lost(
    monkeypatch: pytest.MonkeyPatch, migrated_store: Path, plan: list[Step], drain: Sync, batch_size: int
) -> None:
    run_example(monkeypatch, playable(plan), drain, batch_size, migrated_store)
