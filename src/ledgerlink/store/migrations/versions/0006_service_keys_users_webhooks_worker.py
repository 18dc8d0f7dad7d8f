"""Service tables: users, merchant and clerk keys, auth failures, webhook secrets and events,
notification targets; practices.public_id, connections.last_daily_on, alerts.notified_at

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 08:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("practices") as batch:
        batch.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch.create_unique_constraint("uq_practices_public_id", ["public_id"])
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("last_daily_on", sa.Date(), nullable=True))
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("notified_at", TS, nullable=True))

    op.create_table(
        "users",
        sa.Column("id", ID, primary_key=True),
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("privileges", sa.JSON(), nullable=False),
        sa.Column("login_hours", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("practice_id", "username"),
    )
    op.create_index("ix_users_practice_id", "users", ["practice_id"])
    op.create_table(
        "access_keys",
        sa.Column("id", ID, primary_key=True),
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("revoked_at", TS, nullable=True),
    )
    op.create_index("ix_access_keys_owner", "access_keys", ["practice_id", "kind", "user_id"])
    op.create_table(
        "auth_failures",
        sa.Column("scope", sa.String(length=200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", TS, nullable=False),
        sa.Column("blocked_until", TS, nullable=True),
    )
    op.create_table(
        "webhook_secrets",
        sa.Column("id", ID, primary_key=True),
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
    )
    op.create_index("ix_webhook_secrets_practice_id", "webhook_secrets", ["practice_id"])
    op.create_table(
        "webhook_events",
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source", sa.String(length=32), primary_key=True),
        sa.Column("event_id", sa.String(length=255), primary_key=True),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "notification_targets",
        sa.Column("id", ID, primary_key=True),
        sa.Column("practice_id", ID, sa.ForeignKey("practices.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=500), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_notification_targets_practice_id", "notification_targets", ["practice_id"])


def downgrade() -> None:
    for table in ("notification_targets", "webhook_events", "webhook_secrets", "auth_failures"):
        op.drop_table(table)
    op.drop_table("access_keys")
    op.drop_table("users")
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("notified_at")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("last_daily_on")
    with op.batch_alter_table("practices") as batch:
        batch.drop_constraint("uq_practices_public_id", type_="unique")
        batch.drop_column("public_id")
