"""Database tables. Money columns are integer cents; times are timezone-aware UTC."""

from __future__ import annotations

import enum
from datetime import date, datetime, time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ledgerlink.clock import utcnow

# BIGINT keys on PostgreSQL; SQLite only auto-increments a column declared exactly INTEGER.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always hands back aware datetimes (SQLite otherwise returns naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        from datetime import UTC

        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        from datetime import UTC

        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class WritebackStatus(enum.StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"  # a PMS write has started; its outcome is unknown until recorded
    POSTED = "posted"
    FAILED = "failed"
    SKIPPED = "skipped"
    CLEARED = "cleared"  # staff reviewed it and posted it by hand

    @property
    def is_terminal(self) -> bool:
        return self in (WritebackStatus.POSTED, WritebackStatus.SKIPPED, WritebackStatus.CLEARED)


class Practice(Base):
    __tablename__ = "practices"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="America/New_York")
    patient_capacity: Mapped[int | None] = mapped_column(Integer, default=None)
    # The public practice id a PMS presents with its merchant key (the seeds' CP_ID); set with the first key.
    public_id: Mapped[str | None] = mapped_column(String(32), unique=True, default=None)
    # How the dashboard writes money and dates for this practice (a Babel/CLDR locale such as en_US).
    locale: Mapped[str] = mapped_column(String(16), default="en_US", server_default="en_US")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("practice_id", "name"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    start_date: Mapped[date | None] = mapped_column(Date, default=None)
    amount_mode: Mapped[str] = mapped_column(String(20), default="net")
    timing: Mapped[str] = mapped_column(String(10), default="instant")
    daily_time: Mapped[time] = mapped_column(Time, default=time(18, 0))
    chargebacks_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    type_handling: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Transactions with ids up to this one already have a writeback on this connection.
    enrolled_through: Mapped[int] = mapped_column(BigInteger, default=0)
    sync_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    sync_lease_until: Mapped[datetime | None] = mapped_column(default=None)
    # The practice-local date of the last daily run a worker started (one daily run per local day).
    last_daily_on: Mapped[date | None] = mapped_column(Date, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("practice_id", "patient_ref"),
        Index("ix_patients_name", "practice_id", "last_name", "first_name"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    patient_ref: Mapped[str] = mapped_column(String(100))  # the payment platform's patient id
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    birth_date: Mapped[date | None] = mapped_column(Date, default=None)
    email: Mapped[str] = mapped_column(String(200), default="")
    phone: Mapped[str] = mapped_column(String(50), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_import_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class PatientAccount(Base):
    """A patient's PMS account number on one connection (the seeds' "3rd Party Software Acct Number")."""

    __tablename__ = "patient_accounts"
    __table_args__ = (
        UniqueConstraint("patient_id", "connection_id"),
        Index("ix_patient_accounts_number", "connection_id", "account_number"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    account_number: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        UniqueConstraint("practice_id", "processor_ref"),
        Index("ix_transactions_local_date", "practice_id", "local_date"),
        # Enrolment: a practice's transactions above a connection's `enrolled_through`, in id order.
        Index("ix_transactions_practice_id", "practice_id", "id"),
        # The reversals of a payment: deciding one looks for its siblings still unconfirmed in the PMS.
        Index("ix_transactions_original_id", "original_id"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    processor_ref: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(32), default="csv")
    kind: Mapped[str] = mapped_column(String(16))
    payment_type: Mapped[str] = mapped_column(String(16))
    gross_cents: Mapped[int] = mapped_column(BigInteger)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    net_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    occurred_at: Mapped[datetime] = mapped_column()
    local_date: Mapped[date] = mapped_column(Date)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), default=None)
    original_id: Mapped[int | None] = mapped_column(ForeignKey("transactions.id"), default=None)
    original_ref: Mapped[str | None] = mapped_column(String(200), default=None)
    card_brand: Mapped[str] = mapped_column(String(20), default="")
    card_last4: Mapped[str] = mapped_column(String(4), default="")
    description: Mapped[str] = mapped_column(String(500), default="")
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class Writeback(Base):
    """One transaction on one connection, and where its writing into the PMS stands."""

    __tablename__ = "writebacks"
    __table_args__ = (
        UniqueConstraint("transaction_id", "connection_id"),
        Index("ix_writebacks_due", "connection_id", "status", "id"),
        Index("ix_writebacks_run", "last_run_id", "category"),
        # Covers the date-range report: it is answered from this index alone, without the table or a join.
        Index("ix_writebacks_local_date", "connection_id", "local_date", "category", "amount_cents"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("transactions.id", ondelete="CASCADE"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    # The transaction's practice-local date, copied at enrolment so date-range queries need no join.
    local_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default=WritebackStatus.PENDING.value)
    category: Mapped[str | None] = mapped_column(String(32), default=None)
    amount_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    fee_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    reversed_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    skip_reason: Mapped[str | None] = mapped_column(String(40), default=None)
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    pms_ref: Mapped[str | None] = mapped_column(String(100), default=None)
    posting_date: Mapped[date | None] = mapped_column(Date, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # True when a write may have reached the PMS without us learning the outcome: look before writing.
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_run_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SyncRun(Base):
    __tablename__ = "sync_runs"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    trigger: Mapped[str] = mapped_column(String(16), default="on_demand")
    status: Mapped[str] = mapped_column(String(16), default="running")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    since_date: Mapped[date | None] = mapped_column(Date, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class SyncRunTotal(Base):
    __tablename__ = "sync_run_totals"
    run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id", ondelete="CASCADE"), primary_key=True)
    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total_cents: Mapped[int] = mapped_column(BigInteger)


class Alert(Base):
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id"), default=None)
    writeback_id: Mapped[int | None] = mapped_column(ForeignKey("writebacks.id"), default=None)
    code: Mapped[str] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(Text)
    delivered_to_pms: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the alert went out in an e-mail / webhook digest (None: not yet).
    notified_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEntry(Base):
    """Append-only: who did what. Nothing updates or deletes these rows."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PatientImport(Base):
    __tablename__ = "patient_imports"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id"), default=None)
    filename: Mapped[str] = mapped_column(String(500))
    preset: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[int] = mapped_column(Integer, default=0)
    updated: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class PatientImportRejection(Base):
    __tablename__ = "patient_import_rejections"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    import_id: Mapped[int] = mapped_column(ForeignKey("patient_imports.id", ondelete="CASCADE"), index=True)
    row_number: Mapped[int] = mapped_column(Integer)
    column: Mapped[str] = mapped_column(String(100), default="")
    reason: Mapped[str] = mapped_column(Text)


class ApiToken(Base):
    """A staff API token: shown once when created, kept only as a hash.

    The token is `ll_<prefix>_<secret>`; `prefix` (public, unique) finds the row and the SHA-256 of the
    whole token is compared in constant time. A random 256-bit secret needs no slow hash: there is nothing
    to guess a dictionary word from.
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class IdempotencyKey(Base):
    """The first answer to a request made with an `Idempotency-Key`, replayed for the same key and body."""

    __tablename__ = "idempotency_keys"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    """A staff account: privileges and login hours (weekday + time windows in the practice's time zone)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("practice_id", "username"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    privileges: Mapped[list[str]] = mapped_column(JSON, default=list)
    # [{"days": [0..6 (Monday=0)], "start": "HH:MM", "end": "HH:MM"}]; empty: any time.
    login_hours: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # argon2 hash of the dashboard password; None: this user cannot sign in to the dashboard.
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebSession(Base):
    """A signed-in dashboard session. The browser holds the token; only its SHA-256 is stored, so a copy
    of the database signs no one in. Signing out deletes the row."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()


class AccessKey(Base):
    """A practice's merchant key (kind "merchant") or a user's clerk key (kind "clerk"), kept as a hash.

    Rotation issues a new key and gives the old one an `expires_at` (the overlap period) instead of
    revoking it at once, so a PMS can switch keys without a gap.
    """

    __tablename__ = "access_keys"
    __table_args__ = (Index("ix_access_keys_owner", "practice_id", "kind", "user_id"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    kind: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class AuthFailure(Base):
    """Failed authentication attempts per scope (e.g. a practice id or a client address), for rate limits.

    Kept in the database so that every API process behind a load balancer counts the same attempts.
    """

    __tablename__ = "auth_failures"
    scope: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(default=utcnow)
    blocked_until: Mapped[datetime | None] = mapped_column(default=None)


class WebhookSecret(Base):
    """A signing secret of a processor's inbound webhooks (Stripe's `whsec_...`), sealed at rest.

    Several may be live at once: after a rotation the old secret verifies until `expires_at`.
    """

    __tablename__ = "webhook_secrets"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(32), default="stripe")
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)


class WebhookEvent(Base):
    """An inbound webhook event already handled: a replay of the same event id changes nothing."""

    __tablename__ = "webhook_events"
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationTarget(Base):
    """Where a practice's alert digest goes: an e-mail address, or a URL that gets signed webhooks."""

    __tablename__ = "notification_targets"
    id: Mapped[int] = mapped_column(Id, primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "email" or "webhook"
    address: Mapped[str] = mapped_column(String(500))
    secret_sealed: Mapped[str | None] = mapped_column(Text, default=None)  # webhook signing secret
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
