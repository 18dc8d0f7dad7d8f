"""`POST /v1/transactions`: the payment platform hands over what it processed, one or a batch.

Bodies are read with every decimal number as `Decimal` (an amount never passes through a binary float)
and checked by the same rules as a file import (docs/transaction-import.md), all or nothing: a batch with
one bad transaction stores none, and the answer names each problem with its position and field.

With an `Idempotency-Key`, the first successful answer is stored with the transactions in one database
transaction and replayed for the same key and body (header `Idempotent-Replayed: true`); the same key
with another body is 409. Two identical requests racing each other: one stores, the other's insert
collides with it and it answers the stored response. Without a key, a repeated transaction is still never
stored twice (its reference is unique in the practice) and is counted as already imported.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from ledgerlink.api.auth import Caller, database, staff_caller
from ledgerlink.api.errors import ApiError, ErrorEnvelope
from ledgerlink.domain.transactions import PaymentType, TransactionKind
from ledgerlink.sources.transaction_import import ingest_objects
from ledgerlink.store.models import IdempotencyKey

router = APIRouter(prefix="/v1", tags=["ingest"])

MAX_BATCH = 1000
MAX_KEY = 255
ATTEMPTS = 3  # a request that lost a race to an identical one re-reads what that one stored


class IngestResult(BaseModel):
    received: int
    imported: int
    already_imported: int


_TEXT_OR_NUMBER: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
_TEXT: dict[str, Any] = {"type": "string"}
TRANSACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The fields of a JSON lines import (docs/transaction-import.md); the rules beyond the "
    "shape (times, amounts, kinds, references) are checked as for a file and answered 422 per field.",
    "required": ["reference", "time", "kind", "payment_type", "gross"],
    "properties": {
        "reference": {"type": "string", "minLength": 1, "description": "the processor's transaction id"},
        "time": {"type": "string", "description": "ISO 8601; without an offset, the practice's time zone"},
        "kind": {"type": "string", "enum": [kind.value for kind in TransactionKind]},
        "payment_type": {"type": "string", "enum": [t.value for t in PaymentType]},
        "gross": _TEXT_OR_NUMBER,
        "fee": _TEXT_OR_NUMBER,
        "net": _TEXT_OR_NUMBER,
        "currency": _TEXT,
        "patient_id": _TEXT,
        "first_name": _TEXT,
        "last_name": _TEXT,
        "original_reference": _TEXT,
        "card_brand": _TEXT,
        "card_last4": _TEXT,
        "description": _TEXT,
    },
}
BODY_SCHEMA: dict[str, Any] = {
    "oneOf": [
        TRANSACTION_SCHEMA,
        {
            "type": "object",
            "required": ["transactions"],
            "properties": {
                "transactions": {
                    "type": "array",
                    "items": TRANSACTION_SCHEMA,
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                }
            },
        },
    ]
}

_EXAMPLE = {
    "transactions": [
        {
            "reference": "ch_3PqX1",
            "time": "2026-12-01T15:04:05Z",
            "kind": "sale",
            "payment_type": "terminal",
            "gross": "125.00",
            "fee": "3.75",
            "patient_id": "pat_881",
            "first_name": "Ana",
            "last_name": "Ruiz",
        }
    ]
}


@router.post(
    "/transactions",
    status_code=201,
    response_model=IngestResult,
    responses={
        400: {"model": ErrorEnvelope, "description": "the body is not JSON, or not transactions"},
        401: {"model": ErrorEnvelope},
        409: {"model": ErrorEnvelope, "description": "the Idempotency-Key was used with another body"},
        422: {"model": ErrorEnvelope, "description": "transactions failed their checks (see details)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": BODY_SCHEMA, "example": _EXAMPLE}},
        }
    },
    summary="Store processed transactions (one, or a batch of up to 1000)",
)
async def ingest_transactions(
    request: Request,
    caller: Annotated[Caller, Depends(staff_caller)],
    idempotency_key: Annotated[str | None, Header(max_length=MAX_KEY)] = None,
) -> JSONResponse:
    objects = _transactions(await request.body())
    key = idempotency_key.strip() if idempotency_key else None
    # Only a request with a key is compared with an earlier one: no hashing otherwise.
    fingerprint = (
        hashlib.sha256(json.dumps(objects, sort_keys=True, default=str).encode()).hexdigest() if key else ""
    )
    db = database(request)
    for attempt in range(ATTEMPTS):
        try:
            async with db.engine.connect() as conn:
                if key:
                    stored = await _stored(conn, caller.practice.id, key)
                    if stored is not None:
                        return _replay(stored, fingerprint)
                result = await ingest_objects(conn, caller.practice, objects)
                if not result.applied:
                    await conn.rollback()
                    raise _invalid(result.errors)
                answer = IngestResult(
                    received=len(objects), imported=result.imported, already_imported=result.already_imported
                ).model_dump()
                if key:
                    await conn.execute(
                        insert(IdempotencyKey),
                        [
                            {
                                "practice_id": caller.practice.id,
                                "key": key,
                                "request_hash": fingerprint,
                                "status_code": 201,
                                "response": answer,
                            }
                        ],
                    )
                await conn.commit()
                return JSONResponse(answer, status_code=201)
        except (IntegrityError, OperationalError):
            # An identical request (or another writer) got there first; what it stored decides.
            if attempt == ATTEMPTS - 1:
                raise ApiError(
                    409,
                    "conflict",
                    "another request stored some of these transactions at the same moment; send it again",
                ) from None
    raise AssertionError("unreachable")


def _transactions(body: bytes) -> list[Any]:
    try:
        parsed = json.loads(body, parse_float=Decimal) if body.strip() else None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
    if isinstance(parsed, dict) and "transactions" in parsed:
        items = parsed["transactions"]
        if not isinstance(items, list):
            raise ApiError(400, "invalid_body", "transactions must be a list", field="transactions")
    elif isinstance(parsed, dict):
        items = [parsed]  # one transaction on its own
    else:
        raise ApiError(
            400,
            "invalid_body",
            'send one transaction object, or {"transactions": [...]}',
            field="transactions",
        )
    if not items:
        raise ApiError(400, "invalid_body", "the batch is empty", field="transactions")
    if len(items) > MAX_BATCH:
        raise ApiError(
            400, "batch_too_large", f"at most {MAX_BATCH} transactions per request", field="transactions"
        )
    return items


async def _stored(conn: Any, practice_id: int, key: str) -> Any:
    """The stored `(request_hash, status_code, response)` for the key, or None."""
    return (
        await conn.execute(
            select(IdempotencyKey.request_hash, IdempotencyKey.status_code, IdempotencyKey.response).where(
                IdempotencyKey.practice_id == practice_id, IdempotencyKey.key == key
            )
        )
    ).first()


def _replay(stored: Any, fingerprint: str) -> JSONResponse:
    request_hash, status_code, response = stored
    if request_hash != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different body; use a new key for a new request",
            field="Idempotency-Key",
        )
    return JSONResponse(response, status_code=status_code, headers={"Idempotent-Replayed": "true"})


def _invalid(errors: list[Any]) -> ApiError:
    details = [
        {
            "field": f"transactions[{e.row}].{e.column}" if e.column else f"transactions[{e.row}]",
            "reason": e.reason,
        }
        for e in errors
    ]
    first = details[0]
    return ApiError(
        422,
        "invalid_transactions",
        f"{len(details)} problem(s) in the transactions; nothing was stored. First: {first['field']}: "
        f"{first['reason']}",
        field=first["field"],
        details=details,
    )
