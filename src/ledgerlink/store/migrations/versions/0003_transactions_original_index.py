"""transactions.original_id index: finding a payment's other reversals without a table scan

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 14:30:00.000000
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_transactions_original_id", "transactions", ["original_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_transactions_original_id", table_name="transactions")
