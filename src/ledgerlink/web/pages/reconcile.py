"""Reconciliation: every writeback with its Load Status and Load Error in words, Retry and Clear (seed 001's
Merchant Transfers report), and rows that follow the worker as it posts what was retried.

The filters live in the query string (practice-local dates, status, payment type, words about the patient),
so a filtered view can be bookmarked, and Save Changes brings staff back to the same view. Save Changes uses
the API's own services (`retry_writebacks`, `clear_writebacks`): the same rules, the same audit entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from math import ceil
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ledgerlink.api.auth import database
from ledgerlink.clock import utcnow
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.rules import SkipReason
from ledgerlink.domain.transactions import PaymentType, TransactionKind
from ledgerlink.engine.operations import (
    ActionResult,
    ReconciliationRow,
    WritebackFilter,
    clear_writebacks,
    owned_writeback_ids,
    reconciliation_row,
    reconciliation_rows,
    retry_writebacks,
)
from ledgerlink.store.models import WritebackStatus
from ledgerlink.users import RETRY_CLEAR
from ledgerlink.web.params import page_number, whole_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Fixer, Staff, Viewer, checked_form

router = APIRouter(include_in_schema=False)

PAGE_SIZE = 50
# A row waiting for the worker follows it live for this long after it was queued; a payment that waits for
# tonight's daily sync is not polled all day.
FOLLOW_FOR = timedelta(minutes=15)
WritebackId = Annotated[int, Path(ge=1, le=2**63 - 1)]

STATUS_WORDS = {
    WritebackStatus.PENDING: "Waiting to post",
    WritebackStatus.IN_FLIGHT: "Posting now",
    WritebackStatus.POSTED: "Posted",
    WritebackStatus.FAILED: "Failed",
    WritebackStatus.SKIPPED: "Not posted",
    WritebackStatus.CLEARED: "Cleared",
}
KIND_WORDS: dict[str, str] = {
    TransactionKind.SALE: "Sale",
    TransactionKind.REFUND: "Refund",
    TransactionKind.VOID: "Void",
    TransactionKind.CHARGEBACK: "Charge back",
    TransactionKind.DECLINE: "Declined",
}
PAYMENT_TYPE_WORDS: dict[str, str] = {t.value: t.label for t in PaymentType}  # the domain's labels

# What each load error means for the front desk comes from `LoadErrorCode.explanation` (the same words as
# Today, the CLI and the alert digests); a row knows one thing more: whether the account number is missing
# or wrong. The code stays on the page in small print, for support.
WRONG_ACCOUNT_NUMBER = (
    "The PMS has no patient with this account number. Fix the patient's account number, then Retry."
)
NO_ACCOUNT_NUMBER = (
    "This patient has no PMS account number yet. Open the patient, enter their account number (or pick "
    "the PMS's suggestion), then Retry."
)
SKIP_WORDS = {
    SkipReason.DECLINED: "The card was declined: there is nothing to post.",
    SkipReason.BEFORE_START_DATE: (
        "Dated before the day ledgerlink started writing to the PMS, so it is left alone. Nothing to do."
    ),
    SkipReason.TYPE_DISABLED: (
        "Writing back is turned off for this payment type. Nothing to do, unless it should be on (Settings)."
    ),
    SkipReason.HELD_FOR_MANUAL: (
        "This payment type is set to be posted by hand. Post it in the PMS, then Clear it, or Retry to "
        "let ledgerlink post it."
    ),
    SkipReason.VOIDED_BEFORE_POSTING: (
        "Voided before it was posted: nothing was posted and nothing needs to be."
    ),
    SkipReason.CHARGEBACKS_DISABLED: (
        "Charge backs are not written back on this connection. Post it by hand if your office records "
        "them, then Clear it."
    ),
    SkipReason.ORIGINAL_NOT_WRITTEN_BACK: (
        "The payment this reverses was posted by hand (or not written back), so this one is left to you "
        "too. Post it by hand, then Clear it."
    ),
    SkipReason.NOTHING_TO_POST: "After fees the amount is zero: there is nothing to post.",
}
# Skipped writebacks staff are expected to post by hand: the ones Clear applies to.
_HAND_POSTED = {
    SkipReason.HELD_FOR_MANUAL.value,
    SkipReason.CHARGEBACKS_DISABLED.value,
    SkipReason.ORIGINAL_NOT_WRITTEN_BACK.value,
}
_FILTER_FIELDS = ("since", "until", "status", "type", "q")


@dataclass(frozen=True, slots=True)
class RowView:
    """A reconciliation row with everything the template shows, in words."""

    row: ReconciliationRow
    status_words: str
    kind_words: str
    type_words: str
    amount_cents: int
    problem: str  # the load error or skip reason in words; "" when there is none
    code: str  # the code behind it, for support
    can_retry: bool
    can_clear: bool
    follow: bool  # still on its way to the PMS: the page keeps it fresh

    @property
    def id(self) -> int:
        return self.row.view.id


def load_error_words(code: str, account_number: str | None) -> str:
    """What a load error code means for the front desk, and what to do."""
    try:
        known = LoadErrorCode(code)
    except ValueError:
        return "Writing this payment failed. Read the details below, fix the cause, then Retry."
    if known is LoadErrorCode.INVALID_PATIENT_ID:
        return WRONG_ACCOUNT_NUMBER if account_number else NO_ACCOUNT_NUMBER
    return known.explanation


def describe(row: ReconciliationRow) -> RowView:
    view = row.view
    status = WritebackStatus(view.status)
    if view.error_code:
        problem, code = load_error_words(view.error_code, view.account_number), view.error_code
    elif row.skip_reason:
        try:
            problem = SKIP_WORDS[SkipReason(row.skip_reason)]
        except ValueError:
            problem = "Not posted by ledgerlink."
        code = row.skip_reason.upper()
    else:
        problem, code = "", ""
    held = status is WritebackStatus.SKIPPED and row.skip_reason == SkipReason.HELD_FOR_MANUAL.value
    waiting = status in (WritebackStatus.PENDING, WritebackStatus.IN_FLIGHT)
    return RowView(
        row=row,
        status_words=STATUS_WORDS[status],
        kind_words=KIND_WORDS.get(view.kind, view.kind),
        type_words=PAYMENT_TYPE_WORDS.get(view.payment_type, view.payment_type),
        amount_cents=view.amount_cents if view.category is not None else view.gross_cents,
        problem=problem,
        code=code,
        # The same rules as retry_writebacks and clear_writebacks; the boxes only offer what applies.
        can_retry=status is WritebackStatus.FAILED or held,
        can_clear=status is WritebackStatus.FAILED
        or (status is WritebackStatus.SKIPPED and row.skip_reason in _HAND_POSTED),
        follow=waiting and (status is WritebackStatus.IN_FLIGHT or utcnow() - row.updated_at < FOLLOW_FOR),
    )


@dataclass(frozen=True, slots=True)
class Filters:
    since: str = ""
    until: str = ""
    status: str = ""
    type: str = ""
    q: str = ""
    page: int = 1

    def query(self, *, page: int | None = None) -> str:
        """The query string of this view (another page of it when `page` is given)."""
        values = {name: getattr(self, name) for name in _FILTER_FIELDS if getattr(self, name)}
        chosen = self.page if page is None else page
        if chosen > 1:
            values["page"] = str(chosen)
        return urlencode(values)

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in _FILTER_FIELDS)


def read_filters(values: dict[str, str]) -> tuple[Filters, WritebackFilter, dict[str, str]]:
    """The filters a form or a query string gives, the service's filter, and an error per bad field."""
    errors: dict[str, str] = {}
    text = {name: values.get(name, "").strip()[:200] for name in _FILTER_FIELDS}
    days: dict[str, date | None] = {}
    for name in ("since", "until"):
        try:
            days[name] = date.fromisoformat(text[name]) if text[name] else None
        except ValueError:
            errors[name] = "Enter a date, or leave it empty."
            days[name] = None
    since, until = days["since"], days["until"]
    if since and until and since > until:
        errors["until"] = "The last day is before the first day."
    if text["status"] and text["status"] not in {s.value for s in WritebackStatus}:
        errors["status"] = "Choose a status from the list."
    if text["type"] and text["type"] not in {t.value for t in PaymentType}:
        errors["type"] = "Choose a payment type from the list."
    page = page_number(values.get("page"))
    filters = Filters(page=page, **text)
    if errors:
        return filters, WritebackFilter(), errors
    service = WritebackFilter(
        status=text["status"] or None,
        since=since,
        until=until,
        payment_type=text["type"] or None,
        search=text["q"],
    )
    return filters, service, errors


async def _page(
    request: Request, staff: Staff, values: dict[str, str], *, status: int = 200, problem: str = ""
) -> HTMLResponse:
    filters, service, errors = read_filters(values)
    rows: list[ReconciliationRow] = []
    total = 0
    if not errors:
        async with database(request).sessions() as session:
            rows, total = await reconciliation_rows(
                session,
                staff.practice.id,
                service,
                offset=(filters.page - 1) * PAGE_SIZE,
                limit=PAGE_SIZE,
            )
    pages = max(1, ceil(total / PAGE_SIZE))
    return render(
        request,
        "reconcile.html",
        staff,
        status=400 if errors else status,
        errors=errors,
        problem=problem,
        filters=filters,
        rows=[describe(row) for row in rows],
        total=total,
        first=(filters.page - 1) * PAGE_SIZE + 1,
        pages=pages,
        fixer=staff.can(RETRY_CLEAR),
        statuses=[("", "Any status")] + [(s.value, STATUS_WORDS[s]) for s in WritebackStatus],
        types=[("", "Any payment type")] + [(t.value, t.label) for t in PaymentType],
    )


@router.get("/reconcile", response_class=HTMLResponse)
async def reconcile_page(request: Request, staff: Viewer) -> HTMLResponse:
    return await _page(request, staff, dict(request.query_params))


@router.get("/reconcile/rows/{writeback_id}", response_class=HTMLResponse)
async def reconcile_row(request: Request, staff: Viewer, writeback_id: WritebackId) -> HTMLResponse:
    """One row as it stands now: the page swaps it in while the worker posts it."""
    async with database(request).sessions() as session:
        row = await reconciliation_row(session, staff.practice.id, writeback_id)
    if row is None:
        raise HTTPException(404)
    return render(request, "reconcile_row.html", staff, r=describe(row), fixer=staff.can(RETRY_CLEAR))


@router.post("/reconcile", response_model=None)
async def save_changes(request: Request, staff: Fixer) -> Response | RedirectResponse:
    """Save Changes: Retry the rows ticked for it, Clear the others ticked, and come back to the same view."""
    form = await checked_form(request, staff)
    values = {name: str(form.get(name) or "") for name in (*_FILTER_FIELDS, "page")}
    back = read_filters(values)[0]
    retry_ids = [whole_number(str(v)) for v in form.getlist("retry")]
    clear_ids = [whole_number(str(v)) for v in form.getlist("clear")]
    retry = [wid for wid in retry_ids if wid]
    clear = [wid for wid in clear_ids if wid]
    if len(retry) != len(retry_ids) or len(clear) != len(clear_ids):
        raise HTTPException(404)
    both = sorted(set(retry) & set(clear))
    if both:
        return await _page(
            request,
            staff,
            values,
            status=400,
            problem="Nothing was changed: tick Retry or Clear for a payment, not both "
            f"({len(both)} {'payment has' if len(both) == 1 else 'payments have'} both ticked).",
        )
    url = "/reconcile" + (f"?{back.query()}" if back.query() else "")
    if not retry and not clear:
        return redirect(url, "Nothing to save: tick Retry or Clear on a payment first.")
    async with database(request).sessions.begin() as session:
        wanted = list(dict.fromkeys(retry + clear))
        if await owned_writeback_ids(session, staff.practice.id, wanted) != set(wanted):
            raise HTTPException(404)  # another practice's (or no) writeback: nothing is changed
        retried = (
            await retry_writebacks(session, staff.practice.id, retry, actor=staff.actor) if retry else []
        )
        cleared = (
            await clear_writebacks(session, staff.practice.id, clear, actor=staff.actor) if clear else []
        )
    return redirect(url, saved_notice(retried, cleared))


def saved_notice(retried: list[ActionResult], cleared: list[ActionResult]) -> str:
    """E.g. "2 queued for retry, 1 cleared." and what could not be changed, and why."""
    done = []
    if any(r.ok for r in retried):
        done.append(f"{sum(r.ok for r in retried)} queued for retry")
    if any(r.ok for r in cleared):
        done.append(f"{sum(r.ok for r in cleared)} cleared")
    refused = [r for r in (*retried, *cleared) if not r.ok]
    text = (", ".join(done) + ".") if done else "Nothing was changed."
    if refused:
        text += " Not changed: " + "; ".join(f"#{r.writeback_id} {r.message}" for r in refused) + "."
    return text
