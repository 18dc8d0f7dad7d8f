"""Pages are Jinja2 templates (autoescaped) rendered with the signed-in staff member, the practice's
formatting, the navigation they may use, and a one-time notice carried over a redirect.

After a form changes something the handler redirects (303, post/redirect/get) with a short notice in a
cookie, so reloading the page does not post the form again. A form with mistakes is rendered again
instead, with status 400 and each error next to its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from ledgerlink import __version__
from ledgerlink.users import (
    IMPORT_PATIENTS,
    MANAGE_SETTINGS,
    MANAGE_USERS,
    VIEW_REPORTS,
)
from ledgerlink.web.staff import Staff

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["version"] = __version__

NOTICE_COOKIE = "ll_notice"

# (path, label, privileges any of which shows the entry)
NAVIGATION: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("/today", "Today", (VIEW_REPORTS,)),
    ("/reports", "Sync report", (VIEW_REPORTS,)),
    ("/reconcile", "Reconciliation", (VIEW_REPORTS,)),
    ("/patients", "Patients", (VIEW_REPORTS,)),
    ("/imports", "Import patients", (IMPORT_PATIENTS,)),
    ("/settings", "Settings", (MANAGE_SETTINGS,)),
    ("/people", "Keys & users", (MANAGE_USERS,)),
    ("/audit", "Audit log", (MANAGE_SETTINGS, MANAGE_USERS)),
)


def navigation(staff: Staff) -> list[tuple[str, str]]:
    return [(path, label) for path, label, needs in NAVIGATION if any(staff.can(p) for p in needs)]


def home_for(staff: Staff) -> str:
    """The first page this user may see (a user with only `import_patients` starts at the importer)."""
    entries = navigation(staff)
    return entries[0][0] if entries else "/account"


def render(
    request: Request,
    template: str,
    staff: Staff | None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    notice = unquote(request.cookies.get(NOTICE_COOKIE, ""))
    response = templates.TemplateResponse(
        request,
        template,
        {
            "staff": staff,
            "fmt": staff.fmt if staff else None,
            "nav": navigation(staff) if staff else [],
            "current": request.url.path,
            "notice": notice,
            "errors": context.pop("errors", {}),
            **context,
        },
        status_code=status,
    )
    if notice:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    return response


def redirect(url: str, notice: str = "") -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if notice:
        response.set_cookie(NOTICE_COOKIE, quote(notice), max_age=60, httponly=True, samesite="lax", path="/")
    return response
