"""The alert digest: each practice's new alerts (failed and unmatched writebacks) sent to all its targets.

`send_digests` is what a worker runs every LEDGERLINK_DIGEST_INTERVAL_SECONDS (and `ledgerlink notify
send` runs at once). For each practice with active targets and alerts neither sent nor resolved, it
builds one digest, sends it to every active target, and marks exactly the alerts it contained as sent
(`notified_at`), only when every target got it. When one target fails, the alerts stay unsent and the
next digest carries them again, to every target: targets that got them already get them twice (delivery
is at least once per target; the schema keeps no per-target record that would allow more). The summary
names each failed target and why, and the other practices go on.

Two processes running it at once send each alert once (see claim.py); one that dies mid-send leaves its
alerts unmarked, and they go out again next time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from sqlalchemy import ColumnElement, and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.clock import utcnow
from ledgerlink.log import get_logger
from ledgerlink.notify.claim import digest_round, practice_claim
from ledgerlink.notify.content import Digest, DigestAlert, dashboard_link, digest_notice, without_names
from ledgerlink.notify.delivery import Delivery, deliver, http_client
from ledgerlink.open_alerts import alert_is_open
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import Settings
from ledgerlink.store.db import Database
from ledgerlink.store.models import (
    Alert,
    Connection,
    NotificationTarget,
    Patient,
    PatientAccount,
    Practice,
    Transaction,
    Writeback,
)

log = get_logger(__name__)

MAX_ALERTS_PER_DIGEST = 500
"""A practice's first digest after months without targets could hold thousands; the rest follow."""


@dataclass(frozen=True, slots=True)
class PracticeDigest:
    practice: str  # the practice id (slug)
    alerts: int
    notified: bool  # every target got it, and its alerts are marked sent
    deliveries: list[Delivery]


@dataclass(slots=True)
class DigestSummary:
    digests: list[PracticeDigest] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # practices (or the round) another process is sending
    errors: list[str] = field(default_factory=list)  # practices whose digest could not be built

    @property
    def alerts_notified(self) -> int:
        return sum(d.alerts for d in self.digests if d.notified)

    @property
    def failures(self) -> list[tuple[str, Delivery]]:
        return [(d.practice, x) for d in self.digests for x in d.deliveries if not x.ok]

    def lines(self) -> list[str]:
        """The summary in words, one line per practice, failed target and skip."""
        out = [
            f"{d.practice}: {d.alerts} alert(s) "
            + ("sent to every target" if d.notified else "kept for the next digest: not every target got it")
            for d in self.digests
        ]
        out += [
            f"  {practice}: {x.kind} target {x.target_id} ({x.address}) failed: {x.detail}"
            for practice, x in self.failures
        ]
        out += [f"skipped {what}" for what in self.skipped]
        out += [f"error: {what}" for what in self.errors]
        return out or ["no new alerts to send"]


async def send_digests(
    db: Database,
    settings: Settings,
    *,
    http: httpx.AsyncClient | None = None,
    practice_id: int | None = None,
) -> DigestSummary:
    """Send every practice's digest of new alerts (or only `practice_id`'s; see the module's docstring).

    A target that fails is reported in the summary, never raised. `http` serves the webhooks (default: a
    client of our own with LEDGERLINK_WEBHOOK_TIMEOUT_SECONDS)."""
    summary = DigestSummary()
    box = SecretBox.for_data_dir(settings.data_dir)
    async with digest_round(db) as mine:
        if not mine:
            summary.skipped.append("this round: another process is sending digests")
            return summary
        async with db.sessions() as session:
            candidates = await _practices_with_news(session, practice_id)
        async with http_client(http, settings) as client:
            for candidate, slug in candidates:
                async with practice_claim(db, candidate) as claimed:
                    if not claimed:
                        summary.skipped.append(f"{slug}: another process is sending its digest")
                        continue
                    try:
                        result = await _send_one(db, candidate, settings, box, client)
                    except Exception as exc:  # one practice's bad data must not stop the others' digests
                        log.error("notify.digest_failed", practice_id=candidate, error=type(exc).__name__)
                        summary.errors.append(f"{slug}: the digest could not be sent ({type(exc).__name__})")
                        continue
                if result is not None:
                    summary.digests.append(result)
    return summary


async def _practices_with_news(session: AsyncSession, only: int | None) -> list[tuple[int, str]]:
    """Practices with an active target and an alert neither sent nor resolved, by id."""
    pending = exists().where(Alert.practice_id == Practice.id, Alert.notified_at.is_(None), alert_is_open())
    targeted = exists().where(
        NotificationTarget.practice_id == Practice.id, NotificationTarget.active.is_(True)
    )
    query = select(Practice.id, Practice.slug).where(targeted, pending).order_by(Practice.id)
    if only is not None:
        query = query.where(Practice.id == only)
    rows = await session.execute(query)
    return [(pid, slug) for pid, slug in rows]


async def _send_one(
    db: Database, practice_id: int, settings: Settings, box: SecretBox, http: httpx.AsyncClient
) -> PracticeDigest | None:
    async with db.sessions() as session:
        practice = await session.get(Practice, practice_id)
        targets = list(
            await session.scalars(
                select(NotificationTarget)
                .where(NotificationTarget.practice_id == practice_id, NotificationTarget.active.is_(True))
                .order_by(NotificationTarget.id)
            )
        )
        alerts = await pending_alerts(session, practice_id)
        waiting = await session.scalar(select(func.count()).select_from(Alert).where(_unsent(practice_id)))
    if practice is None or not targets or not alerts:
        return None  # removed, or sent by another process between the listing and the claim
    digest = Digest(
        practice_slug=practice.slug,
        practice_name=practice.name,
        alerts=alerts,
        waiting=int(waiting or 0),
        link=dashboard_link(settings.dashboard_url),
        created_at=utcnow(),
    )
    notice = digest_notice(digest)
    deliveries = [await deliver(t, notice, settings=settings, box=box, http=http) for t in targets]
    notified = all(d.ok for d in deliveries)
    if notified:
        async with db.sessions.begin() as session:
            await session.execute(
                update(Alert)
                .where(Alert.id.in_([a.alert_id for a in alerts]), Alert.notified_at.is_(None))
                .values(notified_at=utcnow())
            )
    for failed in (d for d in deliveries if not d.ok):
        log.warning(
            "notify.target_failed",
            practice_id=practice_id,
            target_id=failed.target_id,
            kind=failed.kind,
            reason=failed.detail,
        )
    log.info(
        "notify.digest",
        practice_id=practice_id,
        alerts=len(alerts),
        targets=len(targets),
        failed=sum(not d.ok for d in deliveries),
    )
    return PracticeDigest(practice.slug, len(alerts), notified, deliveries)


def _unsent(practice_id: int) -> ColumnElement[bool]:
    return and_(Alert.practice_id == practice_id, Alert.notified_at.is_(None), alert_is_open())


async def pending_alerts(
    session: AsyncSession, practice_id: int, limit: int = MAX_ALERTS_PER_DIGEST
) -> list[DigestAlert]:
    """The practice's oldest alerts not yet sent nor resolved, with what a digest shows of each."""
    w, t = Writeback, Transaction
    rows = await session.execute(
        select(
            Alert.id,
            Alert.code,
            Alert.message,
            Alert.created_at,
            Alert.writeback_id,
            Connection.name,
            w.amount_cents,
            t.currency,
            w.local_date,
            w.status,
            Patient.patient_ref,
            PatientAccount.account_number,
            Patient.first_name,
            Patient.last_name,
        )
        .outerjoin(w, w.id == Alert.writeback_id)
        .outerjoin(Connection, Connection.id == func.coalesce(Alert.connection_id, w.connection_id))
        .outerjoin(t, t.id == w.transaction_id)
        .outerjoin(Patient, Patient.id == t.patient_id)
        .outerjoin(
            PatientAccount,
            (PatientAccount.patient_id == t.patient_id) & (PatientAccount.connection_id == w.connection_id),
        )
        .where(_unsent(practice_id))
        .order_by(Alert.id)
        .limit(limit)
    )
    return [
        DigestAlert(
            alert_id=r.id,
            code=r.code,
            message=without_names(r.message, (r.first_name, r.last_name)),
            raised_at=r.created_at,
            writeback_id=r.writeback_id,
            connection=r.name,
            amount_cents=r.amount_cents,
            currency=r.currency,
            local_date=r.local_date,
            status=r.status,
            patient_ref=r.patient_ref,
            account_number=r.account_number,
        )
        for r in rows
    ]
