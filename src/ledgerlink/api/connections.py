"""The practice's PMS connections: list, add, read and change their settings and writeback rules.

Secrets never leave the server: a settings value that is stored sealed, or whose name says it is a
secret, is answered as `MASK`. Sending `MASK` back in a change keeps the stored value, so a client can
send what it read with one field edited. Settings are checked against the connector's own settings model
before anything is stored, and sealed with the installation's key (`registry.settings_to_store`).
"""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.writebacks import ISO_DATE, StaffCaller, parse_date
from ledgerlink.audit import record_audit
from ledgerlink.connectors.opendental.direct_db import DirectDbSettings
from ledgerlink.connectors.opendental.settings import SECRET_FIELDS, OpenDentalSettings
from ledgerlink.connectors.registry import is_direct_db, settings_to_store
from ledgerlink.connectors.sandbox import SandboxSettings
from ledgerlink.domain.rules import AmountMode, Timing, TypeHandling
from ledgerlink.domain.transactions import PaymentType
from ledgerlink.errors import InvalidInput
from ledgerlink.practices import CONNECTOR_KINDS, PULL_KIND, add_connection, parse_type_handling
from ledgerlink.secrets import SecretBox
from ledgerlink.store.models import Connection, Practice

MASK = "********"
# Setting names that hold secrets even when a value is stored plain (the direct mode's database URL, and
# any name that says key, secret, password or token).
_SECRET_NAMES = frozenset({*SECRET_FIELDS, "database_url"})
_SECRET_WORDS = ("key", "secret", "password", "token")
HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"

router = APIRouter(
    prefix="/v1",
    tags=["connections"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope, "description": "a field is not valid (named in `field`)"},
    },
)

ConnectionId = Annotated[int, Path(ge=1, le=2**63 - 1)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no such connection"}
}


class RulesOut(BaseModel):
    start_date: date | None = Field(description="nothing dated before it is written back")
    amount_mode: AmountMode
    timing: Timing
    daily_time: str = Field(description="practice-local HH:MM of the daily writeback")
    chargebacks_enabled: bool
    type_handling: dict[str, TypeHandling] = Field(description="every payment type and how it is handled")


class ConnectionOut(BaseModel):
    id: int
    name: str
    kind: str
    settings: dict[str, Any] = Field(description=f"secrets are shown as {MASK!r}")
    rules: RulesOut
    created_at: datetime


class RulesIn(BaseModel):
    """Only the fields sent are changed. `type_handling` is merged per payment type (null: automatic)."""

    model_config = ConfigDict(extra="forbid")

    start_date: Annotated[str, Field(pattern=ISO_DATE, description="YYYY-MM-DD; null: none")] | None = None
    amount_mode: AmountMode | None = None
    timing: Timing | None = None
    daily_time: Annotated[str, Field(pattern=HH_MM, description="HH:MM, practice-local")] | None = None
    chargebacks_enabled: StrictBool | None = None
    type_handling: (
        Annotated[
            dict[str, TypeHandling | None],
            Field(
                description="payment type -> automatic, manual or off; types: "
                + ", ".join(t.value for t in PaymentType)
            ),
        ]
        | None
    ) = None


class ConnectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")]
    kind: Annotated[str, Field(description="connector: " + ", ".join(CONNECTOR_KINDS))]
    settings: dict[str, Any] = Field(default_factory=dict)
    rules: RulesIn = Field(default_factory=RulesIn)


class ConnectionChange(BaseModel):
    """Only the fields sent are changed. In `settings`, a null removes a setting and a masked value keeps it."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=r"\S")] | None = None
    settings: dict[str, Any] | None = None
    rules: RulesIn | None = None


def is_secret_setting(name: str, value: Any) -> bool:
    lowered = name.lower()
    return (
        (isinstance(value, str) and SecretBox.is_sealed(value))
        or lowered in _SECRET_NAMES
        or any(word in lowered for word in _SECRET_WORDS)
    )


def masked(settings: dict[str, Any]) -> dict[str, Any]:
    return {name: MASK if is_secret_setting(name, value) else value for name, value in settings.items()}


def connection_out(connection: Connection) -> ConnectionOut:
    handling = connection.type_handling
    return ConnectionOut(
        id=connection.id,
        name=connection.name,
        kind=connection.kind,
        settings=masked(connection.settings),
        rules=RulesOut(
            start_date=connection.start_date,
            amount_mode=AmountMode(connection.amount_mode),
            timing=Timing(connection.timing),
            daily_time=connection.daily_time.strftime("%H:%M"),
            chargebacks_enabled=connection.chargebacks_enabled,
            type_handling={
                t.value: TypeHandling(handling.get(t.value, TypeHandling.AUTOMATIC.value))
                for t in PaymentType
            },
        ),
        created_at=connection.created_at,
    )


async def owned_connection(session: AsyncSession, practice_id: int, connection_id: int) -> Connection:
    """The caller's connection; another practice's is answered like one that does not exist."""
    connection = await session.scalar(
        select(Connection).where(Connection.id == connection_id, Connection.practice_id == practice_id)
    )
    if connection is None:
        raise ApiError(404, "not_found", f"no connection {connection_id}", field="connection_id")
    return connection


@router.get("/connections", response_model=list[ConnectionOut], summary="The practice's PMS connections")
async def get_connections(
    request: Request,
    caller: StaffCaller,
    kind: Annotated[
        str | None,
        Query(
            max_length=32,
            description="only connections of this kind",
            json_schema_extra={"enum": list(CONNECTOR_KINDS)},
        ),
    ] = None,
) -> list[ConnectionOut]:
    query = select(Connection).where(Connection.practice_id == caller.practice.id)
    if kind is not None:
        if kind not in CONNECTOR_KINDS:
            raise ApiError(
                422, "invalid_request", f"kind must be one of {', '.join(CONNECTOR_KINDS)}", field="kind"
            )
        query = query.where(Connection.kind == kind)
    async with database(request).sessions() as session:
        return [connection_out(c) for c in await session.scalars(query.order_by(Connection.id))]


@router.post(
    "/connections",
    status_code=201,
    response_model=ConnectionOut,
    responses={409: {"model": ErrorEnvelope, "description": "the practice has a connection of that name"}},
    summary="Connect the practice to a PMS",
)
async def post_connection(request: Request, caller: StaffCaller, body: ConnectionIn) -> ConnectionOut:
    if body.kind not in CONNECTOR_KINDS:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown connector {body.kind!r}; available: {', '.join(CONNECTOR_KINDS)}",
            field="kind",
        )
    name = body.name.strip()
    raw = dict(body.settings)
    for key, value in raw.items():
        if value == MASK:
            raise ApiError(
                422,
                "invalid_request",
                f"{MASK!r} is how a stored secret is shown; send the secret itself",
                field=f"settings.{key}",
            )
    if body.kind == "sandbox":
        raw.setdefault("path", f"{caller.practice.slug}-{name}.db")
        raw.setdefault("timezone", caller.practice.timezone)
    data_dir: FilePath = request.app.state.data_dir
    stored = checked_settings(body.kind, raw, data_dir, sent=set(raw))
    rules = body.rules
    try:
        async with database(request).sessions.begin() as session:
            practice = await session.get(Practice, caller.practice.id)
            assert practice is not None
            connection = await add_connection(
                session,
                practice,
                name=name,
                kind=body.kind,
                settings=stored,
                start_date=_start_date(rules.start_date),
                amount_mode=(rules.amount_mode or AmountMode.NET).value,
                timing=(rules.timing or Timing.INSTANT).value,
                daily_time=_daily_time(rules.daily_time) or time(18, 0),
                chargebacks_enabled=True if rules.chargebacks_enabled is None else rules.chargebacks_enabled,
                type_handling=_type_handling({}, rules.type_handling or {}),
                actor=caller.actor,
            )
            return connection_out(connection)
    except IntegrityError:  # another request added the same name at the same moment
        raise _name_taken(name) from None


@router.get(
    "/connections/{connection_id}",
    response_model=ConnectionOut,
    responses=_NOT_FOUND,
    summary="A connection, its settings (secrets masked) and its rules",
)
async def get_connection(request: Request, caller: StaffCaller, connection_id: ConnectionId) -> ConnectionOut:
    async with database(request).sessions() as session:
        return connection_out(await owned_connection(session, caller.practice.id, connection_id))


@router.patch(
    "/connections/{connection_id}",
    response_model=ConnectionOut,
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorEnvelope, "description": "the practice has a connection of that name"},
    },
    summary="Change a connection's name, settings or writeback rules",
)
async def patch_connection(
    request: Request, caller: StaffCaller, connection_id: ConnectionId, body: ConnectionChange
) -> ConnectionOut:
    sent = body.model_fields_set
    for field in ("name", "settings"):
        if field in sent and getattr(body, field) is None:
            raise ApiError(422, "invalid_request", f"{field} cannot be null", field=field)
    name = body.name.strip() if body.name is not None else None
    try:
        async with database(request).sessions.begin() as session:
            connection = await owned_connection(session, caller.practice.id, connection_id)
            changes: dict[str, Any] = {}
            if name is not None and name != connection.name:
                taken = await session.scalar(
                    select(Connection.id).where(
                        Connection.practice_id == caller.practice.id, Connection.name == name
                    )
                )
                if taken is not None:
                    raise _name_taken(name)
                changes["name"] = {"previous": connection.name, "new": name}
                connection.name = name
            if body.settings is not None:
                changed = _apply_settings(connection, body.settings, request.app.state.data_dir)
                if changed:
                    changes["settings"] = changed  # names only: values may be secrets
            if body.rules is not None:
                changes.update(_apply_rules(connection, body.rules))
            if changes:
                await record_audit(
                    session,
                    caller.practice.id,
                    caller.actor,
                    "connection.update",
                    f"connection:{connection.id}",
                    changes,
                )
            return connection_out(connection)
    except IntegrityError:
        raise _name_taken(name or "") from None


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "conflict", f"the practice already has a connection named {name!r}", field="name")


def _apply_settings(connection: Connection, change: dict[str, Any], data_dir: FilePath) -> list[str]:
    """Merge `change` into the stored settings (null removes, `MASK` keeps), check and seal the result;
    returns the names of the settings that changed."""
    merged = dict(connection.settings)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        elif value == MASK:
            if key not in merged:
                raise ApiError(
                    422,
                    "invalid_request",
                    f"{MASK!r} keeps a stored secret, and there is none; send the secret itself",
                    field=f"settings.{key}",
                )
        else:
            merged[key] = value
    stored = checked_settings(connection.kind, merged, data_dir, sent=set(change))
    names = set(stored) | set(connection.settings)
    changed = sorted(name for name in names if stored.get(name) != connection.settings.get(name))
    connection.settings = stored
    return changed


def _apply_rules(connection: Connection, rules: RulesIn) -> dict[str, Any]:
    """Set the rules sent; returns {field: {"previous", "new"}} of those that changed."""
    sent = rules.model_fields_set
    for field in ("amount_mode", "timing", "daily_time", "chargebacks_enabled"):
        if field in sent and getattr(rules, field) is None:
            raise ApiError(422, "invalid_request", f"{field} cannot be null", field=f"rules.{field}")
    new: dict[str, Any] = {}
    if "start_date" in sent:
        new["start_date"] = _start_date(rules.start_date)
    if rules.amount_mode is not None:
        new["amount_mode"] = rules.amount_mode.value
    if rules.timing is not None:
        new["timing"] = rules.timing.value
    if rules.daily_time is not None:
        new["daily_time"] = _daily_time(rules.daily_time)
    if rules.chargebacks_enabled is not None:
        new["chargebacks_enabled"] = rules.chargebacks_enabled
    if rules.type_handling is not None:
        new["type_handling"] = _type_handling(connection.type_handling, rules.type_handling)
    changes: dict[str, Any] = {}
    for field, value in new.items():
        previous = getattr(connection, field)
        if previous != value:
            changes[field] = {"previous": _plain(previous), "new": _plain(value)}
            setattr(connection, field, value)
    return changes


def _plain(value: Any) -> Any:
    """A value as the audit log's JSON holds it."""
    return value.isoformat() if isinstance(value, date | time) else value


def _start_date(text: str | None) -> date | None:
    return parse_date(text, "rules.start_date")


def _daily_time(text: str | None) -> time | None:
    return time.fromisoformat(text) if text is not None else None  # the pattern made it HH:MM


def _type_handling(stored: dict[str, Any], change: dict[str, TypeHandling | None]) -> dict[str, str]:
    merged = dict(stored)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value.value
    try:
        return parse_type_handling(merged)
    except InvalidInput as exc:
        raise ApiError(422, "invalid_request", exc.message, field="rules.type_handling") from None


def checked_settings(kind: str, raw: dict[str, Any], data_dir: FilePath, *, sent: set[str]) -> dict[str, Any]:
    """`raw` checked against the connector's settings model, then as stored (secrets sealed).

    Checked without opening the connector: that would connect to the PMS inside the request. A sandbox
    office's file `sent` over the API must stay inside the data directory (a relative path): an API
    caller chooses no files elsewhere on the server (one set from the CLI on the server itself stays).
    """
    model: type[BaseModel]
    if kind == PULL_KIND:
        if raw:
            raise ApiError(
                422,
                "invalid_request",
                "a pull connection takes no settings: the PMS presents the practice's keys instead",
                field="settings",
            )
        return {}
    if kind == "sandbox":
        path = raw.get("path") if "path" in sent else None
        if isinstance(path, str) and (FilePath(path).is_absolute() or ".." in FilePath(path).parts):
            raise ApiError(
                422,
                "invalid_request",
                "the sandbox file must be a relative path inside the data directory (no '..')",
                field="settings.path",
            )
        model = SandboxSettings
    elif is_direct_db(kind, raw):
        model = DirectDbSettings
    elif kind == "opendental":
        model = OpenDentalSettings
    else:
        raise ApiError(422, "invalid_request", f"connector {kind!r} has no settings model", field="kind")
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ApiError(
            422,
            "invalid_request",
            f"bad {kind} settings: {problems}",
            field=f"settings.{where}" if where else "settings",
        ) from None
    return settings_to_store(kind, raw, data_dir)
