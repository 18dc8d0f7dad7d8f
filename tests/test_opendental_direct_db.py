"""The unsafe direct-database mode against a real Open Dental schema on MariaDB (strict), InnoDB and MyISAM.

The office's database is created the way an office's would be (Open Dental's DDL and seed rows), then
ledgerlink writes into it through the engine with `unsafe_direct_db: true`: every payment is a payment,
its split and a securitylog row with every NOT NULL column, and Open Dental's integrity checks pass.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from ledgerlink.connectors.opendental.direct_db import DirectDbConnector
from ledgerlink.connectors.registry import open_connector, settings_to_store
from ledgerlink.engine.sync import run_sync
from ledgerlink.errors import InvalidInput
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.secrets import SecretBox
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice, Transaction, Writeback
from tests.factories import add_patient, add_transaction

NOON = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)
DAY = date(2026, 3, 10)


@pytest.fixture(params=["InnoDB", "MyISAM"])
def storage_engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def connect(db: Database, tmp_path: Path, office_url: str, amount_mode: str = "net") -> Connection:
    async with db.sessions.begin() as session:
        practice = await create_practice(session, slug="smile", name="Smile", timezone="America/Chicago")
        raw = {"unsafe_direct_db": "true", "database_url": office_url, "timezone": "America/Chicago"}
        return await add_connection(
            session,
            practice,
            name="od",
            kind="opendental",
            settings=settings_to_store("opendental", raw, tmp_path),
            amount_mode=amount_mode,
        )


async def sync(db: Database, connection: Connection, tmp_path: Path) -> None:
    async with db.sessions() as session:
        stored = await session.get(Connection, connection.id)
        assert stored is not None
    connector = open_connector("opendental", stored.settings, tmp_path)
    assert isinstance(connector, DirectDbConnector)
    try:
        await run_sync(db, connection.id, connector, since=DAY)
    finally:
        await connector.close()


async def test_every_kind_lands_in_open_dentals_tables_as_open_dental_writes_them(
    sqlite_db: Database, tmp_path: Path, mariadb_url: str, storage_engine: str
) -> None:
    office = OpenDentalOffice.open(mariadb_url, create=True, storage_engine=storage_engine)
    definitions_before = office.count("definition")
    pat_num = office.add_patient("Doe", "Jane")
    connection = await connect(sqlite_db, tmp_path, mariadb_url, amount_mode="gross_plus_fee")
    async with sqlite_db.sessions() as session:
        practice = await session.get(Practice, connection.practice_id)
        assert practice is not None
    patient = await add_patient(sqlite_db, practice, connection, "p1", str(pat_num))
    await add_transaction(sqlite_db, practice, "ch_1", gross=10000, fee=300, patient=patient, at=NOON)
    await add_transaction(sqlite_db, practice, "ch_2", gross=5000, fee=150, patient=patient, at=NOON)
    await sync(sqlite_db, connection, tmp_path)
    await add_transaction(
        sqlite_db,
        practice,
        "re_1",
        kind="refund",
        gross=2000,
        fee=0,
        patient=patient,
        original="ch_1",
        at=NOON,
    )
    await add_transaction(
        sqlite_db, practice, "vo_2", kind="void", gross=5000, fee=0, patient=patient, original="ch_2", at=NOON
    )

    await sync(sqlite_db, connection, tmp_path)

    async with sqlite_db.sessions() as session:
        rows = await session.execute(
            select(Transaction.processor_ref, Writeback.status).join(
                Transaction, Transaction.id == Writeback.transaction_id
            )
        )
        assert {ref: status for ref, status in rows} == {
            "ch_1": "posted",
            "ch_2": "posted",
            "re_1": "posted",
            "vo_2": "posted",
        }
    payments = office.payments(pat_num=pat_num)
    assert [p.pay_amt for p in payments] == [
        Decimal("100.00"),
        Decimal("50.00"),
        Decimal("-20.00"),
        Decimal("-50.00"),
    ]
    assert all(p.pay_date == DAY and p.payment_source == 13 for p in payments)
    assert office.paid_total(pat_num) == Decimal("80.00")
    assert sorted(a.adj_amt for a in office.adjustments(pat_num)) == [
        Decimal("-1.50"),
        Decimal("1.50"),
        Decimal("3.00"),
    ]
    assert len(office.securitylog(pat_num=pat_num)) >= 4  # a PaymentCreate row per payment
    markers = Counter(p.pay_note.rsplit("[", 1)[-1] for p in payments)
    assert all(n == 1 for n in markers.values())
    assert office.integrity_problems() == []
    assert office.count("definition") == definitions_before  # a real office's set-up is left as it is
    office.close()


async def test_the_database_url_is_sealed_and_a_wrong_one_is_a_clear_error(
    sqlite_db: Database, tmp_path: Path
) -> None:
    stored = settings_to_store(
        "opendental", {"unsafe_direct_db": True, "database_url": "mysql+pymysql://od:secret@db/od"}, tmp_path
    )
    assert SecretBox.is_sealed(stored["database_url"]) and "secret" not in stored["database_url"]
    with pytest.raises(InvalidInput, match="MariaDB/MySQL, not postgresql"):
        open_connector(
            "opendental", {"unsafe_direct_db": True, "database_url": "postgresql://x@y/z"}, tmp_path
        )
    with pytest.raises(InvalidInput, match="could not be opened"):
        open_connector(
            "opendental",
            {"unsafe_direct_db": True, "database_url": "mysql+pymysql://nobody@127.0.0.1:1/none"},
            tmp_path,
        )
