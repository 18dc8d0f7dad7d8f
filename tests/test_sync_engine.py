"""The engine against the sandbox PMS: every ledger rule end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.domain.report import ReportCategory
from ledgerlink.engine.sync import run_sync
from ledgerlink.store.db import Database
from ledgerlink.store.models import Alert, Writeback
from tests.conftest import make_practice
from tests.factories import add_patient, add_transaction, sandbox_patient


def sandbox(tmp_path: Path, **knobs: object) -> SandboxConnector:
    return SandboxConnector(SandboxSettings(path=tmp_path / "pms.db", **knobs))  # type: ignore[arg-type]


async def statuses(db: Database) -> dict[int, str]:
    async with db.sessions() as session:
        return {w.transaction_id: w.status for w in await session.scalars(select(Writeback))}


async def test_sale_posts_net_payment_once_and_rerun_reports_already_processed(
    db: Database, tmp_path: Path
) -> None:
    practice, connection = await make_practice(db)
    pms = sandbox(tmp_path)
    patient = await add_patient(db, practice, connection, "p1", sandbox_patient(pms.office))
    await add_transaction(db, practice, "ch_1", gross=10000, fee=300, patient=patient)

    first = await run_sync(db, connection.id, pms)
    assert first.report.line(ReportCategory.SALES).count == 1
    assert first.report.line(ReportCategory.SALES).total_cents == 9700
    assert [p.amount_cents for p in pms.office.payments()] == [9700]

    second = await run_sync(db, connection.id, pms)
    assert second.report.line(ReportCategory.SALES).count == 0
    assert second.report.line(ReportCategory.ALREADY_PROCESSED).count == 1
    assert len(pms.office.payments()) == 1
    assert pms.office.integrity_problems() == []
    await pms.close()


async def test_missing_account_number_is_invalid_patient_id_with_alert(db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(db)
    pms = sandbox(tmp_path)
    patient = await add_patient(db, practice, connection, "p1", None)
    await add_transaction(db, practice, "ch_1", patient=patient)
    outcome = await run_sync(db, connection.id, pms)
    assert outcome.report.line(ReportCategory.INVALID_PATIENT_ID).count == 1
    assert pms.office.payments() == []
    assert len(pms.office.tasks()) == 1
    async with db.sessions() as session:
        alert = await session.scalar(select(Alert))
        assert alert is not None and alert.code == "INVALID_PATIENT_ID" and alert.delivered_to_pms
    await pms.close()


async def test_a_retry_that_fails_the_same_way_leaves_the_office_no_second_task(
    db: Database, tmp_path: Path
) -> None:
    from ledgerlink.engine.operations import retry_writebacks

    practice, connection = await make_practice(db)
    pms = sandbox(tmp_path)
    patient = await add_patient(db, practice, connection, "p1", "999999")  # unknown to the PMS
    await add_transaction(db, practice, "ch_1", patient=patient)
    await run_sync(db, connection.id, pms)
    async with db.sessions.begin() as session:
        wid = await session.scalar(select(Writeback.id))
        assert wid is not None
        [result] = await retry_writebacks(session, practice.id, [wid], actor="test")  # nothing fixed
        assert result.ok

    outcome = await run_sync(db, connection.id, pms)

    assert outcome.report.line(ReportCategory.INVALID_PATIENT_ID).count == 1
    assert len(pms.office.tasks()) == 1
    async with db.sessions() as session:
        assert len((await session.scalars(select(Alert))).all()) == 1
    await pms.close()


async def test_unknown_account_number_is_reported_by_the_pms(db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(db)
    pms = sandbox(tmp_path)
    patient = await add_patient(db, practice, connection, "p1", "999999")
    await add_transaction(db, practice, "ch_1", patient=patient)
    outcome = await run_sync(db, connection.id, pms)
    assert outcome.report.line(ReportCategory.INVALID_PATIENT_ID).count == 1
    async with db.sessions() as session:
        wb = await session.scalar(select(Writeback))
        assert (
            wb is not None and wb.error_code == "INVALID_PATIENT_ID" and "999999" in (wb.error_message or "")
        )
    await pms.close()


async def test_the_report_a_sync_returns_is_the_report_stored_for_its_run(
    db: Database, tmp_path: Path
) -> None:
    from ledgerlink.engine.reports import run_report

    practice, connection = await make_practice(db)
    pms = sandbox(tmp_path)
    patient = await add_patient(db, practice, connection, "p1", sandbox_patient(pms.office))
    stranger = await add_patient(db, practice, connection, "p2", None)
    await add_transaction(db, practice, "ch_1", gross=10000, fee=300, patient=patient)
    await add_transaction(db, practice, "ch_2", gross=5000, fee=150, patient=stranger)
    await add_transaction(db, practice, "dc_1", kind="decline", gross=2000, fee=0, patient=patient)
    await run_sync(db, connection.id, pms)
    await add_transaction(db, practice, "ch_3", gross=700, fee=20, patient=patient)

    outcome = await run_sync(db, connection.id, pms)

    assert outcome.run_id is not None
    async with db.sessions() as session:
        assert await run_report(session, outcome.run_id) == outcome.report
    assert outcome.report.line(ReportCategory.ALREADY_PROCESSED).count == 2
    await pms.close()
