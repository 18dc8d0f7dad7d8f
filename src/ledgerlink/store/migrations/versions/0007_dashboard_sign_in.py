"""Dashboard sign-in: users.password_hash, web_sessions, practices.locale

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 13:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_hash", sa.String(length=200), nullable=True))
    with op.batch_alter_table("practices") as batch:
        batch.add_column(sa.Column("locale", sa.String(length=16), nullable=False, server_default="en_US"))
    op.create_table(
        "web_sessions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_table("web_sessions")
    with op.batch_alter_table("practices") as batch:
        batch.drop_column("locale")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_hash")
