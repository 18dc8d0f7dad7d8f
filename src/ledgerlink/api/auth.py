"""Who is calling: a staff API token in `Authorization: Bearer ll_...`, bound to one practice.

A wrong, revoked or missing token gets 401 and the same answer whatever was wrong, so the answer tells an
attacker nothing about which tokens exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from ledgerlink.api.errors import ApiError
from ledgerlink.secrets import SecretBox
from ledgerlink.store.db import Database
from ledgerlink.store.models import Practice
from ledgerlink.tokens import token_for


@dataclass(frozen=True, slots=True)
class Caller:
    practice: Practice
    token_prefix: str

    @property
    def actor(self) -> str:
        return f"api token {self.token_prefix}"


def database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def secret_box(request: Request) -> SecretBox:
    """The installation's sealing key (webhook signing secrets, PMS credentials)."""
    return SecretBox.for_data_dir(request.app.state.data_dir)


async def staff_caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.strip().partition(" ")
    unauthorized = ApiError(
        401,
        "unauthorized",
        "a valid API token is required: Authorization: Bearer ll_...",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if scheme.lower() != "bearer" or not presented.strip():
        raise unauthorized
    async with database(request).sessions() as session:
        token = await token_for(session, presented)
        practice = await session.get(Practice, token.practice_id) if token is not None else None
    if token is None or practice is None:
        raise unauthorized
    return Caller(practice, token.prefix)
