"""Practices and their PMS connections: creation, lookup, and reading a connection's writeback rules."""

from __future__ import annotations

import re
from datetime import date, time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.clock import time_zone
from ledgerlink.domain.rules import AmountMode, Timing, TypeHandling, WritebackRules
from ledgerlink.domain.transactions import PaymentType
from ledgerlink.errors import Conflict, InvalidInput, NotFound
from ledgerlink.store.models import Connection, Practice

PULL_KIND = "pull"
"""A connection the PMS writes itself: it downloads transactions and reports them loaded through the pull
API (ledgerlink.pull, docs/pull-api.md). It has no connector and no settings; no sync or worker runs it."""
CONNECTOR_KINDS = ("sandbox", "opendental", PULL_KIND)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")


def check_timezone(name: str) -> str:
    try:
        time_zone(name)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="timezone") from None
    return name


def check_locale(name: str) -> str:
    """`name` (normalised: fr-CA -> fr_CA) if Babel's CLDR data knows it, so money and dates can be
    written in it (en_US, en_CA, fr_CA, es_US...)."""
    from babel import Locale, UnknownLocaleError

    normal = name.strip().replace("-", "_")
    try:
        Locale.parse(normal)
    except (UnknownLocaleError, ValueError):
        raise InvalidInput(
            f"unknown locale {name!r} (use a language and country such as en_US or fr_CA)", field="locale"
        ) from None
    return normal


def check_practice_field(field: str, value: Any) -> Any:
    """A practice setting checked as `update_practice` stores it; InvalidInput naming the field if not."""
    if field == "name":
        name = value.strip() if isinstance(value, str) else ""
        if not name or len(name) > 200:
            raise InvalidInput("the practice needs a name of 1 to 200 characters", field="name")
        return name
    if field == "timezone":
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("the practice needs a time zone such as America/Chicago", field="timezone")
        return check_timezone(value.strip())
    if field == "locale":
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput("the practice needs a locale such as en_US", field="locale")
        return check_locale(value)
    if field == "patient_capacity":
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000_000
        ):
            raise InvalidInput("the patient capacity is a whole number from 1 to 10,000,000", field=field)
        return value
    raise InvalidInput(f"{field!r} is not a practice setting", field=field)


async def update_practice(
    session: AsyncSession, practice: Practice, wanted: dict[str, Any], *, actor: str
) -> dict[str, Any]:
    """Set the practice's name, timezone, locale or patient_capacity (the keys of `wanted`; a capacity of
    None removes the limit), audited; returns {field: {"previous", "new"}} of what changed."""
    checked = {field: check_practice_field(field, value) for field, value in wanted.items()}
    changes: dict[str, Any] = {}
    for field, value in checked.items():
        if getattr(practice, field) != value:
            changes[field] = {"previous": getattr(practice, field), "new": value}
            setattr(practice, field, value)
    if changes:
        await record_audit(
            session, practice.id, actor, "practice.update", f"practice:{practice.slug}", changes
        )
    return changes


async def create_practice(
    session: AsyncSession,
    *,
    slug: str,
    name: str,
    timezone: str = "America/New_York",
    patient_capacity: int | None = None,
    actor: str = "cli",
) -> Practice:
    if not _SLUG.match(slug):
        raise InvalidInput(
            f"practice id {slug!r} must be lower-case letters, digits and dashes (at most 64)", field="slug"
        )
    if patient_capacity is not None and patient_capacity < 1:
        raise InvalidInput("patient capacity must be at least 1", field="patient_capacity")
    check_timezone(timezone)
    if await session.scalar(select(Practice.id).where(Practice.slug == slug)) is not None:
        raise Conflict(f"a practice with id {slug!r} already exists", field="slug")
    practice = Practice(slug=slug, name=name, timezone=timezone, patient_capacity=patient_capacity)
    session.add(practice)
    await session.flush()
    await record_audit(session, practice.id, actor, "practice.create", f"practice:{slug}", {"name": name})
    return practice


async def get_practice(session: AsyncSession, slug: str) -> Practice:
    practice = await session.scalar(select(Practice).where(Practice.slug == slug))
    if practice is None:
        raise NotFound(f"no practice with id {slug!r}; see `ledgerlink practice list`", field="practice")
    return practice


async def list_practices(session: AsyncSession) -> list[Practice]:
    return list(await session.scalars(select(Practice).order_by(Practice.slug)))


async def resolve_practice(session: AsyncSession, slug: str | None) -> Practice:
    """The named practice, or the only one when there is exactly one (so single-office use needs no flag)."""
    if slug:
        return await get_practice(session, slug)
    practices = await list_practices(session)
    if len(practices) == 1:
        return practices[0]
    if not practices:
        raise NotFound("there is no practice yet; create one with `ledgerlink practice create`")
    raise InvalidInput("there are several practices; name one with --practice", field="practice")


def parse_type_handling(values: dict[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in values.items():
        try:
            result[PaymentType(key).value] = TypeHandling(value).value
        except ValueError:
            raise InvalidInput(
                f"bad payment type rule {key}={value}: types are {', '.join(t.value for t in PaymentType)}; "
                f"rules are {', '.join(h.value for h in TypeHandling)}",
                field="type_handling",
            ) from None
    return result


async def add_connection(
    session: AsyncSession,
    practice: Practice,
    *,
    name: str,
    kind: str,
    settings: dict[str, Any] | None = None,
    start_date: date | None = None,
    amount_mode: str = AmountMode.NET.value,
    timing: str = Timing.INSTANT.value,
    daily_time: time = time(18, 0),
    chargebacks_enabled: bool = True,
    type_handling: dict[str, Any] | None = None,
    actor: str = "cli",
) -> Connection:
    if kind not in CONNECTOR_KINDS:
        raise InvalidInput(
            f"unknown connector {kind!r}; available: {', '.join(CONNECTOR_KINDS)}", field="kind"
        )
    if kind == PULL_KIND and settings:
        raise InvalidInput(
            "a pull connection takes no settings: the PMS presents the practice's keys instead",
            field="settings",
        )
    try:
        AmountMode(amount_mode)
        Timing(timing)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="amount_mode") from None
    exists = await session.scalar(
        select(func.count())
        .select_from(Connection)
        .where(Connection.practice_id == practice.id, Connection.name == name)
    )
    if exists:
        raise Conflict(f"practice {practice.slug!r} already has a connection named {name!r}", field="name")
    connection = Connection(
        practice_id=practice.id,
        name=name,
        kind=kind,
        settings=settings or {},
        start_date=start_date,
        amount_mode=amount_mode,
        timing=timing,
        daily_time=daily_time,
        chargebacks_enabled=chargebacks_enabled,
        type_handling=parse_type_handling(type_handling or {}),
    )
    session.add(connection)
    await session.flush()
    await record_audit(
        session,
        practice.id,
        actor,
        "connection.add",
        f"connection:{connection.id}",
        {"name": name, "kind": kind, "amount_mode": amount_mode, "start_date": str(start_date or "")},
    )
    return connection


async def get_connection(session: AsyncSession, practice: Practice, name: str | None = None) -> Connection:
    """The named connection of a practice, or its only one."""
    query = select(Connection).where(Connection.practice_id == practice.id).order_by(Connection.id)
    if name:
        query = query.where(Connection.name == name)
    connections = list(await session.scalars(query))
    if not connections:
        what = f"named {name!r} " if name else ""
        raise NotFound(
            f"practice {practice.slug!r} has no connection {what}; add one with `ledgerlink connection add`",
            field="connection",
        )
    if len(connections) > 1:
        raise InvalidInput(
            "the practice has several connections; name one with --connection", field="connection"
        )
    return connections[0]


def rules_for(connection: Connection, practice: Practice) -> WritebackRules:
    return WritebackRules(
        timezone=practice.timezone,
        start_date=connection.start_date,
        amount_mode=AmountMode(connection.amount_mode),
        chargebacks_enabled=connection.chargebacks_enabled,
        timing=Timing(connection.timing),
        daily_time=connection.daily_time,
        type_handling={PaymentType(k): TypeHandling(v) for k, v in connection.type_handling.items()},
    )


async def find_practice(session: AsyncSession, slug: str) -> Practice | None:
    return await session.scalar(select(Practice).where(Practice.slug == slug))


async def delete_practice(session: AsyncSession, practice: Practice) -> None:
    """Remove a practice and everything it owns, children first (used by the demo to start afresh)."""
    from sqlalchemy import delete

    from ledgerlink.store.models import (
        Alert,
        AuditEntry,
        Patient,
        PatientAccount,
        PatientImport,
        PatientImportRejection,
        SyncRun,
        SyncRunTotal,
        Transaction,
        Writeback,
    )

    connections = select(Connection.id).where(Connection.practice_id == practice.id).scalar_subquery()
    runs = select(SyncRun.id).where(SyncRun.connection_id.in_(connections)).scalar_subquery()
    imports = select(PatientImport.id).where(PatientImport.practice_id == practice.id).scalar_subquery()
    for statement in (
        delete(Alert).where(Alert.practice_id == practice.id),
        delete(SyncRunTotal).where(SyncRunTotal.run_id.in_(runs)),
        delete(SyncRun).where(SyncRun.connection_id.in_(connections)),
        delete(Writeback).where(Writeback.connection_id.in_(connections)),
        delete(PatientAccount).where(PatientAccount.connection_id.in_(connections)),
        delete(Transaction).where(Transaction.practice_id == practice.id),
        delete(Patient).where(Patient.practice_id == practice.id),
        delete(PatientImportRejection).where(PatientImportRejection.import_id.in_(imports)),
        delete(PatientImport).where(PatientImport.practice_id == practice.id),
        delete(Connection).where(Connection.practice_id == practice.id),
        delete(AuditEntry).where(AuditEntry.practice_id == practice.id),
        delete(Practice).where(Practice.id == practice.id),
    ):
        await session.execute(statement.execution_options(synchronize_session=False))
