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
