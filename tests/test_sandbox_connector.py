"""The sandbox connector on its own: the answers the engine relies on for exactly-once."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ledgerlink.connectors.base import PaymentEntry, PmsRejected, PmsWrite, ReversalEntry
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings

DAY = date(2026, 3, 10)


def payment(key: str, account: str, amount: int, fee: int = 0) -> PaymentEntry:
    return PaymentEntry(key, account, amount, fee, DAY, "terminal", "Card payment")


async def test_a_reversal_is_found_on_its_original_patient_whatever_account_it_names(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = str(pms.ledger.add_patient("Doe", "Jane"))
    [sale] = await pms.post_payments([payment("ll-wb-1", pat_num, 10000)])
    assert isinstance(sale, PmsWrite)
    refund = ReversalEntry("ll-wb-2", "", sale.pms_ref, 2500, False, DAY, "Refund")
    assert await pms.find_write(refund) is None

    [written] = await pms.post_reversals([refund])

    assert isinstance(written, PmsWrite)
    assert await pms.find_write(refund) == written
    assert await pms.find_write(ReversalEntry("ll-wb-3", pat_num, sale.pms_ref, 2500, False, DAY, "")) is None
    await pms.close()


async def test_a_bad_entry_is_refused_alone_and_the_rest_of_the_batch_is_written(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = str(pms.ledger.add_patient("Doe", "Jane"))

    results = await pms.post_payments(
        [payment("ll-wb-1", pat_num, 1000), payment("ll-wb-2", pat_num, 0), payment("ll-wb-3", pat_num, 500)]
    )

    assert isinstance(results[0], PmsWrite) and isinstance(results[2], PmsWrite)
    assert isinstance(results[1], PmsRejected) and "0 cents" in results[1].message
    assert [p.amount_cents for p in pms.ledger.payments()] == [1000, 500]
    assert pms.ledger.integrity_problems() == []
    await pms.close()


async def test_a_void_with_a_fee_mirrors_the_fee_entry(tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    pat_num = str(pms.ledger.add_patient("Doe", "Jane"))
    [sale] = await pms.post_payments([payment("ll-wb-1", pat_num, 10000, fee=300)])
    assert isinstance(sale, PmsWrite)

    [void] = await pms.post_reversals(
        [ReversalEntry("ll-wb-2", pat_num, sale.pms_ref, 10000, True, DAY, "Void", fee_cents=300)]
    )

    assert isinstance(void, PmsWrite)
    assert pms.ledger.balance_paid(int(pat_num)) == 0
    rows = pms.ledger._db.execute("SELECT AdjAmt FROM adjustment ORDER BY AdjNum").fetchall()
    assert [r[0] for r in rows] == [300, -300]
    await pms.close()
