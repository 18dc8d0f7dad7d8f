"""The alert feed a pulling PMS shows as tasks (seed 001: Workbench -> Tasks, and a note on the patient).

The feed holds the practice's open alerts (`ledgerlink.open_alerts`: a writeback since posted, cleared or
skipped no longer needs its task) that concern its pull connections (or no connection at all)
and that the PMS has not taken yet, oldest first. The PMS marks each one done once it has made its task,
and it leaves the feed. Alerts of the practice's other connections belong to those PMSs and never appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.errors import NotFound
from ledgerlink.open_alerts import alert_is_open
from ledgerlink.practices import PULL_KIND
from ledgerlink.store.models import Alert, Connection, PatientAccount, Practice, Transaction, Writeback

MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class AlertTask:
    id: int
    code: str
    message: str
    explanation: str  # what the code means for the front desk, and what to do about it
    writeback_id: int | None
    processor_ref: str | None
    account_number: str | None  # the patient to leave a note on, when known
    created_at: datetime
    done: bool


async def alert_feed(
    session: AsyncSession, practice: Practice, *, after: int = 0, limit: int = 100
) -> list[AlertTask]:
    """The open alerts the PMS has not taken yet, oldest first, with ids above `after`."""
    rows = await session.execute(
        _feed_query(practice)
        .where(alert_is_open(), Alert.delivered_to_pms.is_(False), Alert.id > after)
        .order_by(Alert.id)
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    return [_task(*row) for row in rows]


async def mark_done(session: AsyncSession, practice: Practice, alert_id: int, *, actor: str) -> AlertTask:
    """The PMS has made its task for the alert: it leaves the feed. Doing it again changes nothing."""
    row = (await session.execute(_feed_query(practice).where(Alert.id == alert_id))).first()
    if row is None:
        raise NotFound(f"no alert {alert_id} in this practice's feed", field="alert_id")
    alert = row[0]
    if not alert.delivered_to_pms:
        alert.delivered_to_pms = True
        await record_audit(session, practice.id, actor, "alert.delivered_to_pms", f"alert:{alert.id}")
    return _task(alert, row[1], row[2])


def _feed_query(practice: Practice) -> Select[Alert, str, str]:
    pull_connections = select(Connection.id).where(
        Connection.practice_id == practice.id, Connection.kind == PULL_KIND
    )
    return (
        select(Alert, Transaction.processor_ref, PatientAccount.account_number)
        .outerjoin(Writeback, Writeback.id == Alert.writeback_id)
        .outerjoin(Transaction, Transaction.id == Writeback.transaction_id)
        .outerjoin(
            PatientAccount,
            and_(
                PatientAccount.patient_id == Transaction.patient_id,
                PatientAccount.connection_id == Writeback.connection_id,
            ),
        )
        .where(
            Alert.practice_id == practice.id,
            or_(Alert.connection_id.is_(None), Alert.connection_id.in_(pull_connections)),
        )
    )


def _task(alert: Alert, processor_ref: Any, account_number: Any) -> AlertTask:
    try:
        explanation = LoadErrorCode(alert.code).explanation
    except ValueError:
        explanation = ""
    return AlertTask(
        id=alert.id,
        code=alert.code,
        message=alert.message,
        explanation=explanation,
        writeback_id=alert.writeback_id,
        processor_ref=processor_ref,
        account_number=(account_number or "").strip() or None,
        created_at=alert.created_at,
        done=alert.delivered_to_pms,
    )
