"""The one clock. Tests move time by patching `utcnow` here, nowhere else."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
