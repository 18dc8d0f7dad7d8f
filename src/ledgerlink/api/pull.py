"""The pull API: a PMS that downloads its transactions itself (seed 000's "Download Transactions").

Authenticated with the practice's keys (`X-Practice-Id`, `X-Merchant-Key`, optionally `X-Clerk-Key`; see
api/pull_auth.py). A clerk needs `run_sync` to download and acknowledge, `view_reports` for reports and
alerts. The logic is in `ledgerlink.pull`; docs/pull-api.md explains the cycle to PMS vendors.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field, StrictInt, model_validator

from ledgerlink.api.auth import database
from ledgerlink.api.errors import ErrorEnvelope
from ledgerlink.api.pull_auth import PULL_AUTH_RESPONSES, PullCaller, pull_caller, require_privilege
from ledgerlink.api.reports import ReportOut, report_lines
from ledgerlink.audit import record_audit
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.pull.acknowledge import Acknowledgement, AckStatus, acknowledge
from ledgerlink.pull.alerts import AlertTask, alert_feed, mark_done
from ledgerlink.pull.download import DEFAULT_LIMIT, MAX_LIMIT, download
from ledgerlink.pull.runs import current_report, finish_run, practice_run
from ledgerlink.users import RUN_SYNC, VIEW_REPORTS

MAX_ID = 2**63 - 1
RowId = Annotated[StrictInt, Field(ge=1, le=MAX_ID)]


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "the body is not JSON",
        404: "no such run or alert in this practice, or the practice has no pull connection",
        409: "the run is finished: download again and acknowledge with the new run_id",
        422: "a parameter or a field is not valid (the field names the item's index)",
    }
    return {s: {"model": ErrorEnvelope, "description": described[s]} for s in statuses}


router = APIRouter(prefix="/v1/pull", tags=["pull"], responses=PULL_AUTH_RESPONSES | _responses(422))

Caller = Annotated[PullCaller, Depends(pull_caller)]


class PullItemOut(BaseModel):
    id: int = Field(description="the entry's id: the cursor unit, and the key to store with the ledger entry")
    processor_ref: str
    kind: str = Field(description="sale, refund, void or chargeback")
    payment_type: str
    entry: Literal["payment", "reversal"] = Field(description="a reversal is a negative ledger entry")
    amount_cents: int = Field(description="positive, per the connection's net/gross rule")
    amount: str = Field(description="the same amount as a decimal string, e.g. 97.00")
    fee_cents: int = Field(description="a separate fee entry (gross plus fee); 0 when none")
    fee: str
    currency: str
    posting_date: date = Field(description="the practice-local date to post on")
    account_number: str | None = Field(description="the patient's account number in the PMS")
    original_pms_ref: str | None = Field(description="reversals: the PMS reference of the payment reversed")
    original_account_number: str | None = Field(description="reversals: the account that payment is on")
    card_brand: str
    card_last4: str
    redelivered: bool = Field(
        description="handed out before and never acknowledged: look for it by id before loading it"
    )


class DownloadOut(BaseModel):
    run_id: int
    items: list[PullItemOut]
    next_cursor: int = Field(description="pass as cursor for the next page")
    has_more: bool


class AckIn(BaseModel):
    id: RowId
    status: Literal["loaded", "failed"]
    pms_ref: str | None = Field(default=None, max_length=100, description="required when loaded")
    error_code: LoadErrorCode | None = Field(default=None, description="required when failed")
    error_message: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _complete(self) -> AckIn:
        if self.status == "loaded" and not (self.pms_ref or "").strip():
            raise ValueError("a loaded result needs pms_ref: the PMS's reference of the ledger entry")
        if self.status == "failed" and self.error_code is None:
            raise ValueError("a failed result needs error_code: one of " + ", ".join(LoadErrorCode))
        return self


class AcknowledgementsIn(BaseModel):
    run_id: RowId
    results: list[AckIn] = Field(min_length=1, max_length=MAX_LIMIT)


class AckOut(BaseModel):
    id: int
    status: AckStatus
    message: str
    pms_ref: str | None


class AcknowledgementsOut(BaseModel):
    run_id: int
    results: list[AckOut]


class AlertOut(BaseModel):
    id: int
    code: str
    message: str
    explanation: str
    writeback_id: int | None
    processor_ref: str | None
    account_number: str | None
    created_at: datetime
    done: bool


@router.get(
    "/transactions",
    response_model=DownloadOut,
    responses=_responses(404),
    summary="Download the entries to load into the ledger, after a cursor",
)
async def get_transactions(
    request: Request,
    caller: Caller,
    cursor: Annotated[int, Query(ge=0, le=MAX_ID, description="next_cursor of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    connection: Annotated[
        str | None, Query(min_length=1, max_length=100, description="needed when there are several")
    ] = None,
) -> DownloadOut:
    require_privilege(caller, RUN_SYNC)
    async with database(request).sessions.begin() as session:
        page = await download(
            session,
            caller.practice,
            cursor=cursor,
            limit=limit,
            connection_name=connection,
            actor=caller.actor,
        )
    return DownloadOut(
        run_id=page.run_id,
        items=[
            PullItemOut(
                id=item.id,
                processor_ref=item.processor_ref,
                kind=item.kind,
                payment_type=item.payment_type,
                entry="reversal" if item.entry == "reversal" else "payment",
                amount_cents=item.amount_cents,
                amount=str(item.amount),
                fee_cents=item.fee_cents,
                fee=str(item.fee),
                currency=item.currency,
                posting_date=item.posting_date,
                account_number=item.account_number,
                original_pms_ref=item.original_pms_ref,
                original_account_number=item.original_account_number,
                card_brand=item.card_brand,
                card_last4=item.card_last4,
                redelivered=item.redelivered,
            )
            for item in page.items
        ],
        next_cursor=page.next_cursor,
        has_more=page.has_more,
    )


@router.post(
    "/acknowledgements",
    response_model=AcknowledgementsOut,
    responses=_responses(400, 404, 409),
    summary="Report each downloaded entry loaded (with the PMS reference) or failed (with a load error)",
)
async def post_acknowledgements(
    request: Request, caller: Caller, body: AcknowledgementsIn
) -> AcknowledgementsOut:
    require_privilege(caller, RUN_SYNC)
    acks = [
        Acknowledgement(
            writeback_id=r.id,
            loaded=r.status == "loaded",
            pms_ref=(r.pms_ref or "").strip() or None,
            error_code=r.error_code,
            error_message=(r.error_message or "").strip(),
        )
        for r in body.results
    ]
    async with database(request).sessions.begin() as session:
        results = await acknowledge(session, caller.practice, body.run_id, acks, actor=caller.actor)
    return AcknowledgementsOut(
        run_id=body.run_id,
        results=[
            AckOut(id=r.writeback_id, status=r.status, message=r.message, pms_ref=r.pms_ref) for r in results
        ],
    )


RunId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.post(
    "/runs/{run_id}/finish",
    response_model=ReportOut,
    responses=_responses(404),
    summary="Close a pull run and get its sync report",
)
async def post_finish(request: Request, caller: Caller, run_id: RunId) -> ReportOut:
    require_privilege(caller, RUN_SYNC)
    async with database(request).sessions.begin() as session:
        run = await practice_run(session, caller.practice, run_id, hold=True)
        was_open = run.status == "running"
        report = await finish_run(session, run)
        if was_open:
            await record_audit(
                session, caller.practice.id, caller.actor, "pull.run_finished", f"run:{run_id}"
            )
    return ReportOut(run_id=run_id, lines=report_lines(report))


@router.get(
    "/runs/{run_id}/report",
    response_model=ReportOut,
    responses=_responses(404),
    summary="A pull run's sync report (while it is open: as it would be if finished now)",
)
async def get_report(request: Request, caller: Caller, run_id: RunId) -> ReportOut:
    require_privilege(caller, VIEW_REPORTS)
    async with database(request).sessions() as session:
        run = await practice_run(session, caller.practice, run_id)
        report = await current_report(session, run)
    return ReportOut(run_id=run_id, lines=report_lines(report))


@router.get("/alerts", response_model=list[AlertOut], summary="Alerts to show as tasks in the PMS")
async def get_alerts(
    request: Request,
    caller: Caller,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only alerts with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AlertOut]:
    require_privilege(caller, VIEW_REPORTS)
    async with database(request).sessions() as session:
        tasks = await alert_feed(session, caller.practice, after=after, limit=limit)
    return [_alert(task) for task in tasks]


@router.post(
    "/alerts/{alert_id}/done",
    response_model=AlertOut,
    responses=_responses(404),
    summary="The PMS has made its task: the alert leaves the feed",
)
async def post_alert_done(
    request: Request, caller: Caller, alert_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> AlertOut:
    require_privilege(caller, VIEW_REPORTS)
    async with database(request).sessions.begin() as session:
        task = await mark_done(session, caller.practice, alert_id, actor=caller.actor)
    return _alert(task)


def _alert(task: AlertTask) -> AlertOut:
    return AlertOut(
        id=task.id,
        code=task.code,
        message=task.message,
        explanation=task.explanation,
        writeback_id=task.writeback_id,
        processor_ref=task.processor_ref,
        account_number=task.account_number,
        created_at=task.created_at,
        done=task.done,
    )
