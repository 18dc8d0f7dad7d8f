"""The pull API's service layer on SQLite and PostgreSQL: downloads decided by the engine's rules,
acknowledgements, pull runs and their sync report, and the alert feed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ledgerlink.connectors.registry import open_connector
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine.operations import clear_writebacks
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.notify.digest import _unsent
from ledgerlink.practices import add_connection
from ledgerlink.pull.acknowledge import Acknowledgement, AckResult, AckStatus, acknowledge
from ledgerlink.pull.alerts import alert_feed, mark_done
from ledgerlink.pull.download import DownloadPage, download
from ledgerlink.pull.runs import current_report, finish_run, practice_run
from ledgerlink.store.db import Database
from ledgerlink.store.models import Alert, Connection, Practice, Writeback
from tests.conftest import make_practice
from tests.factories import add_patient, add_transaction


async def pull_practice(db: Database, slug: str = "smile", **rules: Any) -> tuple[Practice, Connection]:
    practice, _sandbox = await make_practice(db, slug=slug)
    async with db.sessions.begin() as session:
        connection = await add_connection(session, practice, name="pull", kind="pull", **rules)
    return practice, connection


async def pull(db: Database, practice: Practice, cursor: int = 0, limit: int = 100) -> DownloadPage:
    async with db.sessions.begin() as session:
        return await download(session, practice, cursor=cursor, limit=limit, actor="test")


async def ack(db: Database, practice: Practice, run_id: int, *acks: Acknowledgement) -> list[AckResult]:
    async with db.sessions.begin() as session:
        return await acknowledge(session, practice, run_id, list(acks), actor="test")


def loaded(wid: int, ref: str) -> Acknowledgement:
    return Acknowledgement(wid, loaded=True, pms_ref=ref)


async def finish(db: Database, practice: Practice, run_id: int) -> SyncReport:
    async with db.sessions.begin() as session:
        return await finish_run(session, await practice_run(session, practice, run_id, hold=True))


def line(report: SyncReport, category: ReportCategory) -> tuple[int, int]:
    found = report.line(category)
    return found.count, found.total_cents


async def test_a_sale_is_handed_out_for_its_net_amount_with_the_account_number(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", " 1042 ")
    await add_transaction(db, practice, "ch_1", gross=10000, fee=300, patient=patient)
    page = await pull(db, practice)
    assert [(i.processor_ref, i.entry, i.amount_cents, str(i.amount), i.fee_cents) for i in page.items] == [
        ("ch_1", "payment", 9700, "97.00", 0)
    ]
    assert page.items[0].account_number == "1042" and not page.items[0].redelivered
    assert page.has_more is False and page.next_cursor == page.items[0].id
    async with db.sessions() as session:
        wb = await session.get(Writeback, page.items[0].id)
        assert wb is not None and wb.status == "in_flight" and wb.last_run_id == page.run_id


@pytest.mark.parametrize(("mode", "amount", "fee"), [("gross", 10000, 0), ("gross_plus_fee", 10000, 300)])
async def test_gross_rules_hand_out_the_gross_amount(db: Database, mode: str, amount: int, fee: int) -> None:
    practice, connection = await pull_practice(db, amount_mode=mode)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", gross=10000, fee=300, patient=patient)
    item = (await pull(db, practice)).items[0]
    assert (item.amount_cents, item.fee_cents, str(item.fee)) == (amount, fee, f"{fee / 100:.2f}")


async def test_nothing_before_the_start_date_is_handed_out(db: Database) -> None:
    practice, connection = await pull_practice(db, start_date=date(2026, 3, 1))
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "old", patient=patient, at=datetime(2026, 2, 27, 18, tzinfo=UTC))
    await add_transaction(db, practice, "new", patient=patient, at=datetime(2026, 3, 2, 18, tzinfo=UTC))
    page = await pull(db, practice)
    assert [i.processor_ref for i in page.items] == ["new"]
    async with db.sessions() as session:
        skipped = await session.scalar(select(Writeback).where(Writeback.status == "skipped"))
    assert skipped is not None and skipped.skip_reason == "before_start_date"


async def test_declines_are_skipped_and_a_missing_account_fails_with_an_alert(db: Database) -> None:
    practice, connection = await pull_practice(db)
    known = await add_patient(db, practice, connection, "p1", "1042")
    unknown = await add_patient(db, practice, connection, "p2", None)
    await add_transaction(db, practice, "ok", patient=known)
    await add_transaction(db, practice, "declined", kind="decline", patient=known, gross=5000, fee=0)
    await add_transaction(db, practice, "no_account", patient=unknown)
    page = await pull(db, practice)
    assert [i.processor_ref for i in page.items] == ["ok"]
    async with db.sessions() as session:
        feed = await alert_feed(session, practice)
    assert [(a.code, a.processor_ref) for a in feed] == [("INVALID_PATIENT_ID", "no_account")]
    assert "account number" in feed[0].explanation
    await ack(db, practice, page.run_id, loaded(page.items[0].id, "PAY-1"))
    report = await finish(db, practice, page.run_id)
    assert line(report, ReportCategory.SALES) == (1, 9700)
    assert line(report, ReportCategory.DECLINED) == (1, 5000)
    assert line(report, ReportCategory.INVALID_PATIENT_ID) == (1, 9700)


async def test_an_alert_leaves_the_feed_and_the_digest_once_its_payment_is_cleared(db: Database) -> None:
    practice, connection = await pull_practice(db)
    unknown = await add_patient(db, practice, connection, "p2", None)
    await add_transaction(db, practice, "no_account", patient=unknown)
    await add_transaction(db, practice, "no_account_2", patient=unknown)
    await pull(db, practice)
    async with db.sessions() as session:
        assert [a.processor_ref for a in await alert_feed(session, practice)] == [
            "no_account",
            "no_account_2",
        ]
        failed = list(await session.scalars(select(Writeback.id).order_by(Writeback.id)))
    async with db.sessions.begin() as session:  # staff posted the first by hand, and said so
        await clear_writebacks(session, practice.id, failed[:1], actor="test")
    async with db.sessions() as session:
        assert [a.processor_ref for a in await alert_feed(session, practice)] == ["no_account_2"]
        digest_rows = await session.scalars(select(Alert.writeback_id).where(_unsent(practice.id)))
        assert list(digest_rows) == failed[1:]


async def test_loaded_is_not_offered_again_and_a_repeat_ack_is_already_processed(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", patient=patient)
    first = await pull(db, practice)
    wid = first.items[0].id
    assert [r.status for r in await ack(db, practice, first.run_id, loaded(wid, "PAY-1"))] == [
        AckStatus.LOADED
    ]
    assert line(await finish(db, practice, first.run_id), ReportCategory.SALES) == (1, 9700)

    second = await pull(db, practice)
    assert second.items == [] and second.run_id != first.run_id
    again = await ack(db, practice, second.run_id, loaded(wid, "PAY-OTHER"))
    assert (again[0].status, again[0].pms_ref) == (AckStatus.ALREADY_PROCESSED, "PAY-1")
    report = await finish(db, practice, second.run_id)
    assert line(report, ReportCategory.ALREADY_PROCESSED) == (1, 9700)
    assert line(report, ReportCategory.SALES) == (0, 0)
    async with db.sessions() as session:
        wb = await session.get(Writeback, wid)
        assert wb is not None and (wb.status, wb.pms_ref) == ("posted", "PAY-1")


async def test_an_old_repeat_ack_counts_as_already_processed_outside_the_window(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    at = datetime.now(UTC) - timedelta(days=10)
    await add_transaction(db, practice, "ch_old", patient=patient, at=at, gross=2000, fee=0)
    first = await pull(db, practice)
    await ack(db, practice, first.run_id, loaded(first.items[0].id, "PAY-1"))
    await finish(db, practice, first.run_id)
    second = await pull(db, practice)
    await ack(db, practice, second.run_id, loaded(first.items[0].id, "PAY-1"))
    async with db.sessions() as session:
        live = await current_report(session, await practice_run(session, practice, second.run_id))
    assert line(live, ReportCategory.ALREADY_PROCESSED) == (1, 2000)
    assert line(await finish(db, practice, second.run_id), ReportCategory.ALREADY_PROCESSED) == (1, 2000)


async def test_refund_waits_for_its_original_then_carries_its_pms_ref(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", patient=patient, gross=10000, fee=300)
    await add_transaction(
        db, practice, "re_1", kind="refund", original="ch_1", patient=patient, gross=4000, fee=0
    )
    page = await pull(db, practice)
    assert [i.processor_ref for i in page.items] == ["ch_1"]  # the refund needs the sale's PMS reference
    await ack(db, practice, page.run_id, loaded(page.items[0].id, "PAY-1"))
    refund = (await pull(db, practice)).items
    assert [
        (i.processor_ref, i.entry, i.amount_cents, i.original_pms_ref, i.original_account_number)
        for i in refund
    ] == [("re_1", "reversal", 4000, "PAY-1", "1042")]
    await ack(db, practice, page.run_id, loaded(refund[0].id, "PAY-2"))
    report = await finish(db, practice, page.run_id)
    assert line(report, ReportCategory.SALES) == (1, 9700)
    assert line(report, ReportCategory.REFUNDS) == (1, 4000)
    async with db.sessions() as session:
        sale = await session.get(Writeback, page.items[0].id)
        assert sale is not None and sale.reversed_cents == 4000


async def test_a_void_of_a_sale_not_yet_handed_out_cancels_both(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", patient=patient)
    await add_transaction(db, practice, "vo_1", kind="void", original="ch_1", patient=patient)
    page = await pull(db, practice)
    assert page.items == []
    report = await finish(db, practice, page.run_id)
    assert line(report, ReportCategory.VOIDS)[0] == 1
    assert line(report, ReportCategory.CANCELLED_BY_VOID)[0] == 1


async def test_unacknowledged_entries_come_back_from_a_reset_cursor_with_the_same_amount(
    db: Database,
) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    for n in range(3):
        await add_transaction(db, practice, f"ch_{n}", patient=patient, gross=1000 * (n + 1), fee=0)
    one = await pull(db, practice, limit=2)
    assert [i.processor_ref for i in one.items] == ["ch_0", "ch_1"] and one.has_more
    two = await pull(db, practice, cursor=one.next_cursor, limit=2)
    assert [i.processor_ref for i in two.items] == ["ch_2"] and not two.has_more
    assert two.run_id == one.run_id
    async with db.sessions.begin() as session:  # settings change after handing out: the entry stays as given
        pull_row = await session.get(Connection, connection.id)
        assert pull_row is not None
        pull_row.amount_mode = "gross"
    again = await pull(db, practice)
    assert [(i.processor_ref, i.amount_cents, i.redelivered) for i in again.items] == [
        ("ch_0", 1000, True),
        ("ch_1", 2000, True),
        ("ch_2", 3000, True),
    ]


async def test_failed_acknowledgement_raises_an_alert_and_needs_a_retry(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", patient=patient)
    page = await pull(db, practice)
    wid = page.items[0].id
    failed = Acknowledgement(
        wid, loaded=False, error_code=LoadErrorCode.INVALID_PATIENT_ID, error_message="no 1042"
    )
    assert [r.status for r in await ack(db, practice, page.run_id, failed, failed)] == [
        AckStatus.FAILED,
        AckStatus.FAILED,
    ]
    late = await ack(db, practice, page.run_id, loaded(wid, "PAY-1"))
    assert late[0].status is AckStatus.NOT_DOWNLOADED
    async with db.sessions.begin() as session:
        feed = await alert_feed(session, practice)
        assert [(a.code, a.writeback_id, a.account_number) for a in feed] == [
            ("INVALID_PATIENT_ID", wid, "1042")
        ]
        assert "no 1042" in feed[0].message
        await mark_done(session, practice, feed[0].id, actor="test")
    async with db.sessions() as session:
        assert await alert_feed(session, practice) == []
        wb = await session.get(Writeback, wid)
        assert wb is not None and (wb.status, wb.error_code) == ("failed", "INVALID_PATIENT_ID")
    report = await finish(db, practice, page.run_id)
    assert line(report, ReportCategory.INVALID_PATIENT_ID) == (1, 9700)


async def test_another_practice_finds_nothing(db: Database) -> None:
    practice, connection = await pull_practice(db)
    await add_transaction(
        db, practice, "ch_1", patient=await add_patient(db, practice, connection, "p1", "1042")
    )
    await add_transaction(
        db, practice, "ch_2", patient=await add_patient(db, practice, connection, "p2", None)
    )
    page = await pull(db, practice)
    other, _ = await pull_practice(db, slug="other")
    theirs = await pull(db, other)
    assert theirs.items == []
    results = await ack(db, other, theirs.run_id, loaded(page.items[0].id, "EVIL"))
    assert results[0].status is AckStatus.NOT_FOUND
    with pytest.raises(NotFound):
        await ack(db, other, page.run_id, loaded(page.items[0].id, "EVIL"))
    async with db.sessions.begin() as session:
        assert await alert_feed(session, other) == []
        mine = await alert_feed(session, practice)
        with pytest.raises(NotFound):
            await mark_done(session, other, mine[0].id, actor="test")
        wb = await session.get(Writeback, page.items[0].id)
        assert wb is not None and wb.status == "in_flight" and wb.pms_ref is None


async def test_a_finished_run_takes_no_acknowledgements(db: Database) -> None:
    practice, connection = await pull_practice(db)
    patient = await add_patient(db, practice, connection, "p1", "1042")
    await add_transaction(db, practice, "ch_1", patient=patient)
    page = await pull(db, practice)
    report = await finish(db, practice, page.run_id)
    assert line(report, ReportCategory.IN_ERROR) == (1, 9700)  # handed out, never confirmed
    with pytest.raises(Conflict):
        await ack(db, practice, page.run_id, loaded(page.items[0].id, "PAY-1"))
    assert await finish(db, practice, page.run_id) == report  # finishing again changes nothing
    retry = await pull(db, practice)
    assert retry.run_id != page.run_id and [i.redelivered for i in retry.items] == [True]


async def test_pull_connections_have_no_connector_and_no_settings(db: Database, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="pull API"):
        open_connector("pull", {}, tmp_path)
    practice, _ = await make_practice(db)
    async with db.sessions.begin() as session:
        with pytest.raises(InvalidInput, match="no settings"):
            await add_connection(session, practice, name="pull", kind="pull", settings={"url": "x"})
    async with db.sessions.begin() as session:
        with pytest.raises(NotFound, match="no pull connection"):
            await download(session, practice, actor="test")
