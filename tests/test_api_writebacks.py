"""Staff routes over real HTTP: writebacks (list, Retry, Clear) and a run's report, each practice sealed off."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.engine.sync import run_sync
from ledgerlink.store.db import Database
from ledgerlink.store.models import Transaction
from ledgerlink.tokens import issue_token
from tests.conftest import Api, make_practice
from tests.factories import add_patient, add_transaction, sandbox_patient


async def failed_and_posted(api: Api, db: Database, tmp_path: Path) -> tuple[SandboxConnector, int]:
    """One sale posted and one failed for a missing account number; returns the sync's run id."""
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    known = await add_patient(db, api.practice, api.connection, "p1", sandbox_patient(pms.office))
    unknown = await add_patient(db, api.practice, api.connection, "p2", None)
    await add_transaction(db, api.practice, "ch_ok", patient=known)
    await add_transaction(db, api.practice, "ch_bad", patient=unknown)
    outcome = await run_sync(db, api.connection.id, pms)
    assert outcome.run_id is not None
    return pms, outcome.run_id


async def test_list_filter_retry_and_clear(api: Api, db: Database, tmp_path: Path) -> None:
    pms, _ = await failed_and_posted(api, db, tmp_path)
    async with api.client() as client:
        everything = (await client.get("/v1/writebacks")).json()
        assert {w["processor_ref"]: w["status"] for w in everything} == {
            "ch_ok": "posted",
            "ch_bad": "failed",
        }
        failed = (await client.get("/v1/writebacks", params={"status": "failed"})).json()
        assert [w["processor_ref"] for w in failed] == ["ch_bad"]
        assert failed[0]["error_code"] == "INVALID_PATIENT_ID"
        bad_id, ok_id = failed[0]["id"], next(w["id"] for w in everything if w["processor_ref"] == "ch_ok")

        retried = (await client.post("/v1/writebacks/retry", json={"ids": [bad_id, ok_id]})).json()
        assert [(r["id"], r["ok"]) for r in retried] == [(bad_id, True), (ok_id, False)]
        cleared = (await client.post("/v1/writebacks/clear", json={"ids": [bad_id]})).json()
        assert cleared[0]["ok"] is False  # pending again after the retry: nothing to clear
        bad_filter = await client.get("/v1/writebacks", params={"status": "nonsense"})
        assert bad_filter.status_code == 422 and bad_filter.json()["error"]["field"] == "status"
    await pms.close()


async def test_run_report(api: Api, db: Database, tmp_path: Path) -> None:
    pms, run_id = await failed_and_posted(api, db, tmp_path)
    async with api.client() as client:
        report = (await client.get(f"/v1/runs/{run_id}/report")).json()
        missing = await client.get("/v1/runs/999999/report")
    lines = {line["category"]: (line["count"], line["total_cents"]) for line in report["lines"]}
    assert lines["sales"] == (1, 9700) and lines["invalid_patient_id"][0] == 1
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    await pms.close()


async def test_another_practice_sees_nothing_and_changes_nothing(
    api: Api, db: Database, tmp_path: Path
) -> None:
    pms, run_id = await failed_and_posted(api, db, tmp_path)
    other, _ = await make_practice(db, slug="other")
    async with db.sessions.begin() as session:
        stranger = (await issue_token(session, other, "theirs", actor="test")).plain
    async with api.client() as mine:
        bad_id = (await mine.get("/v1/writebacks", params={"status": "failed"})).json()[0]["id"]
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {stranger}"}) as theirs:
        assert (await theirs.get("/v1/writebacks")).json() == []
        report = await theirs.get(f"/v1/runs/{run_id}/report")
        assert report.status_code == 404  # the same answer as for a run that does not exist
        retried = (await theirs.post("/v1/writebacks/retry", json={"ids": [bad_id]})).json()
        cleared = (await theirs.post("/v1/writebacks/clear", json={"ids": [bad_id]})).json()
    assert retried[0]["ok"] is False and cleared[0]["ok"] is False
    assert retried[0]["message"] == cleared[0]["message"]
    async with api.client() as mine:
        still = (await mine.get("/v1/writebacks", params={"status": "failed"})).json()
    assert [w["id"] for w in still] == [bad_id]
    await pms.close()


async def test_runs_and_the_date_range_report(api: Api, db: Database, tmp_path: Path) -> None:
    pms, run_id = await failed_and_posted(api, db, tmp_path)
    async with db.sessions() as session:
        day = (await session.scalar(select(Transaction.local_date))).isoformat()  # type: ignore[union-attr]
    async with api.client() as client:
        runs = (await client.get("/v1/runs")).json()
        report = (await client.get("/v1/report", params={"since": day, "until": day})).json()
        backwards = await client.get("/v1/report", params={"since": day, "until": "2000-01-01"})
        not_a_date = await client.get("/v1/report", params={"since": "1700000000", "until": day})
    assert [(r["id"], r["status"], r["connection"]) for r in runs] == [(run_id, "done", "pms")]
    lines = {line["category"]: (line["count"], line["total_cents"]) for line in report["lines"]}
    assert lines["sales"] == (1, 9700) and lines["invalid_patient_id"][0] == 1
    assert backwards.status_code == 422 and backwards.json()["error"]["field"] == "until"
    assert not_a_date.status_code == 422
    other, _ = await make_practice(db, slug="other")
    async with db.sessions.begin() as session:
        stranger = (await issue_token(session, other, "theirs", actor="test")).plain
    async with httpx.AsyncClient(base_url=api.url, headers={"Authorization": f"Bearer {stranger}"}) as theirs:
        assert (await theirs.get("/v1/runs")).json() == []
    await pms.close()
