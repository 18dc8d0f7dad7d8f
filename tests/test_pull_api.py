"""The pull API over real HTTP (uvicorn on loopback), with keys issued as a PMS would get them: the whole
Download Transactions cycle, its report, alerts, tenant isolation, clerk privileges and concurrent pulls."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ledgerlink.access_keys import issue_clerk_key, issue_merchant_key
from ledgerlink.practices import add_connection
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Practice, Writeback
from ledgerlink.users import create_user
from tests.conftest import Api, make_practice
from tests.factories import add_patient, add_transaction


async def pull_connection(db: Database, practice: Practice, **rules: Any) -> Connection:
    async with db.sessions.begin() as session:
        return await add_connection(session, practice, name="pull", kind="pull", **rules)


async def keys(db: Database, practice: Practice, *, clerk: list[str] | None = None) -> dict[str, str]:
    """The headers a PMS sends: practice id and merchant key, plus a clerk key with `clerk` privileges."""
    async with db.sessions.begin() as session:
        practice = await session.merge(practice)  # the key sets the practice's public id: keep it
        merchant = await issue_merchant_key(session, practice, actor="test")
        headers = {"X-Practice-Id": merchant.public_id, "X-Merchant-Key": merchant.plain}
        if clerk is not None:
            user = await create_user(
                session, practice, "-".join(["clerk", *clerk]), actor="test", privileges=clerk
            )
            headers["X-Clerk-Key"] = (await issue_clerk_key(session, user, actor="test")).plain
    return headers


def pms(api: Api, headers: dict[str, str]) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api.url, headers=headers, timeout=60)


def lines(report: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {line["category"]: (line["count"], line["total_cents"]) for line in report["lines"]}


async def test_download_ack_finish_and_the_report_add_up(api: Api, db: Database) -> None:
    connection = await pull_connection(db, api.practice)
    known = await add_patient(db, api.practice, connection, "p1", "1042")
    unknown = await add_patient(db, api.practice, connection, "p2", None)
    await add_transaction(db, api.practice, "ch_1", gross=10000, fee=300, patient=known)
    await add_transaction(
        db, api.practice, "plan_1", payment_type="payment_plan", gross=5000, fee=150, patient=known
    )
    await add_transaction(db, api.practice, "dec_1", kind="decline", gross=2500, fee=0, patient=known)
    await add_transaction(db, api.practice, "ch_2", gross=4000, fee=100, patient=unknown)
    async with pms(api, await keys(db, api.practice)) as client:
        downloaded = await client.get("/v1/pull/transactions")
        assert downloaded.status_code == 200, downloaded.text
        page = downloaded.json()
        items = {i["processor_ref"]: i for i in page["items"]}
        assert set(items) == {"ch_1", "plan_1"}
        sale = items["ch_1"]
        assert (sale["amount_cents"], sale["amount"], sale["account_number"], sale["entry"]) == (
            9700,
            "97.00",
            "1042",
            "payment",
        )
        assert page["has_more"] is False and page["next_cursor"] > max(
            i["id"] for i in page["items"]
        )  # past ch_2
        acked = await client.post(
            "/v1/pull/acknowledgements",
            json={
                "run_id": page["run_id"],
                "results": [
                    {"id": sale["id"], "status": "loaded", "pms_ref": "PAY-77"},
                    {
                        "id": items["plan_1"]["id"],
                        "status": "failed",
                        "error_code": "PMS_REJECTED",
                        "error_message": "ledger closed for the month",
                    },
                ],
            },
        )
        assert acked.status_code == 200
        assert [(r["status"], r["pms_ref"]) for r in acked.json()["results"]] == [
            ("loaded", "PAY-77"),
            ("failed", None),
        ]
        finished = await client.post(f"/v1/pull/runs/{page['run_id']}/finish")
        reprint = await client.get(f"/v1/pull/runs/{page['run_id']}/report")
    assert finished.status_code == 200 and reprint.json() == finished.json()
    report = lines(finished.json())
    assert report["sales"] == (1, 9700)
    assert report["recurring"] == (0, 0)
    assert report["in_error"] == (1, 4850)
    assert report["declined"] == (1, 2500)
    assert report["invalid_patient_id"] == (1, 3900)
    assert report["already_processed"] == (0, 0)
    async with api.client() as staff:  # the staff API shows the same report for the run
        assert (await staff.get(f"/v1/runs/{page['run_id']}/report")).json() == finished.json()
        runs = (await staff.get("/v1/runs")).json()
    assert [(r["id"], r["trigger"], r["status"]) for r in runs] == [(page["run_id"], "pull", "done")]


async def test_a_loaded_entry_is_not_downloaded_again_and_a_repeat_ack_is_already_processed(
    api: Api, db: Database
) -> None:
    connection = await pull_connection(db, api.practice, amount_mode="gross")
    patient = await add_patient(db, api.practice, connection, "p1", "1042")
    await add_transaction(db, api.practice, "ch_1", gross=10000, fee=300, patient=patient)
    async with pms(api, await keys(db, api.practice)) as client:
        first = (await client.get("/v1/pull/transactions")).json()
        assert [(i["amount_cents"], i["amount"]) for i in first["items"]] == [(10000, "100.00")]
        wid = first["items"][0]["id"]
        body = {"run_id": first["run_id"], "results": [{"id": wid, "status": "loaded", "pms_ref": "PAY-1"}]}
        assert (await client.post("/v1/pull/acknowledgements", json=body)).json()["results"][0][
            "status"
        ] == "loaded"
        await client.post(f"/v1/pull/runs/{first['run_id']}/finish")

        second = (await client.get("/v1/pull/transactions", params={"cursor": 0})).json()
        assert second["items"] == [] and second["run_id"] != first["run_id"]
        body = {"run_id": second["run_id"], "results": [{"id": wid, "status": "loaded", "pms_ref": "PAY-2"}]}
        again = (await client.post("/v1/pull/acknowledgements", json=body)).json()["results"][0]
        assert (again["status"], again["pms_ref"]) == ("already_processed", "PAY-1")
        report = lines((await client.post(f"/v1/pull/runs/{second['run_id']}/finish")).json())
    assert report["already_processed"] == (1, 10000) and report["sales"] == (0, 0)
    async with db.sessions() as session:
        wb = await session.get(Writeback, wid)
        assert wb is not None and (wb.status, wb.pms_ref) == ("posted", "PAY-1")


async def test_a_refund_of_a_loaded_payment_names_the_payments_pms_ref(api: Api, db: Database) -> None:
    connection = await pull_connection(db, api.practice)
    patient = await add_patient(db, api.practice, connection, "p1", "1042")
    await add_transaction(db, api.practice, "ch_1", gross=10000, fee=300, patient=patient)
    async with pms(api, await keys(db, api.practice)) as client:
        sale = (await client.get("/v1/pull/transactions")).json()
        body = {
            "run_id": sale["run_id"],
            "results": [{"id": sale["items"][0]["id"], "status": "loaded", "pms_ref": "PAY-9"}],
        }
        await client.post("/v1/pull/acknowledgements", json=body)
        await add_transaction(
            db, api.practice, "re_1", kind="refund", original="ch_1", gross=2500, fee=0, patient=patient
        )
        refund = (await client.get("/v1/pull/transactions", params={"cursor": sale["next_cursor"]})).json()
    assert [
        (i["processor_ref"], i["entry"], i["amount"], i["original_pms_ref"]) for i in refund["items"]
    ] == [("re_1", "reversal", "25.00", "PAY-9")]


async def test_a_failed_load_raises_an_alert_in_the_feed_until_done(api: Api, db: Database) -> None:
    connection = await pull_connection(db, api.practice)
    patient = await add_patient(db, api.practice, connection, "p1", "1042")
    await add_transaction(db, api.practice, "ch_1", patient=patient)
    async with pms(api, await keys(db, api.practice)) as client:
        page = (await client.get("/v1/pull/transactions")).json()
        wid = page["items"][0]["id"]
        failure = {
            "id": wid,
            "status": "failed",
            "error_code": "INVALID_PATIENT_ID",
            "error_message": "no 1042",
        }
        await client.post("/v1/pull/acknowledgements", json={"run_id": page["run_id"], "results": [failure]})
        feed = (await client.get("/v1/pull/alerts")).json()
        assert [(a["code"], a["writeback_id"], a["processor_ref"], a["done"]) for a in feed] == [
            ("INVALID_PATIENT_ID", wid, "ch_1", False)
        ]
        assert "no 1042" in feed[0]["message"] and feed[0]["explanation"]
        done = await client.post(f"/v1/pull/alerts/{feed[0]['id']}/done")
        assert done.status_code == 200 and done.json()["done"] is True
        assert (await client.get("/v1/pull/alerts")).json() == []
        missing = await client.post("/v1/pull/alerts/999999/done")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_bad_acknowledgements_are_refused_naming_the_item(api: Api, db: Database) -> None:
    await pull_connection(db, api.practice)
    async with pms(api, await keys(db, api.practice)) as client:
        run_id = (await client.get("/v1/pull/transactions")).json()["run_id"]
        unknown_code = await client.post(
            "/v1/pull/acknowledgements",
            json={
                "run_id": run_id,
                "results": [
                    {"id": 1, "status": "loaded", "pms_ref": "A"},
                    {"id": 2, "status": "failed", "error_code": "PRINTER_ON_FIRE"},
                ],
            },
        )
        no_ref = await client.post(
            "/v1/pull/acknowledgements",
            json={"run_id": run_id, "results": [{"id": 1, "status": "loaded", "pms_ref": " "}]},
        )
        no_run = await client.post(
            "/v1/pull/acknowledgements",
            json={"run_id": 999999, "results": [{"id": 1, "status": "loaded", "pms_ref": "A"}]},
        )
        finished = await client.post(f"/v1/pull/runs/{run_id}/finish")
        late = await client.post(
            "/v1/pull/acknowledgements",
            json={"run_id": run_id, "results": [{"id": 1, "status": "loaded", "pms_ref": "A"}]},
        )
    assert unknown_code.status_code == 422 and unknown_code.json()["error"]["field"] == "results.1.error_code"
    assert no_ref.status_code == 422 and no_ref.json()["error"]["field"] == "results.0"
    assert no_run.status_code == 404
    assert finished.status_code == 200
    assert late.status_code == 409 and "download again" in late.json()["error"]["message"]


async def test_another_practices_keys_see_and_change_nothing(api: Api, db: Database) -> None:
    connection = await pull_connection(db, api.practice)
    patient = await add_patient(db, api.practice, connection, "p1", "1042")
    await add_transaction(db, api.practice, "ch_1", patient=patient)
    await add_transaction(
        db, api.practice, "ch_2", patient=await add_patient(db, api.practice, connection, "p2")
    )
    other, _ = await make_practice(db, slug="other")
    await pull_connection(db, other)
    async with pms(api, await keys(db, api.practice)) as mine:
        page = (await mine.get("/v1/pull/transactions")).json()
        alert_id = (await mine.get("/v1/pull/alerts")).json()[0]["id"]
    wid = page["items"][0]["id"]
    async with pms(api, await keys(db, other)) as theirs:
        own = (await theirs.get("/v1/pull/transactions")).json()
        assert own["items"] == [] and own["run_id"] != page["run_id"]
        acked = await theirs.post(
            "/v1/pull/acknowledgements",
            json={"run_id": own["run_id"], "results": [{"id": wid, "status": "loaded", "pms_ref": "EVIL"}]},
        )
        assert [(r["status"], r["pms_ref"]) for r in acked.json()["results"]] == [("not_found", None)]
        for response in (
            await theirs.post(
                "/v1/pull/acknowledgements",
                json={
                    "run_id": page["run_id"],
                    "results": [{"id": wid, "status": "loaded", "pms_ref": "EVIL"}],
                },
            ),
            await theirs.get(f"/v1/pull/runs/{page['run_id']}/report"),
            await theirs.post(f"/v1/pull/runs/{page['run_id']}/finish"),
            await theirs.post(f"/v1/pull/alerts/{alert_id}/done"),
        ):
            assert response.status_code == 404 and "ch_" not in response.text
        assert (await theirs.get("/v1/pull/alerts")).json() == []
    async with db.sessions() as session:
        wb = await session.get(Writeback, wid)
        assert wb is not None and (wb.status, wb.pms_ref) == ("in_flight", None)
    mixed = {"X-Practice-Id": (await keys(db, api.practice))["X-Practice-Id"]} | {
        "X-Merchant-Key": (await keys(db, other))["X-Merchant-Key"]
    }
    async with pms(api, mixed) as crossed:
        assert (await crossed.get("/v1/pull/transactions")).status_code == 401


async def test_a_clerk_needs_run_sync_to_download_and_view_reports_for_alerts(api: Api, db: Database) -> None:
    await pull_connection(db, api.practice)
    async with pms(api, await keys(db, api.practice, clerk=["view_reports"])) as viewer:
        refused = await viewer.get("/v1/pull/transactions")
        ack = await viewer.post(
            "/v1/pull/acknowledgements",
            json={"run_id": 1, "results": [{"id": 1, "status": "loaded", "pms_ref": "A"}]},
        )
        assert (await viewer.get("/v1/pull/alerts")).status_code == 200
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "privilege_missing"
    assert ack.status_code == 403
    async with pms(api, await keys(db, api.practice, clerk=["run_sync"])) as runner:
        run_id = (await runner.get("/v1/pull/transactions")).json()["run_id"]
        assert (await runner.get(f"/v1/pull/runs/{run_id}/report")).status_code == 403
        assert (await runner.get("/v1/pull/alerts")).status_code == 403
        assert (await runner.post(f"/v1/pull/runs/{run_id}/finish")).status_code == 200
    async with pms(api, {}) as nobody:
        assert (await nobody.get("/v1/pull/transactions")).status_code == 401


async def test_concurrent_downloads_share_one_run_and_each_entry_is_loaded_once(
    api: Api, db: Database
) -> None:
    connection = await pull_connection(db, api.practice)
    patient = await add_patient(db, api.practice, connection, "p1", "1042")
    for n in range(12):
        await add_transaction(db, api.practice, f"ch_{n}", gross=1000 + n, fee=0, patient=patient)
    headers = await keys(db, api.practice)
    async with pms(api, headers) as a, pms(api, headers) as b:
        pages = await asyncio.gather(
            *(c.get("/v1/pull/transactions", params={"limit": 8}) for c in (a, b, a, b))
        )
        bodies = [p.json() for p in pages]
        assert len({body["run_id"] for body in bodies}) == 1  # never two open runs for one connection
        run_id = bodies[0]["run_id"]
        rest = (await a.get("/v1/pull/transactions", params={"cursor": bodies[0]["next_cursor"]})).json()
        offered = {i["id"]: i["amount_cents"] for body in [*bodies, rest] for i in body["items"]}
        assert len(offered) == 12
        for body in bodies:  # the same entry is handed out with the same amount every time
            assert all(offered[i["id"]] == i["amount_cents"] for i in body["items"])

        def acks(tag: str) -> dict[str, Any]:
            results = [{"id": wid, "status": "loaded", "pms_ref": f"{tag}-{wid}"} for wid in sorted(offered)]
            return {"run_id": run_id, "results": results}

        answers = await asyncio.gather(
            a.post("/v1/pull/acknowledgements", json=acks("A")),
            b.post("/v1/pull/acknowledgements", json=acks("B")),
        )
        outcomes = [r.json()["results"] for r in answers]
        for first, second in zip(*outcomes, strict=True):
            assert sorted([first["status"], second["status"]]) == ["already_processed", "loaded"]
            assert first["pms_ref"] == second["pms_ref"]  # both name the one reference kept
        report = lines((await a.post(f"/v1/pull/runs/{run_id}/finish")).json())
    assert report["sales"] == (12, sum(1000 + n for n in range(12)))
    assert report["already_processed"] == (0, 0)  # loaded by this very run: counted once, as Sales
    async with db.sessions() as session:
        from sqlalchemy import select

        rows = list(await session.scalars(select(Writeback).where(Writeback.connection_id == connection.id)))
    assert sorted(w.status for w in rows) == ["posted"] * 12
    assert len({w.pms_ref for w in rows}) == 12
