"""The store migrates a new database and enforces the uniqueness the engine relies on, on both backends."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from ledgerlink.store.db import Database
from ledgerlink.store.models import Transaction
from tests.conftest import make_practice


async def test_new_database_is_migrated_and_usable(db: Database) -> None:
    practice, connection = await make_practice(db)
    assert practice.id and connection.id


async def test_transactions_are_unique_per_practice_and_processor_reference(db: Database) -> None:
    practice, _ = await make_practice(db)
    other, _ = await make_practice(db, slug="other")

    def txn(practice_id: int) -> Transaction:
        return Transaction(
            practice_id=practice_id,
            processor_ref="ch_1",
            kind="sale",
            payment_type="terminal",
            gross_cents=100,
            fee_cents=3,
            net_cents=97,
            occurred_at=datetime(2026, 1, 2, tzinfo=UTC),
            local_date=date(2026, 1, 2),
        )

    async with db.sessions.begin() as session:
        session.add(txn(practice.id))
        session.add(txn(other.id))  # the same reference in another practice is fine
    with pytest.raises(IntegrityError):
        async with db.sessions.begin() as session:
            session.add(txn(practice.id))


async def test_times_come_back_aware_utc(db: Database) -> None:
    practice, _ = await make_practice(db)
    assert practice.created_at.tzinfo is not None
    async with db.sessions() as session:
        from sqlalchemy import select

        from ledgerlink.store.models import Practice

        loaded = await session.scalar(select(Practice).where(Practice.id == practice.id))
        assert loaded is not None and loaded.created_at.utcoffset() is not None


def test_schema_head_constant_matches_the_migrations() -> None:
    from alembic.script import ScriptDirectory

    from ledgerlink.store.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == SCHEMA_HEAD


def test_migration_0002_backfills_writeback_local_dates_from_their_transactions(db_url: str) -> None:
    """A store with writebacks (and an alert pointing at one) created under 0001 upgrades to the head:
    each writeback takes its transaction's local date, the column is NOT NULL and the report's index exists.
    On SQLite the column change rebuilds the table, which must not trip over the alert's foreign key."""
    from sqlalchemy import inspect, text

    from ledgerlink.store.db import SCHEMA_HEAD, create_sync_engine, migrate

    migrate(db_url, "0001")
    engine = create_sync_engine(db_url)
    stamp = "2026-01-01 00:00:00+00"
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO practices (id, slug, name, timezone, created_at)"
                    " VALUES (1, 'p', 'P', 'UTC', :t)"
                ),
                {"t": stamp},
            )
            conn.execute(
                text(
                    "INSERT INTO connections (id, practice_id, name, kind, settings, amount_mode, timing,"
                    " daily_time, chargebacks_enabled, type_handling, enrolled_through, created_at)"
                    " VALUES (1, 1, 'pms', 'sandbox', '{}', 'net', 'instant', '18:00:00', true, '{}', 3, :t)"
                ),
                {"t": stamp},
            )
            for n, day in ((1, date(2026, 1, 2)), (2, date(2026, 1, 31)), (3, date(2026, 2, 1))):
                conn.execute(
                    text(
                        "INSERT INTO transactions (id, practice_id, processor_ref, source, kind, payment_type,"
                        " gross_cents, fee_cents, net_cents, currency, occurred_at, local_date, card_brand,"
                        " card_last4, description, imported_at) VALUES (:n, 1, :ref, 'csv', 'sale',"
                        " 'terminal', 100, 0, 100, 'USD', :t, :day, '', '', '', :t)"
                    ),
                    {"n": n, "ref": f"ch_{n}", "t": stamp, "day": day},
                )
                conn.execute(
                    text(
                        "INSERT INTO writebacks (id, transaction_id, connection_id, status, category,"
                        " amount_cents, fee_cents, reversed_cents, attempts, uncertain, created_at, updated_at)"
                        " VALUES (:w, :n, 1, 'posted', 'sales', 100, 0, 0, 1, false, :t, :t)"
                    ),
                    {"w": 10 + n, "n": n, "t": stamp},
                )
            conn.execute(
                text(
                    "INSERT INTO alerts (practice_id, connection_id, writeback_id, code, message,"
                    " delivered_to_pms, created_at) VALUES (1, 1, 12, 'x', 'failed', false, :t)"
                ),
                {"t": stamp},
            )

        migrate(db_url)

        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, local_date FROM writebacks ORDER BY id")).all()
            assert [(wid, date.fromisoformat(str(day))) for wid, day in rows] == [
                (11, date(2026, 1, 2)),
                (12, date(2026, 1, 31)),
                (13, date(2026, 2, 1)),
            ]
            assert conn.execute(text("SELECT writeback_id FROM alerts")).scalar() == 12
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
            schema = inspect(conn)
            column = next(c for c in schema.get_columns("writebacks") if c["name"] == "local_date")
            assert column["nullable"] is False
            indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("writebacks")}
            assert indexes["ix_writebacks_local_date"] == [
                "connection_id",
                "local_date",
                "category",
                "amount_cents",
            ]
            assert {i["name"] for i in schema.get_indexes("writebacks")} >= {
                "ix_writebacks_due",
                "ix_writebacks_run",
            }
    finally:
        engine.dispose()


async def test_range_report_counts_writebacks_by_their_own_local_date_without_a_join(db: Database) -> None:
    from sqlalchemy import event

    from ledgerlink.domain.report import ReportCategory
    from ledgerlink.engine.reports import range_report
    from ledgerlink.store.models import Writeback

    practice, connection = await make_practice(db)
    _, other = await make_practice(db, slug="other")
    days = [date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 15), date(2026, 3, 31), date(2026, 4, 1)]
    async with db.sessions.begin() as session:
        txns = [
            Transaction(
                practice_id=practice.id,
                processor_ref=f"ch_{n}",
                kind="sale",
                payment_type="terminal",
                gross_cents=1_000,
                net_cents=1_000,
                occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                local_date=date(2026, 1, 1),  # the report must go by the writeback's date, not this one
            )
            for n in range(len(days) + 1)
        ]
        session.add_all(txns)
        await session.flush()
        categories = ["sales", "sales", None, "refunds", "sales"]
        for txn, day, category in zip(txns, days, categories, strict=False):
            session.add(
                Writeback(
                    transaction_id=txn.id,
                    connection_id=connection.id,
                    local_date=day,
                    category=category,
                    amount_cents=0 if category is None else 1_000,
                )
            )
        # The same day on another connection stays out of this connection's report.
        session.add(
            Writeback(
                transaction_id=txns[-1].id,
                connection_id=other.id,
                local_date=date(2026, 3, 15),
                category="sales",
                amount_cents=1_000,
            )
        )

    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        async with db.sessions() as session:
            report = await range_report(session, connection.id, date(2026, 3, 1), date(2026, 3, 31))
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)

    assert report.transaction_count == 3  # 1 March and 31 March are inside; 28 Feb and 1 April are not
    assert (report.line(ReportCategory.SALES).count, report.line(ReportCategory.SALES).total_cents) == (
        1,
        1_000,
    )
    assert report.line(ReportCategory.REFUNDS).count == 1
    assert report.line(ReportCategory.IN_ERROR).count == 1  # not yet written: no category
    assert statements and not any("transactions" in s.lower() for s in statements)


def test_the_migrated_schema_is_exactly_the_models(db_url: str) -> None:
    """Every model change has its migration: Alembic finds nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ledgerlink.store.db import create_sync_engine, migrate
    from ledgerlink.store.models import Base

    migrate(db_url)
    engine = create_sync_engine(db_url)
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
