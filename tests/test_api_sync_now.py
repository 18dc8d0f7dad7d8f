"""Sync now over real HTTP: `POST /v1/connections/{id}/sync` runs a sync in the server (the dashboard's Sync
now service), `GET /v1/connections/{id}/sync/{run}` follows it to its report; one writer per connection; a
shutdown ends it after the slice in hand; refusals are clear; another practice's ids are 404."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update

from ledgerlink.api.app import create_app
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.engine import lease
from ledgerlink.practices import add_connection
from ledgerlink.serving import running_app
from ledgerlink.store.db import Database
from ledgerlink.store.models import AuditEntry, Connection, Practice, SyncRun, Writeback
from ledgerlink.tokens import issue_token
from tests.conftest import Api, make_practice
from tests.factories import add_patient, add_transaction, sandbox_patient

SLOW = {"batch_size": 1, "latency_ms": 150}


async def sales_due(db: Database, api: Api, data_dir: Path, count: int) -> None:
    """`count` sales of a patient the sandbox PMS knows (the office behind the connection's settings)."""
    pms = SandboxConnector(SandboxSettings(path=data_dir / "sandbox" / "sandbox.db"))
    try:
        patient = await add_patient(db, api.practice, api.connection, "p1", sandbox_patient(pms.office))
    finally:
        await pms.close()
    for number in range(count):
        await add_transaction(db, api.practice, f"ch_{number}", patient=patient)


async def set_settings(db: Database, connection_id: int, settings: dict[str, Any]) -> None:
    """Stored as is (the API would check them): for connector knobs and broken settings."""
    async with db.sessions.begin() as session:
        await session.execute(
            update(Connection).where(Connection.id == connection_id).values(settings=settings)
        )


async def follow(client: httpx.AsyncClient, url: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the run until it has finished; returns it and what was seen on the way."""
    seen: list[dict[str, Any]] = []
    for _ in range(400):
        status = await client.get(url)
        assert status.status_code == 200, status.text
        seen.append(status.json())
        if seen[-1]["finished"]:
            return seen[-1], seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"sync still running: {seen[-1]}")


async def test_sync_now_runs_in_the_background_one_at_a_time_to_its_report(
    api: Api, db: Database, tmp_path: Path
) -> None:
    await sales_due(db, api, tmp_path, 6)
    await set_settings(db, api.connection.id, SLOW)
    async with api.client() as client:
        started = await client.post(f"/v1/connections/{api.connection.id}/sync")
        again = await client.post(f"/v1/connections/{api.connection.id}/sync")
        assert started.status_code == 202, started.text
        body = started.json()
        url = f"/v1/connections/{api.connection.id}/sync/{body['run_id']}"
        assert body == {"run_id": body["run_id"], "connection_id": api.connection.id, "url": url}
        assert started.headers["location"] == url
        final, seen = await follow(client, url)
        runs = (await client.get("/v1/runs")).json()
    assert again.status_code == 409 and again.json()["error"]["code"] == "sync_running"
    running = [s for s in seen if s["status"] == "running"]
    assert running and all(s["alive"] and s["total"] == 6 for s in running)
    assert running[0]["report"] is None and running[-1]["done"] >= running[0]["done"]
    assert final["status"] == "done" and final["alive"] is False and final["error"] is None
    assert final["done"] is None and final["trigger"] == "on_demand"  # progress lives only while it runs
    lines = {line["category"]: line for line in final["report"]}
    assert lines["sales"]["count"] == 6 and lines["sales"]["total_cents"] == 6 * 9700
    assert [r["id"] for r in runs] == [body["run_id"]]  # the refused second sync started no run
    async with db.sessions() as session:
        statuses = set(await session.scalars(select(Writeback.status)))
        audit = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "sync.start")))
    assert statuses == {"posted"}
    assert [(a.actor.startswith("api token "), a.target, a.detail) for a in audit] == [
        (True, f"connection:{api.connection.id}", {"run": body["run_id"]})
    ]


async def test_sync_now_is_refused_while_a_worker_holds_the_lease(api: Api, db: Database) -> None:
    async with db.sessions.begin() as session:
        await lease.acquire(session, api.connection.id, "another-host:4242:worker")
    async with api.client() as client:
        refused = await client.post(f"/v1/connections/{api.connection.id}/sync")
    assert refused.status_code == 409
    assert refused.json()["error"] == {
        "code": "sync_running",
        "message": f"a sync is already running on connection {api.connection.id}; follow it with GET /v1/runs",
        "field": "connection_id",
    }
    async with db.sessions() as session:
        assert list(await session.scalars(select(SyncRun))) == []


async def test_sync_now_refusals_are_clear_and_never_a_server_error(api: Api, db: Database) -> None:
    async with db.sessions.begin() as session:
        practice = await session.get_one(Practice, api.practice.id)
        pull = await add_connection(session, practice, name="downloads", kind="pull")
        broken = await add_connection(session, practice, name="broken", kind="sandbox")
        odd = await add_connection(session, practice, name="odd", kind="sandbox")
    await set_settings(db, broken.id, {"no_such_setting": 1})  # the connector refuses it
    await set_settings(db, odd.id, {"path": 5})  # the task fails with an unexpected error (TypeError)
    async with api.client() as client:
        pulled = await client.post(f"/v1/connections/{pull.id}/sync")
        misconfigured = await client.post(f"/v1/connections/{broken.id}/sync")
        failed = await client.post(f"/v1/connections/{odd.id}/sync")
        unknown_run = await client.get(f"/v1/connections/{api.connection.id}/sync/987654")
        zero = await client.post("/v1/connections/0/sync")
    assert (pulled.status_code, pulled.json()["error"]["code"]) == (409, "pull_connection")
    assert "pull connection" in pulled.json()["error"]["message"]
    assert (misconfigured.status_code, misconfigured.json()["error"]["code"]) == (409, "sync_not_started")
    assert "bad sandbox settings" in misconfigured.json()["error"]["message"]
    assert (failed.status_code, failed.json()["error"]["code"]) == (503, "sync_failed")
    assert "TypeError" in failed.json()["error"]["message"]
    assert unknown_run.status_code == 404 and zero.status_code == 422


async def test_another_practices_connection_and_run_are_404(api: Api, db: Database) -> None:
    _, theirs = await make_practice(db, slug="grin")
    async with db.sessions.begin() as session:
        session.add(SyncRun(connection_id=theirs.id, status="done"))
    async with db.sessions() as session:
        their_run = await session.scalar(select(SyncRun.id))
    assert their_run is not None
    async with api.client() as client:
        mine = await client.post(f"/v1/connections/{api.connection.id}/sync")
        assert mine.status_code == 202
        my_run = mine.json()["run_id"]
        await follow(client, f"/v1/connections/{api.connection.id}/sync/{my_run}")
        answers = {
            "start": await client.post(f"/v1/connections/{theirs.id}/sync"),
            "their run": await client.get(f"/v1/connections/{theirs.id}/sync/{their_run}"),
            "their run on my connection": await client.get(
                f"/v1/connections/{api.connection.id}/sync/{their_run}"
            ),
            "my run on their connection": await client.get(f"/v1/connections/{theirs.id}/sync/{my_run}"),
        }
        missing = await client.post("/v1/connections/987654/sync")
    for what, answer in answers.items():
        assert answer.status_code == 404, what
        assert "grin" not in answer.text
    assert answers["start"].text.replace(str(theirs.id), "N") == missing.text.replace("987654", "N")
    async with db.sessions() as session:
        runs = list(await session.scalars(select(SyncRun.connection_id)))
    assert sorted(runs) == sorted([theirs.id, api.connection.id])  # nothing started on theirs


async def test_a_shutdown_ends_the_sync_after_the_slice_in_hand(db: Database, tmp_path: Path) -> None:
    practice, connection = await make_practice(db)
    async with db.sessions.begin() as session:
        token = (await issue_token(session, practice, "admin", actor="test")).plain
    api = Api("", practice, connection, token)
    await sales_due(db, api, tmp_path, 40)
    await set_settings(db, connection.id, {**SLOW, "latency_ms": 100})
    with running_app(create_app(db.url, tmp_path)) as url:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            started = await client.post(f"/v1/connections/{connection.id}/sync")
            assert started.status_code == 202
            await asyncio.sleep(0.5)
    async with db.sessions() as session:
        run = await session.get_one(SyncRun, started.json()["run_id"])
        held = await session.get_one(Connection, connection.id)
        statuses = list(await session.scalars(select(Writeback.status)))
    assert run.status == "done" and held.sync_owner is None  # recorded what it wrote, freed the lease
    assert 0 < statuses.count("posted") < 40 and "in_flight" not in statuses
    assert run.error is None
