"""When an alert still wants a person: not resolved, and the writeback it is about (if any) not since
posted, cleared or skipped.

A failed writeback that staff fix and Retry, or post by hand and Clear, no longer needs its alert: the PMS's
alert feed drops it and the e-mail/webhook digest does not mention it. Read, not stored: a writeback that
fails again for the same reason shows its alert again (alerts are raised once per writeback and code), and
nothing has to be written on the posting path for it.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, exists
from sqlalchemy.orm import aliased

from ledgerlink.store.models import Alert, Writeback, WritebackStatus

SETTLED = tuple(status.value for status in WritebackStatus if status.is_terminal)


def alert_is_open() -> ColumnElement[bool]:
    # An alias: the query this goes into may join writebacks itself, and only Alert is to be correlated.
    writeback = aliased(Writeback)
    settled = exists().where(writeback.id == Alert.writeback_id, writeback.status.in_(SETTLED))
    return and_(Alert.resolved_at.is_(None), ~settled)
