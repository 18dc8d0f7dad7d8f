"""The staff dashboard: server-rendered pages (Jinja2) on the same FastAPI app and services as the API.

Every asset is served by ledgerlink itself from `web/static`; pages carry a strict Content-Security-Policy
(scripts and styles from this site only, no inline script), so nothing is loaded from a CDN and an
injected script would not run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledgerlink.web import pages, sign_in
from ledgerlink.web.rendering import render
from ledgerlink.web.staff import CsrfRejected, NotPermitted, SignInRequired

STATIC = Path(__file__).parent / "static"
_API_PREFIXES = ("/v1", "/docs", "/openapi.json", "/redoc")
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(_API_PREFIXES)


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "text/html")


def _is_form_post(request: Request) -> bool:
    """A form a person submitted (not a script's fetch): it should end on a page, never on JSON."""
    kind = request.headers.get("content-type", "")
    return request.method == "POST" and kind.startswith(("application/x-www-form-urlencoded", "multipart/"))


def install(app: FastAPI) -> None:
    """Mount the dashboard on `app` (after the API's error handlers, which it defers to for API paths)."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(sign_in.router)
    for module in pages.MODULES:
        app.include_router(module.router)

    @app.middleware("http")
    async def page_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        if is_page(request):
            for name, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if not request.url.path.startswith("/static"):
                response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(SignInRequired)
    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        if _is_form_post(request):
            # The session ended while the form was open: nothing was saved; back to sign-in, then the page.
            reason = exc.reason or "expired"
            return RedirectResponse(f"/?next={quote(request.url.path)}&reason={reason}", status_code=303)
        if not _wants_html(request):
            return JSONResponse({"error": {"code": "signed_out", "message": "sign in again"}}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        url = f"/?next={quote(target)}" + (f"&reason={exc.reason}" if exc.reason else "")
        return RedirectResponse(url, status_code=303)

    api_invalid_request = app.exception_handlers[RequestValidationError]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if is_page(request):
            return render(
                request,
                "problem.html",
                None,
                status=400,
                title="That link has a value this page does not understand",
                message="Nothing was changed. Go back and use the page's own links and forms.",
            )
        response: Response = await api_invalid_request(request, exc)  # type: ignore[misc]
        return response

    @app.exception_handler(NotPermitted)
    async def not_permitted(request: Request, exc: NotPermitted) -> Response:
        return render(request, "problem.html", None, status=403, title="Not allowed", message=exc.message)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, exc: CsrfRejected) -> Response:
        return render(
            request,
            "problem.html",
            None,
            status=403,
            title="The form had expired",
            message="Nothing was changed. Go back, reload the page and try again.",
        )

    api_http_error = app.exception_handlers[StarletteHTTPException]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_page(request) and _wants_html(request) and exc.status_code in (404, 405):
            return render(
                request,
                "problem.html",
                None,
                status=exc.status_code,
                title="Page not found",
                message="There is no such page, or it belongs to another practice.",
            )
        response: Response = await api_http_error(request, exc)  # type: ignore[misc]
        return response
