"""Every error the API answers has one shape, `{"error": {"code", "message", "field"}}`, and the right status.

`details` is added where one request has several problems (each transaction of a batch that failed its
checks). Nothing else reaches a client: an unexpected exception is logged with its type only and answered
500 with a generic message, never a stack trace.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledgerlink.errors import Conflict, InvalidInput, LedgerlinkError, NotFound
from ledgerlink.log import get_logger

log = get_logger(__name__)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(code=code, message=message, field=field, details=details)
        self.headers = headers


def error_response(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


_STATUS = {NotFound: 404, Conflict: 409, InvalidInput: 422}
_HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            ErrorEnvelope(error=exc.body).model_dump(exclude_none=True), exc.status, headers=exc.headers
        )

    @app.exception_handler(LedgerlinkError)
    async def ledgerlink_error(_: Request, exc: LedgerlinkError) -> JSONResponse:
        status = next((s for kind, s in _STATUS.items() if isinstance(exc, kind)), 400)
        return error_response(status, exc.code.lower(), exc.message, exc.field)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path"))
        return error_response(422, "invalid_request", str(first.get("msg", "invalid request")), where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else None
        return error_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("api.unexpected_error", error=type(exc).__name__)
        return error_response(
            500,
            "internal_error",
            "the request failed on our side; retrying it with the same Idempotency-Key is safe",
        )
