"""The append-only audit log: who changed settings, retried or cleared what, and every PMS write."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.store.models import AuditEntry


async def record_audit(
    session: AsyncSession,
    practice_id: int | None,
    actor: str,
    action: str,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Add an audit row in the caller's transaction, so the entry exists exactly when the change does."""
    session.add(
        AuditEntry(practice_id=practice_id, actor=actor, action=action, target=target, detail=detail or {})
    )
