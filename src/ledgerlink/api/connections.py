"""The practice's PMS connections: list, add, read and change their settings and writeback rules.

Secrets never leave the server: a settings value that is stored sealed, or whose name says it is a
secret, is answered as `MASK`. Sending `MASK` back in a change keeps the stored value, so a client can
send what it read with one field edited. The checking, sealing and auditing live in
`ledgerlink.connection_settings`, shared with the dashboard's settings page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink import connection_settings
from ledgerlink.api.auth import database
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.api.writebacks import ISO_DATE, StaffCaller
from ledgerlink.connection_settings import (
    MASK,
    find_connection,
    masked,
    merge_type_handling,
    parse_daily_time,
    parse_start_date,
    update_connection,
)
from ledgerlink.domain.rules import AmountMode, Timing, TypeHandling
from ledgerlink.domain.transactions import PaymentType
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.practices import CONNECTOR_KINDS, add_connection
from ledgerlink.store.models import Connection, Practice

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
    connection = await find_connection(session, practice_id, connection_id)
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
    rules = _rules(body.rules, {})
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
                start_date=rules.get("start_date"),
                amount_mode=rules.get("amount_mode", AmountMode.NET).value,
                timing=rules.get("timing", Timing.INSTANT).value,
                daily_time=rules.get("daily_time", time(18, 0)),
                chargebacks_enabled=rules.get("chargebacks_enabled", True),
                type_handling=rules.get("type_handling", {}),
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
    try:
        async with database(request).sessions.begin() as session:
            connection = await owned_connection(session, caller.practice.id, connection_id)
            rules = _rules(body.rules, connection.type_handling) if body.rules is not None else None
            with _as_api_errors():
                await update_connection(
                    session,
                    connection,
                    actor=caller.actor,
                    data_dir=request.app.state.data_dir,
                    name=body.name,
                    settings=body.settings,
                    rules=rules,
                )
            return connection_out(connection)
    except IntegrityError:  # another request took the same name at the same moment
        raise _name_taken((body.name or "").strip()) from None


def _name_taken(name: str) -> ApiError:
    return ApiError(409, "conflict", f"the practice already has a connection named {name!r}", field="name")


@contextmanager
def _as_api_errors() -> Iterator[None]:
    """The service's refusals as this API has always answered them (422 `invalid_request`, 409)."""
    try:
        yield
    except InvalidInput as exc:
        raise ApiError(422, "invalid_request", exc.message, field=exc.field) from None
    except Conflict as exc:
        raise ApiError(409, "conflict", exc.message, field=exc.field) from None


def _rules(rules: RulesIn, stored_handling: dict[str, Any]) -> dict[str, Any]:
    """The rules sent, as `connection_settings.apply_rules` takes them."""
    sent = rules.model_fields_set
    for field in ("amount_mode", "timing", "daily_time", "chargebacks_enabled"):
        if field in sent and getattr(rules, field) is None:
            raise ApiError(422, "invalid_request", f"{field} cannot be null", field=f"rules.{field}")
    new: dict[str, Any] = {}
    with _as_api_errors():
        if "start_date" in sent:
            new["start_date"] = parse_start_date(rules.start_date)
        if rules.amount_mode is not None:
            new["amount_mode"] = rules.amount_mode
        if rules.timing is not None:
            new["timing"] = rules.timing
        if rules.daily_time is not None:
            new["daily_time"] = parse_daily_time(rules.daily_time)
        if rules.chargebacks_enabled is not None:
            new["chargebacks_enabled"] = rules.chargebacks_enabled
        if rules.type_handling is not None:
            new["type_handling"] = merge_type_handling(stored_handling, rules.type_handling)
    return new


def checked_settings(kind: str, raw: dict[str, Any], data_dir: FilePath, *, sent: set[str]) -> dict[str, Any]:
    """`connection_settings.checked_settings`, its refusals answered as API errors."""
    with _as_api_errors():
        return connection_settings.checked_settings(kind, raw, data_dir, sent=sent)
