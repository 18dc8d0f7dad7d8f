"""What the Reconciliation and Patients tests check behind the pages: the store itself (writeback states, audit
entries, account numbers), a user who may only look, and a second practice for isolation."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import httpx

from tests.web.conftest import PRACTICE, Dashboard

VIEWER_PASSWORD = "viewer-password-1"


def query(dashboard: Dashboard, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(dashboard.data_dir / "ledgerlink.db") as db:
        return db.execute(sql, params).fetchall()


def writeback_states(dashboard: Dashboard) -> dict[int, tuple[str, str | None]]:
    """Every writeback: id -> (status, error code)."""
    return {
        wid: (status, code)
        for wid, status, code in query(dashboard, "SELECT id, status, error_code FROM writebacks")
    }


def status_of(dashboard: Dashboard, writeback_id: int) -> str:
    [(status,)] = query(dashboard, "SELECT status FROM writebacks WHERE id = ?", writeback_id)
    return str(status)


def audit(dashboard: Dashboard, action: str) -> list[tuple[str, str]]:
    """(actor, target) of the audit entries with this action, oldest first."""
    return [
        (a, t)
        for a, t in query(
            dashboard, "SELECT actor, target FROM audit_log WHERE action = ? ORDER BY id", action
        )
    ]


def account_number(dashboard: Dashboard, patient_ref: str, practice: str = PRACTICE) -> str | None:
    found = query(
        dashboard,
        "SELECT pa.account_number FROM patient_accounts pa JOIN patients p ON p.id = pa.patient_id "
        "JOIN practices pr ON pr.id = p.practice_id WHERE p.patient_ref = ? AND pr.slug = ?",
        patient_ref,
        practice,
    )
    return str(found[0][0]) if found else None


def writeback_id(dashboard: Dashboard, processor_ref: str, practice: str = PRACTICE) -> int:
    [(wid,)] = query(
        dashboard,
        "SELECT w.id FROM writebacks w JOIN transactions t ON t.id = w.transaction_id "
        "JOIN practices pr ON pr.id = t.practice_id WHERE t.processor_ref = ? AND pr.slug = ?",
        processor_ref,
        practice,
    )
    return int(wid)


def patient_id(dashboard: Dashboard, patient_ref: str, practice: str = PRACTICE) -> int:
    [(pid,)] = query(
        dashboard,
        "SELECT p.id FROM patients p JOIN practices pr ON pr.id = p.practice_id "
        "WHERE p.patient_ref = ? AND pr.slug = ?",
        patient_ref,
        practice,
    )
    return int(pid)


def connection_id(dashboard: Dashboard, practice: str = PRACTICE) -> int:
    [(cid,)] = query(
        dashboard,
        "SELECT c.id FROM connections c JOIN practices pr ON pr.id = c.practice_id WHERE pr.slug = ?",
        practice,
    )
    return int(cid)


def viewer_client(dashboard: Dashboard) -> httpx.Client:
    """Signed in as `viewer`, who may view reports and nothing else."""
    dashboard.cli("users", "add", "viewer", "-P", "view_reports", "--practice", PRACTICE)
    dashboard.cli(
        "users",
        "set-password",
        "viewer",
        "--practice",
        PRACTICE,
        "--password-stdin",
        input=VIEWER_PASSWORD + "\n",
    )
    return dashboard.sign_in_client("viewer", VIEWER_PASSWORD)


def add_other_practice(dashboard: Dashboard) -> None:
    """A second practice, "other", with the demo's data: its own writebacks, patients and connection."""
    dashboard.cli("demo", "--practice", "other")


def payments_on_page(html: str) -> list[str]:
    """The processor references of the rows shown, in order."""
    return re.findall(r'<tr id="wb-\d+" data-status="[a-z_]+" data-payment="([^"]+)"', html)
