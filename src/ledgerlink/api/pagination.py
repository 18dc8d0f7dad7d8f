"""Keyset pagination for list routes: `limit` rows per page and an opaque `cursor` for the next one.

A cursor is the row id the previous page ended at, so a page never skips or repeats a row when rows are
added meanwhile (an offset would). It is opaque to clients (base64 of a small text) and carries nothing but
that id: names and other patient data never travel in URLs, where proxies log them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from ledgerlink.api.errors import ApiError

MAX_LIMIT = 500
_PREFIX = "after:"

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page")]
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="the `next_cursor` of the previous page; omit for the first page"),
]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id the previous page ended at; a cursor this API did not hand out is a 422 on `cursor`."""
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith(_PREFIX) and text[len(_PREFIX) :].isdigit():
            value = int(text[len(_PREFIX) :])
            if 1 <= value <= 2**63 - 1:
                return value
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError(
        422,
        "invalid_request",
        "the cursor is not one this API handed out; start from the first page",
        field="cursor",
    )


def next_cursor(ids: list[int], limit: int) -> str | None:
    """The cursor after a page fetched with `limit + 1` rows: only when that extra row exists."""
    return encode_cursor(ids[limit - 1]) if len(ids) > limit else None
