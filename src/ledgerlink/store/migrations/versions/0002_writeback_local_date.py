"""writebacks.local_date: the transaction's practice-local date, denormalised for the date-range report

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("local_date", sa.Date(), nullable=True))

    # Existing writebacks take their transaction's date (never changes after import).
    if op.get_context().dialect.name == "postgresql":
        op.execute(
            "UPDATE writebacks SET local_date = transactions.local_date"
            " FROM transactions WHERE transactions.id = writebacks.transaction_id"
        )
    else:
        op.execute(
            "UPDATE writebacks SET local_date ="
            " (SELECT transactions.local_date FROM transactions WHERE transactions.id = writebacks.transaction_id)"
        )

    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.alter_column("local_date", existing_type=sa.Date(), nullable=False)
        batch_op.create_index(
            "ix_writebacks_local_date",
            ["connection_id", "local_date", "category", "amount_cents"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("writebacks", schema=None) as batch_op:
        batch_op.drop_index("ix_writebacks_local_date")
        batch_op.drop_column("local_date")
