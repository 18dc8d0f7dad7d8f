"""People and keys for staff: users (privileges, login hours, active), clerk keys and merchant keys.

Everything is scoped to the staff token's practice: a user id of another practice is answered exactly like
an id that does not exist. A new key is in the answer that creates it and nowhere else, ever; listings
show prefixes only, and the audit log records who issued which prefix, never a key.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink import clock
from ledgerlink.access_keys import (
    MAX_OVERLAP,
    MERCHANT,
    is_live,
    issue_clerk_key,
    issue_merchant_key,
    list_keys,
    revoke_key,
)
from ledgerlink.api.auth import database
from ledgerlink.api.errors import ErrorEnvelope
from ledgerlink.api.writebacks import StaffCaller
from ledgerlink.errors import NotFound
from ledgerlink.login_hours import describe
from ledgerlink.passwords import MAX_LENGTH, MIN_LENGTH, set_password
from ledgerlink.store.models import AccessKey, Practice, User
from ledgerlink.users import PRIVILEGES, create_user, get_user, list_users, update_user

router = APIRouter(
    prefix="/v1",
    tags=["people"],
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON"},
        401: {"model": ErrorEnvelope},
        422: {"model": ErrorEnvelope, "description": "a parameter or a field is not valid"},
    },
)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "no such user in this practice"}
}

Privilege = StrEnum("Privilege", {name: name for name in PRIVILEGES})  # type: ignore[misc]
UserId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the user's id")]
KeyPrefix = Annotated[
    str, Path(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$", description="the key's prefix")
]
HHMM = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"


class Window(BaseModel):
    """A login window on the practice's wall clock; an end not after the start runs past midnight."""

    model_config = ConfigDict(extra="forbid")

    days: list[Annotated[StrictInt, Field(ge=0, le=6)]] = Field(
        min_length=1, max_length=7, description="0 (Monday) to 6 (Sunday): the days the window starts on"
    )
    start: str = Field(pattern=HHMM, examples=["08:00"])
    end: str = Field(pattern=HHMM, examples=["18:00"])


Windows = Annotated[list[Window], Field(max_length=50, description="empty: any time")]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=100, examples=["front-desk"])
    display_name: str = Field(default="", max_length=200)
    privileges: list[Privilege] = Field(default_factory=list, max_length=len(PRIVILEGES) * 2)
    login_hours: Windows = Field(default_factory=list)


class UserChange(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    display_name: Annotated[str, Field(max_length=200)] | None = None
    privileges: Annotated[list[Privilege], Field(max_length=len(PRIVILEGES) * 2)] | None = None
    login_hours: Windows | None = None
    active: StrictBool | None = None


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    privileges: list[str]
    login_hours: list[dict[str, Any]]
    login_hours_text: str = Field(description="the windows as people read them, e.g. 'Mon-Fri 08:00-18:00'")
    active: bool
    created_at: datetime


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: StrictStr = Field(
        min_length=MIN_LENGTH,
        max_length=MAX_LENGTH,
        pattern=r"\S",
        description=f"{MIN_LENGTH} to {MAX_LENGTH} characters, not only spaces",
    )


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: StrictInt | None = Field(
        default=None,
        ge=0,
        le=int(MAX_OVERLAP.total_seconds() // 3600),
        description="how long keys issued before keep working (default 24; 0 ends them at once)",
    )


class KeyOut(BaseModel):
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    live: bool


class IssuedKeyOut(BaseModel):
    practice_id: str = Field(description="the practice's public id, sent as X-Practice-Id")
    prefix: str
    key: str = Field(description="shown in this answer only; it cannot be read again")
    old_keys_expire_at: datetime | None = Field(description="when the keys this one replaces stop working")


class IssuedClerkKeyOut(IssuedKeyOut):
    user_id: int
    username: str


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        privileges=list(user.privileges),
        login_hours=list(user.login_hours),
        login_hours_text=describe(user.login_hours),
        active=user.active,
        created_at=user.created_at,
    )


def _overlap(body: Rotation | None) -> timedelta | None:
    if body is None or body.overlap_hours is None:
        return None
    return timedelta(hours=body.overlap_hours)


async def _practice(session: AsyncSession, caller_practice: Practice) -> Practice:
    practice = await session.get(Practice, caller_practice.id)
    if practice is None:
        raise NotFound("the token's practice no longer exists")
    return practice


@router.get("/users", response_model=list[UserOut], summary="The practice's users")
async def get_users(
    request: Request,
    caller: StaffCaller,
    active: Annotated[bool | None, Query(description="only active (true) or inactive (false) users")] = None,
) -> list[UserOut]:
    async with database(request).sessions() as session:
        users = await list_users(session, caller.practice)
    return [user_out(user) for user in users if active is None or user.active is active]


@router.post(
    "/users",
    response_model=UserOut,
    status_code=201,
    summary="Add a user",
    responses={409: {"model": ErrorEnvelope, "description": "the practice already has this username"}},
)
async def post_user(request: Request, caller: StaffCaller, body: UserIn) -> UserOut:
    async with database(request).sessions.begin() as session:
        user = await create_user(
            session,
            caller.practice,
            body.username,
            actor=caller.actor,
            display_name=body.display_name,
            privileges=[p.value for p in body.privileges],
            login_hours=[w.model_dump() for w in body.login_hours],
        )
        return user_out(user)


@router.get("/users/{user_id}", response_model=UserOut, summary="One user", responses=NOT_FOUND)
async def get_one_user(request: Request, caller: StaffCaller, user_id: UserId) -> UserOut:
    async with database(request).sessions() as session:
        return user_out(await get_user(session, caller.practice, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    summary="Change a user's privileges, login hours, name or active flag",
    responses=NOT_FOUND,
)
async def patch_user(request: Request, caller: StaffCaller, user_id: UserId, body: UserChange) -> UserOut:
    async with database(request).sessions.begin() as session:
        user = await update_user(
            session,
            await get_user(session, caller.practice, user_id),
            actor=caller.actor,
            display_name=body.display_name,
            privileges=[p.value for p in body.privileges] if body.privileges is not None else None,
            login_hours=[w.model_dump() for w in body.login_hours] if body.login_hours is not None else None,
            active=body.active,
        )
        return user_out(user)


@router.put(
    "/users/{user_id}/password",
    status_code=204,
    response_class=Response,
    summary="Set a user's dashboard password (ends their dashboard sessions)",
    responses={
        **NOT_FOUND,
        422: {
            "model": ErrorEnvelope,
            "description": "the password is too short or too long (field `password`)",
        },
    },
)
async def put_password(request: Request, caller: StaffCaller, user_id: UserId, body: PasswordIn) -> Response:
    async with database(request).sessions.begin() as session:
        user = await get_user(session, caller.practice, user_id)
        await set_password(session, user, body.password, actor=caller.actor)
    return Response(status_code=204)


@router.post(
    "/users/{user_id}/clerk-key",
    response_model=IssuedClerkKeyOut,
    status_code=201,
    summary="Issue or rotate a user's clerk key (shown once)",
    responses=NOT_FOUND,
)
async def post_clerk_key(
    request: Request, caller: StaffCaller, user_id: UserId, body: Rotation | None = None
) -> IssuedClerkKeyOut:
    overlap = _overlap(body)
    async with database(request).sessions.begin() as session:
        user = await get_user(session, caller.practice, user_id)
        issued = await issue_clerk_key(session, user, actor=caller.actor, overlap=overlap)
    return IssuedClerkKeyOut(
        practice_id=issued.public_id,
        prefix=issued.prefix,
        key=issued.plain,
        old_keys_expire_at=issued.old_keys_expire_at,
        user_id=user.id,
        username=user.username,
    )


@router.post(
    "/integration-keys",
    response_model=IssuedKeyOut,
    status_code=201,
    summary="Issue or rotate the practice's merchant key (shown once)",
)
async def post_integration_key(
    request: Request, caller: StaffCaller, body: Rotation | None = None
) -> IssuedKeyOut:
    overlap = _overlap(body)
    async with database(request).sessions.begin() as session:
        practice = await _practice(session, caller.practice)
        issued = await issue_merchant_key(session, practice, actor=caller.actor, overlap=overlap)
    return IssuedKeyOut(
        practice_id=issued.public_id,
        prefix=issued.prefix,
        key=issued.plain,
        old_keys_expire_at=issued.old_keys_expire_at,
    )


def key_out(key: AccessKey, now: datetime) -> KeyOut:
    return KeyOut(
        prefix=key.prefix,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        live=is_live(key, now),
    )


@router.post(
    "/keys/{prefix}/revoke",
    response_model=KeyOut,
    responses=NOT_FOUND,
    summary="Revoke a merchant or clerk key now (one that leaked: no overlap)",
)
async def post_revoke_key(request: Request, caller: StaffCaller, prefix: KeyPrefix) -> KeyOut:
    async with database(request).sessions.begin() as session:
        practice = await _practice(session, caller.practice)
        key = await revoke_key(session, practice, prefix, actor=caller.actor)
        return key_out(key, clock.utcnow())


@router.get(
    "/integration-keys", response_model=list[KeyOut], summary="The practice's merchant keys (prefixes only)"
)
async def get_integration_keys(
    request: Request,
    caller: StaffCaller,
    live: Annotated[
        bool | None, Query(description="only keys that work now (true) or that no longer do")
    ] = None,
) -> list[KeyOut]:
    async with database(request).sessions() as session:
        keys = await list_keys(session, caller.practice, MERCHANT)
    now = clock.utcnow()
    return [key_out(key, now) for key in keys if live is None or is_live(key, now) is live]
