"""Tenant isolation for every route of the API: practice B's credentials never see or change practice A.

Two practices are built with one of everything (connections, patients, transactions ingested over the
API, a sync run and a pull run with their writebacks, an alert, a patient import, users and keys, a
notification target, a Stripe signing secret). Then, for every operation in the app's own OpenAPI
document, B's token (or B's merchant key, for the pull API) is used on A's ids, names and secrets:

- an operation with an id in its path answers 404 `not_found`, exactly like an id that does not exist;
- a list answers B's own rows only: none of A's ids, and no text of A's (names, references, key prefixes);
- nothing of A changes: A's own view of everything is the same before and after all of B's calls.

`CASES` must name every operation of the document: a new route without a case fails this test until one
is written (or the route is listed as needing none, with the reason).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ledgerlink.api.app import create_app
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.engine.sync import run_sync
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.serving import running_app
from ledgerlink.store.db import Database
from ledgerlink.store.models import Alert, Connection, Writeback
from ledgerlink.tokens import issue_token
from tests.factories import add_patient, sandbox_patient


@dataclass
class Tenant:
    """One practice and what it owns, as seen through the API."""

    slug: str
    token: str = ""
    public_id: str = ""
    merchant_key: str = ""
    whsec: str = ""
    connection_id: int = 0  # a sandbox connection
    connection_name: str = ""
    pull_connection_id: int = 0
    patient_ids: list[int] = field(default_factory=list)
    failed_writeback_id: int = 0
    writeback_ids: list[int] = field(default_factory=list)
    run_id: int = 0
    pull_run_id: int = 0
    alert_id: int = 0
    import_id: int = 0
    user_id: int = 0
    target_id: int = 0
    secret_id: int = 0
    markers: list[str] = field(default_factory=list)  # text that is this practice's and no one else's


@dataclass
class World:
    url: str
    a: Tenant
    b: Tenant
    a_ids: dict[str, set[int]]

    def staff(self, tenant: Tenant) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=30
        )

    def pull(self, tenant: Tenant, public_id: str | None = None) -> httpx.AsyncClient:
        headers = {"X-Practice-Id": public_id or tenant.public_id, "X-Merchant-Key": tenant.merchant_key}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    def no_leak(self, response: httpx.Response) -> None:
        """None of A's text in the answer, except what the request itself said (an echoed name)."""
        asked = (str(response.request.url) + response.request.content.decode(errors="replace")).lower()
        body = response.text.lower()
        leaked = [m for m in self.a.markers if m.lower() in body and m.lower() not in asked]
        assert not leaked, f"{response.request.method} {response.request.url.path} shows A's {leaked}"

    def not_found(self, response: httpx.Response) -> None:
        where = f"{response.request.method} {response.request.url.path}"
        assert response.status_code == 404, f"{where}: {response.status_code} {response.text}"
        assert response.json()["error"]["code"] == "not_found", f"{where}: {response.text}"
        self.no_leak(response)

    def own_rows_only(
        self, response: httpx.Response, resource: str | None = None, items: str | None = None
    ) -> None:
        """A list answered with B's rows only: 200, none of A's ids (of `resource`) and none of A's text."""
        where = f"{response.request.method} {response.request.url.path}"
        assert response.status_code == 200, f"{where}: {response.status_code} {response.text}"
        self.no_leak(response)
        if resource is not None:
            body = response.json()
            rows = body[items] if items else body
            shown = {row["id"] for row in rows}
            assert not shown & self.a_ids[resource], (
                f"{where} lists A's {resource} {shown & self.a_ids[resource]}"
            )


@dataclass(frozen=True)
class Case:
    """How to exercise one operation with B's credentials against A (`check`), or why it needs no case.

    `last`: run after every other case, because it gives B rows named like A's (a connection, a user,
    a transaction with A's names): a later list check would take B's own copy for a leak.
    """

    check: Callable[[World], Awaitable[None]] | None = None
    no_case_because: str = ""
    last: bool = False


CHARGE_EVENT = {"id": "evt_isolation_1", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}


def stripe_signature(payload: bytes, secret: str) -> str:
    """A `Stripe-Signature` header as Stripe computes it (HMAC-SHA256 of "timestamp.payload")."""
    stamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={digest}"


# --- the cases --------------------------------------------------------------------------------------------


async def practice_is_own(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.get("/v1/practice")
    w.own_rows_only(answer)
    assert answer.json()["slug"] == "bravo"


async def practice_change_is_own(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.patch("/v1/practice", json={"name": "Bravo Dental Group", "patient_capacity": 900})
    w.own_rows_only(answer)
    assert answer.json()["slug"] == "bravo"


async def connections_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/connections"), "connections")


async def connection_named_like_as(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/connections", json={"kind": "sandbox", "name": w.a.connection_name})
    assert answer.status_code == 201, answer.text  # A's name is no conflict for B: it tells B nothing
    w.no_leak(answer)


async def connection_read(w: World) -> None:
    async with w.staff(w.b) as b:
        for connection_id in w.a_ids["connections"]:
            w.not_found(await b.get(f"/v1/connections/{connection_id}"))


async def connection_change(w: World) -> None:
    async with w.staff(w.b) as b:
        for connection_id in w.a_ids["connections"]:
            w.not_found(
                await b.patch(f"/v1/connections/{connection_id}", json={"rules": {"timing": "daily"}})
            )


async def patients_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/patients"), "patients", "items")
        w.own_rows_only(await b.get("/v1/patients", params={"search": "alpha"}), "patients", "items")


async def patient_read(w: World) -> None:
    async with w.staff(w.b) as b:
        for patient_id in w.a.patient_ids:
            w.not_found(await b.get(f"/v1/patients/{patient_id}"))


async def patient_change(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.patch(f"/v1/patients/{w.a.patient_ids[0]}", json={"active": False}))


def account_paths(w: World) -> list[str]:
    """A's patient on A's and on B's connection, and B's patient on A's connection."""
    return [
        f"/v1/patients/{w.a.patient_ids[1]}/accounts/{w.a.connection_id}",
        f"/v1/patients/{w.a.patient_ids[0]}/accounts/{w.b.connection_id}",
        f"/v1/patients/{w.b.patient_ids[0]}/accounts/{w.a.connection_id}",
    ]


async def account_set(w: World) -> None:
    async with w.staff(w.b) as b:
        for path in account_paths(w):
            w.not_found(await b.put(path, json={"account_number": "999"}))


async def account_remove(w: World) -> None:
    async with w.staff(w.b) as b:
        for path in account_paths(w):
            w.not_found(await b.delete(path))


async def import_upload(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post(
            "/v1/patient-imports",
            params={"connection": w.a.connection_id},
            content=b"patient_id,last_name\r\nx1,Intruder\r\n",
            headers={"Content-Type": "text/csv"},
        )
    assert answer.status_code == 404 and answer.json()["error"]["field"] == "connection", answer.text
    w.no_leak(answer)


async def imports_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/patient-imports"), "imports", "items")


async def import_read(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.get(f"/v1/patient-imports/{w.a.import_id}"))


async def import_rejections(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.get(f"/v1/patient-imports/{w.a.import_id}/rejections"))


async def audit_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/audit", params={"limit": 500}), "audit", "items")


async def stripe_webhook(w: World) -> None:
    payload = json.dumps(CHARGE_EVENT).encode()
    async with httpx.AsyncClient(base_url=w.url, timeout=30) as anyone:

        async def deliver(practice: str, secret: str) -> httpx.Response:
            headers = {
                "Stripe-Signature": stripe_signature(payload, secret),
                "Content-Type": "application/json",
            }
            return await anyone.post(f"/v1/webhooks/stripe/{practice}", content=payload, headers=headers)

        own = await deliver("bravo", w.b.whsec)
        into_a = await deliver("alpha", w.b.whsec)
        a_signed_into_b = await deliver("bravo", w.a.whsec)
    assert own.status_code == 200, own.text  # the signing here is right: the refusals below mean something
    for refused in (into_a, a_signed_into_b):
        assert refused.status_code == 400, refused.text
        w.no_leak(refused)


async def stripe_secrets_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/webhooks/stripe-secrets"), "secrets")


async def stripe_secret_like_as(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/webhooks/stripe-secrets", json={"secret": w.a.whsec})
    assert answer.status_code == 201, answer.text  # a 409 would tell B that A uses this secret
    w.no_leak(answer)


async def users_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/users"), "users")


async def user_named_like_as(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/users", json={"username": "alpha-clerk"})
    assert answer.status_code == 201, answer.text
    w.no_leak(answer)


async def user_read(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.get(f"/v1/users/{w.a.user_id}"))


async def user_change(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.patch(f"/v1/users/{w.a.user_id}", json={"active": False}))


async def clerk_key(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.post(f"/v1/users/{w.a.user_id}/clerk-key"))


async def merchant_keys_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/integration-keys"))


async def merchant_key_rotation(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/integration-keys", json={"overlap_hours": 0})
    assert answer.status_code == 201, answer.text
    w.no_leak(answer)
    w.b.merchant_key, w.b.public_id = answer.json()["key"], answer.json()["practice_id"]
    async with w.pull(w.a) as a:  # A's key still works: B's rotation is B's alone
        assert (await a.get("/v1/pull/alerts")).status_code == 200


async def targets_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/notification-targets"), "targets")


async def target_like_as(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post(
            "/v1/notification-targets", json={"kind": "email", "address": "alpha-office@example.com"}
        )
    assert answer.status_code == 201, answer.text
    w.no_leak(answer)


async def target_remove(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.delete(f"/v1/notification-targets/{w.a.target_id}"))


async def target_test(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.post(f"/v1/notification-targets/{w.a.target_id}/test"))


async def transactions_ingest(w: World) -> None:
    sale = sale_payload("ch_alpha_1", "alpha-p1")  # A's reference is B's to use: not "already imported"
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/transactions", json=sale)
    assert answer.status_code == 201, answer.text
    assert (answer.json()["imported"], answer.json()["already_imported"]) == (1, 0)


async def writebacks_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/writebacks"), "writebacks")


async def writebacks_retry(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/writebacks/retry", json={"ids": [w.a.failed_writeback_id]})
    assert [row["ok"] for row in answer.json()] == [False]
    w.no_leak(answer)


async def writebacks_clear(w: World) -> None:
    async with w.staff(w.b) as b:
        answer = await b.post("/v1/writebacks/clear", json={"ids": [w.a.failed_writeback_id]})
    assert [row["ok"] for row in answer.json()] == [False]
    w.no_leak(answer)


async def runs_list(w: World) -> None:
    async with w.staff(w.b) as b:
        w.own_rows_only(await b.get("/v1/runs"), "runs")


async def run_report(w: World) -> None:
    async with w.staff(w.b) as b:
        for run_id in w.a_ids["runs"]:
            w.not_found(await b.get(f"/v1/runs/{run_id}/report"))


async def range_report(w: World) -> None:
    days = {"since": "2000-01-01", "until": "2100-01-01"}
    async with w.staff(w.b) as b:
        w.not_found(await b.get("/v1/report", params={**days, "connection": w.a.connection_name}))
        w.own_rows_only(await b.get("/v1/report", params={**days, "connection": w.b.connection_name}))


async def pull_download(w: World) -> None:
    async with w.pull(w.b) as b:
        w.own_rows_only(await b.get("/v1/pull/transactions"), "writebacks", "items")
        w.not_found(await b.get("/v1/pull/transactions", params={"connection": "alpha-pull"}))
    async with w.pull(w.b, public_id=w.a.public_id) as mixed:  # A's practice id with B's key
        assert (await mixed.get("/v1/pull/transactions")).status_code == 401


async def pull_acknowledge(w: World) -> None:
    results = [{"id": wid, "status": "loaded", "pms_ref": "PAY-1"} for wid in w.a.writeback_ids]
    async with w.pull(w.b) as b:
        w.not_found(
            await b.post("/v1/pull/acknowledgements", json={"run_id": w.a.pull_run_id, "results": results})
        )


async def pull_finish(w: World) -> None:
    async with w.pull(w.b) as b:
        w.not_found(await b.post(f"/v1/pull/runs/{w.a.pull_run_id}/finish"))


async def pull_report(w: World) -> None:
    async with w.pull(w.b) as b:
        w.not_found(await b.get(f"/v1/pull/runs/{w.a.pull_run_id}/report"))


async def pull_alerts(w: World) -> None:
    async with w.pull(w.b) as b:
        w.own_rows_only(await b.get("/v1/pull/alerts"), "alerts")


async def pull_alert_done(w: World) -> None:
    async with w.pull(w.b) as b:
        w.not_found(await b.post(f"/v1/pull/alerts/{w.a.alert_id}/done"))


async def sync_start(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.post(f"/v1/connections/{w.a.connection_id}/sync"))


async def sync_status(w: World) -> None:
    async with w.staff(w.b) as b:
        w.not_found(await b.get(f"/v1/connections/{w.a.connection_id}/sync/{w.a.run_id}"))
        w.not_found(await b.get(f"/v1/connections/{w.b.connection_id}/sync/{w.a.run_id}"))


async def patient_suggestions(w: World) -> None:
    async with w.staff(w.b) as b:
        for patient_id in w.a.patient_ids:
            mine = {"connection_id": w.b.connection_id}
            w.not_found(await b.get(f"/v1/patients/{patient_id}/suggestions", params=mine))
        theirs = {"connection_id": w.a.connection_id}
        w.not_found(await b.get(f"/v1/patients/{w.b.patient_ids[0]}/suggestions", params=theirs))


async def user_password(w: World) -> None:
    async with w.staff(w.b) as b:
        body = {"password": "a long enough password"}
        w.not_found(await b.put(f"/v1/users/{w.a.user_id}/password", json=body))


async def key_revoke(w: World) -> None:
    prefix = w.a.merchant_key.split("_")[1]
    async with w.staff(w.b) as b:
        w.not_found(await b.post(f"/v1/keys/{prefix}/revoke"))
    async with w.pull(w.a) as a:  # A's key still works: B cannot revoke it
        assert (await a.get("/v1/pull/alerts")).status_code == 200


CASES: dict[str, Case] = {
    "POST /v1/keys/{prefix}/revoke": Case(key_revoke),
    "POST /v1/connections/{connection_id}/sync": Case(sync_start),
    "GET /v1/connections/{connection_id}/sync/{run_id}": Case(sync_status),
    "GET /v1/patients/{patient_id}/suggestions": Case(patient_suggestions),
    "PUT /v1/users/{user_id}/password": Case(user_password),
    "GET /v1/health": Case(no_case_because="liveness: no credentials, no practice data"),
    "GET /v1/practice": Case(practice_is_own),
    "PATCH /v1/practice": Case(practice_change_is_own),
    "GET /v1/connections": Case(connections_list),
    "POST /v1/connections": Case(connection_named_like_as, last=True),
    "GET /v1/connections/{connection_id}": Case(connection_read),
    "PATCH /v1/connections/{connection_id}": Case(connection_change),
    "GET /v1/patients": Case(patients_list),
    "GET /v1/patients/{patient_id}": Case(patient_read),
    "PATCH /v1/patients/{patient_id}": Case(patient_change),
    "PUT /v1/patients/{patient_id}/accounts/{connection_id}": Case(account_set),
    "DELETE /v1/patients/{patient_id}/accounts/{connection_id}": Case(account_remove),
    "POST /v1/patient-imports": Case(import_upload),
    "GET /v1/patient-imports": Case(imports_list),
    "GET /v1/patient-imports/{import_id}": Case(import_read),
    "GET /v1/patient-imports/{import_id}/rejections": Case(import_rejections),
    "GET /v1/audit": Case(audit_list),
    "POST /v1/webhooks/stripe/{practice}": Case(stripe_webhook),
    "GET /v1/webhooks/stripe-secrets": Case(stripe_secrets_list),
    "POST /v1/webhooks/stripe-secrets": Case(stripe_secret_like_as, last=True),
    "GET /v1/users": Case(users_list),
    "POST /v1/users": Case(user_named_like_as, last=True),
    "GET /v1/users/{user_id}": Case(user_read),
    "PATCH /v1/users/{user_id}": Case(user_change),
    "POST /v1/users/{user_id}/clerk-key": Case(clerk_key),
    "GET /v1/integration-keys": Case(merchant_keys_list),
    "POST /v1/integration-keys": Case(merchant_key_rotation, last=True),
    "GET /v1/notification-targets": Case(targets_list),
    "POST /v1/notification-targets": Case(target_like_as, last=True),
    "DELETE /v1/notification-targets/{target_id}": Case(target_remove),
    "POST /v1/notification-targets/{target_id}/test": Case(target_test),
    "POST /v1/transactions": Case(transactions_ingest, last=True),
    "GET /v1/writebacks": Case(writebacks_list),
    "POST /v1/writebacks/retry": Case(writebacks_retry),
    "POST /v1/writebacks/clear": Case(writebacks_clear),
    "GET /v1/runs": Case(runs_list),
    "GET /v1/runs/{run_id}/report": Case(run_report),
    "GET /v1/report": Case(range_report),
    "GET /v1/pull/transactions": Case(pull_download),
    "POST /v1/pull/acknowledgements": Case(pull_acknowledge),
    "POST /v1/pull/runs/{run_id}/finish": Case(pull_finish),
    "GET /v1/pull/runs/{run_id}/report": Case(pull_report),
    "GET /v1/pull/alerts": Case(pull_alerts),
    "POST /v1/pull/alerts/{alert_id}/done": Case(pull_alert_done),
}


# --- building the two practices ---------------------------------------------------------------------------


def sale_payload(reference: str, patient_ref: str) -> dict[str, Any]:
    return {
        "reference": reference,
        "time": "2026-03-02T15:00:00Z",
        "kind": "sale",
        "payment_type": "terminal",
        "gross": "100.00",
        "fee": "3.00",
        "patient_id": patient_ref,
    }


async def build_tenant(db: Database, url: str, slug: str, pms: SandboxConnector) -> Tenant:
    """A practice with a sandbox and a pull connection, two patients (one without an account number), two
    sales ingested over the API, a sync run, a pull download with its failure alert, a finished patient
    import with a rejection, a user with a clerk key, a merchant key, an e-mail target, a Stripe secret."""
    tenant = Tenant(slug=slug, connection_name=f"{slug}-pms", whsec=f"whsec_{slug}{'0' * 24}")
    async with db.sessions.begin() as session:
        practice = await create_practice(
            session, slug=slug, name=f"{slug.title()} Dental", timezone="America/Chicago"
        )
        connection = await add_connection(session, practice, name=tenant.connection_name, kind="sandbox")
        tenant.token = (await issue_token(session, practice, f"{slug}-token", actor="test")).plain
    tenant.connection_id = connection.id
    known = await add_patient(
        db, practice, connection, f"{slug}-p1", sandbox_patient(pms.office, f"{slug}-one")
    )
    unknown = await add_patient(db, practice, connection, f"{slug}-p2", None)
    tenant.patient_ids = [known.id, unknown.id]
    staff = {"Authorization": f"Bearer {tenant.token}"}
    async with httpx.AsyncClient(base_url=url, headers=staff, timeout=30) as client:

        async def created(path: str, body: dict[str, Any]) -> dict[str, Any]:
            answer = await client.post(path, json=body)
            assert answer.status_code == 201, answer.text
            result: dict[str, Any] = answer.json()
            return result

        sales = [sale_payload(f"ch_{slug}_1", f"{slug}-p1"), sale_payload(f"ch_{slug}_2", f"{slug}-p2")]
        assert (await created("/v1/transactions", {"transactions": sales}))["imported"] == 2
        tenant.pull_connection_id = (
            await created("/v1/connections", {"kind": "pull", "name": f"{slug}-pull"})
        )["id"]
        issued = await created("/v1/integration-keys", {})
        tenant.public_id, tenant.merchant_key = issued["practice_id"], issued["key"]
        user = await created("/v1/users", {"username": f"{slug}-clerk", "privileges": ["run_sync"]})
        tenant.user_id = user["id"]
        clerk = await created(f"/v1/users/{user['id']}/clerk-key", {})
        tenant.target_id = (
            await created(
                "/v1/notification-targets", {"kind": "email", "address": f"{slug}-office@example.com"}
            )
        )["id"]
        tenant.secret_id = (await created("/v1/webhooks/stripe-secrets", {"secret": tenant.whsec}))["id"]
        upload = await client.post(
            "/v1/patient-imports",
            params={"connection": connection.id, "filename": f"{slug}-patients.csv"},
            content=f"patient_id,last_name,birth_date\r\n{slug}-p3,{slug}import,1990-01-01\r\n{slug}-p4,x,soon\r\n".encode(),
            headers={"Content-Type": "text/csv"},
        )
        assert upload.status_code == 202, upload.text
        tenant.import_id = upload.json()["id"]
        for _ in range(400):
            if (await client.get(f"/v1/patient-imports/{tenant.import_id}")).json()["status"] != "running":
                break
            await asyncio.sleep(0.05)
    outcome = await run_sync(db, connection.id, pms)
    assert outcome.run_id is not None
    tenant.run_id = outcome.run_id
    async with httpx.AsyncClient(
        base_url=url,
        headers={"X-Practice-Id": tenant.public_id, "X-Merchant-Key": tenant.merchant_key},
        timeout=30,
    ) as puller:
        download = await puller.get("/v1/pull/transactions")
        assert download.status_code == 200, download.text
        tenant.pull_run_id = download.json()["run_id"]
        alerts = (await puller.get("/v1/pull/alerts")).json()
    async with db.sessions.begin() as session:
        if not alerts:  # the failure alert of the download, made here should the download raise none
            alert = Alert(
                practice_id=practice.id,
                connection_id=tenant.pull_connection_id,
                code="INVALID_PATIENT_ID",
                message=f"{slug}-alert",
            )
            session.add(alert)
            await session.flush()
            tenant.alert_id = alert.id
        else:
            tenant.alert_id = alerts[0]["id"]
        rows = await session.execute(
            select(Writeback.id, Writeback.status)
            .join(Connection, Connection.id == Writeback.connection_id)
            .where(Connection.practice_id == practice.id)
        )
        for writeback_id, status in rows:
            tenant.writeback_ids.append(writeback_id)
            if status == "failed":
                tenant.failed_writeback_id = writeback_id
    assert tenant.failed_writeback_id, "the patient without an account number should have failed"
    tenant.markers = [
        f"{slug.title()} Dental",
        tenant.connection_name,
        f"{slug}-pull",
        f"{slug}-p1",
        f"{slug}-p2",
        f"{slug}import",
        f"ch_{slug}_1",
        f"ch_{slug}_2",
        f"{slug}-clerk",
        f"{slug}-office@example.com",
        f"{slug}-patients.csv",
        tenant.public_id,
        issued["prefix"],
        clerk["prefix"],
        tenant.token.split("_")[1],
    ]
    return tenant


async def a_ids(world_a: Tenant, url: str) -> dict[str, set[int]]:
    """A's ids per kind of row, as A's own token lists them."""
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {world_a.token}"}) as a:
        audit = (await a.get("/v1/audit", params={"limit": 500})).json()["items"]
        users = (await a.get("/v1/users")).json()
        secrets = (await a.get("/v1/webhooks/stripe-secrets")).json()
        targets = (await a.get("/v1/notification-targets")).json()
    return {
        "connections": {world_a.connection_id, world_a.pull_connection_id},
        "patients": set(world_a.patient_ids),
        "writebacks": set(world_a.writeback_ids),
        "runs": {world_a.run_id, world_a.pull_run_id},
        "imports": {world_a.import_id},
        "audit": {e["id"] for e in audit},
        "users": {u["id"] for u in users},
        "secrets": {s["id"] for s in secrets},
        "targets": {t["id"] for t in targets},
        "alerts": {world_a.alert_id},
    }


A_VIEWS = (
    "/v1/practice",
    "/v1/connections",
    "/v1/patients?limit=500",
    "/v1/patient-imports",
    "/v1/users",
    "/v1/integration-keys",
    "/v1/notification-targets",
    "/v1/webhooks/stripe-secrets",
    "/v1/writebacks",
    "/v1/runs",
    "/v1/audit?limit=500",
)


async def a_snapshot(w: World) -> dict[str, Any]:
    """Everything A sees of itself (with its own token)."""
    async with w.staff(w.a) as a:
        views = {path: (await a.get(path)).json() for path in A_VIEWS}
        views["import"] = (await a.get(f"/v1/patient-imports/{w.a.import_id}")).json()
        views["rejections"] = (await a.get(f"/v1/patient-imports/{w.a.import_id}/rejections")).json()
        for patient_id in w.a.patient_ids:
            views[f"patient {patient_id}"] = (await a.get(f"/v1/patients/{patient_id}")).json()
    return views


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> AsyncIterator[World]:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    try:
        with running_app(create_app(db.url, data_dir=tmp_path / "data")) as url:
            a = await build_tenant(db, url, "alpha", pms)
            b = await build_tenant(db, url, "bravo", pms)
            yield World(url, a, b, await a_ids(a, url))
    finally:
        await pms.close()


def operations(url: str) -> set[str]:
    document = httpx.get(f"{url}/openapi.json").json()
    methods = {"get", "post", "put", "patch", "delete"}
    return {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


async def test_every_route_keeps_practices_apart(world: World) -> None:
    documented = await asyncio.to_thread(operations, world.url)
    missing = sorted(documented - set(CASES))
    assert not missing, f"routes without a tenant isolation case in CASES: {missing}"
    stale = sorted(set(CASES) - documented)
    assert not stale, f"CASES names routes the app no longer has: {stale}"
    before = await a_snapshot(world)
    ordered = sorted(CASES.items(), key=lambda item: item[1].last)
    for operation, case in ordered:
        if case.check is None:
            assert case.no_case_because, f"{operation}: give the reason it needs no isolation case"
            continue
        await case.check(world)
    after = await a_snapshot(world)
    changed = sorted(view for view in before if before[view] != after[view])
    assert not changed, f"B's calls changed what A sees: {changed}"
