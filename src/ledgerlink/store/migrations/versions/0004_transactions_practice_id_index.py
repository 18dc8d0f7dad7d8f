"""transactions (practice_id, id) index: enrolling many connections' new transactions in one statement

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 17:00:00.000000
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_transactions_practice_id", "transactions", ["practice_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transactions_practice_id", table_name="transactions")
