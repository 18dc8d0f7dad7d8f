"""What a digest says: counts per load error code, then each alert with what staff need to find and fix it.

Patients appear only by their patient ref and PMS account number, never by name or birth date: a digest
goes to mailboxes and webhook receivers outside the practice-management system. The names of the alert's
own patient are also blanked out of the messages it quotes, should a PMS have put one into an error.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime

from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import cents_to_decimal, format_cents
from ledgerlink.notify.notice import Notice

DASHBOARD_PATH = "/writebacks?status=failed"
DIGEST_EVENT = "alerts.digest"
TEST_EVENT = "notification.test"


@dataclass(frozen=True, slots=True)
class DigestAlert:
    alert_id: int
    code: str
    message: str
    raised_at: datetime
    writeback_id: int | None
    connection: str | None
    amount_cents: int | None
    currency: str | None
    local_date: date | None
    status: str | None  # the writeback's status now (it may have been retried and posted since)
    patient_ref: str | None
    account_number: str | None


@dataclass(frozen=True, slots=True)
class Digest:
    practice_slug: str
    practice_name: str
    alerts: list[DigestAlert]
    waiting: int  # alerts not yet sent, this digest's included: more than `len(alerts)` means more to come
    link: str
    created_at: datetime

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(alert.code for alert in self.alerts).items()))


def without_names(text: str, names: tuple[str | None, ...]) -> str:
    """`text` with each of `names` (a patient's first and last name) replaced by "[patient]"."""
    for name in names:
        name = (name or "").strip()
        if len(name) >= 2:
            text = re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "[patient]", text, flags=re.IGNORECASE)
    return text


def dashboard_link(dashboard_url: str | None) -> str:
    return (dashboard_url or "").rstrip("/") + DASHBOARD_PATH


def _explanation(code: str) -> str:
    try:
        return LoadErrorCode(code).explanation
    except ValueError:
        return ""


def _amount(alert: DigestAlert) -> str:
    if alert.amount_cents is None:
        return "amount unknown"
    currency = alert.currency or "USD"
    return (
        format_cents(alert.amount_cents)
        if currency == "USD"
        else f"{cents_to_decimal(alert.amount_cents)} {currency}"
    )


def _patient(alert: DigestAlert) -> str:
    return (
        f"Patient ref {alert.patient_ref or '(none)'}, PMS account number {alert.account_number or '(none)'}"
    )


def _heading(alert: DigestAlert) -> str:
    what = f"Writeback {alert.writeback_id}" if alert.writeback_id is not None else f"Alert {alert.alert_id}"
    day = alert.local_date.isoformat() if alert.local_date else "date unknown"
    return f"{what} on {alert.connection or 'no connection'}: {_amount(alert)}, {day}"


def _title(digest: Digest) -> str:
    n = len(digest.alerts)
    return (
        f"{n} payment{'s' if n != 1 else ''} need{'s' if n == 1 else ''} attention at {digest.practice_name}"
    )


def digest_notice(digest: Digest) -> Notice:
    return Notice(
        event_type=DIGEST_EVENT,
        subject=f"ledgerlink: {_title(digest)}",
        text=_digest_text(digest),
        html=_digest_html(digest),
        payload=_digest_payload(digest),
    )


def _digest_text(digest: Digest) -> str:
    lines = [f"ledgerlink: {_title(digest)}", "", "New alerts by load error:"]
    for code, count in digest.counts.items():
        lines.append(f"  {code}: {count}")
        if explanation := _explanation(code):
            lines.append(f"    {explanation}")
    if digest.waiting > len(digest.alerts):
        lines.append(f"  ({digest.waiting - len(digest.alerts)} more follow in the next digest)")
    lines.append("")
    for alert in digest.alerts:
        lines.append(_heading(alert))
        lines.append(f"  Load error {alert.code}: {alert.message}")
        lines.append(f"  {_patient(alert)}; status now: {alert.status or 'unknown'}")
        lines.append("")
    lines.append(f"Retry or Clear them in the dashboard: {digest.link}")
    return "\n".join(lines) + "\n"


def _digest_html(digest: Digest) -> str:
    e = html.escape
    counts = "".join(
        f"<li><strong>{e(code)}</strong>: {count}<br><small>{e(_explanation(code))}</small></li>"
        for code, count in digest.counts.items()
    )
    more = (
        f"<p>{digest.waiting - len(digest.alerts)} more follow in the next digest.</p>"
        if digest.waiting > len(digest.alerts)
        else ""
    )
    rows = "".join(
        "<tr>"
        f"<td>{e(str(a.writeback_id) if a.writeback_id is not None else '')}</td>"
        f"<td>{e(a.connection or '')}</td>"
        f"<td style='text-align:right'>{e(_amount(a))}</td>"
        f"<td>{e(a.local_date.isoformat() if a.local_date else '')}</td>"
        f"<td>{e(a.code)}: {e(a.message)}</td>"
        f"<td>{e(a.patient_ref or '')}</td>"
        f"<td>{e(a.account_number or '')}</td>"
        f"<td>{e(a.status or '')}</td>"
        "</tr>"
        for a in digest.alerts
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "Writeback",
            "Connection",
            "Amount",
            "Date",
            "Load error",
            "Patient ref",
            "Account",
            "Status",
        )
    )
    return (
        f"<!doctype html><html><body><h2>{e(_title(digest))}</h2><ul>{counts}</ul>{more}"
        f"<table border='1' cellpadding='4' cellspacing='0'><tr>{head}</tr>{rows}</table>"
        f"<p><a href='{e(digest.link)}'>Retry or Clear them in the dashboard</a></p></body></html>"
    )


def _digest_payload(digest: Digest) -> dict[str, object]:
    return {
        "type": DIGEST_EVENT,
        "created": int(digest.created_at.timestamp()),
        "practice": {"id": digest.practice_slug, "name": digest.practice_name},
        "counts": digest.counts,
        "alerts": [
            {
                "alert_id": a.alert_id,
                "code": a.code,
                "message": a.message,
                "raised_at": a.raised_at.isoformat(),
                "writeback_id": a.writeback_id,
                "connection": a.connection,
                "amount_cents": a.amount_cents,
                "currency": a.currency,
                "local_date": a.local_date.isoformat() if a.local_date else None,
                "status": a.status,
                "patient_ref": a.patient_ref,
                "account_number": a.account_number,
            }
            for a in digest.alerts
        ],
        "more_waiting": max(digest.waiting - len(digest.alerts), 0),
        "link": digest.link,
    }


def ping_notice(practice_slug: str, practice_name: str, link: str, created_at: datetime) -> Notice:
    """A message that shows a target works; it carries no alerts and changes nothing."""
    text = (
        f"This is a test message from ledgerlink for {practice_name}.\n"
        "Digests of failed and unmatched payments will arrive like this one.\n"
        f"Dashboard: {link}\n"
    )
    return Notice(
        event_type=TEST_EVENT,
        subject=f"ledgerlink: test message for {practice_name}",
        text=text,
        html=f"<!doctype html><html><body><p>{html.escape(text).replace(chr(10), '<br>')}</p></body></html>",
        payload={
            "type": TEST_EVENT,
            "created": int(created_at.timestamp()),
            "practice": {"id": practice_slug, "name": practice_name},
            "link": link,
        },
    )
