"""The HTTP API's ingest, served by uvicorn on loopback and called over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.domain.report import ReportCategory
from ledgerlink.engine.sync import run_sync
from ledgerlink.store.db import Database
from ledgerlink.store.models import IdempotencyKey, Transaction
from ledgerlink.tokens import issue_token, revoke_token, token_for
from tests.conftest import Api, make_practice
from tests.factories import add_patient, sandbox_patient


def sale(ref: str, gross: object = "125.00", **extra: object) -> dict[str, object]:
    return {
        "reference": ref,
        "time": "2026-12-01T15:04:05Z",
        "kind": "sale",
        "payment_type": "terminal",
        "gross": gross,
        "fee": "3.75",
        "patient_id": "pat_1",
        "first_name": "Ana",
        "last_name": "Ruiz",
        **extra,
    }


async def stored_refs(db: Database) -> list[str]:
    async with db.sessions() as session:
        return sorted(await session.scalars(select(Transaction.processor_ref)))


async def test_health_and_openapi(api: Api) -> None:
    async with api.client() as client:
        health = await client.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        schema = (await client.get("/openapi.json")).json()
    assert "/v1/transactions" in schema["paths"]
    assert "409" in schema["paths"]["/v1/transactions"]["post"]["responses"]


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ll_nope", "Basic abc", "Bearer ll_0123456789ab_x"]
)
async def test_missing_or_wrong_token_is_401_in_the_error_shape(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with httpx.AsyncClient(base_url=api.url, headers=headers) as client:
        answer = await client.post("/v1/transactions", json=sale("ch_1"))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"] == "Bearer"


async def test_a_token_with_surrounding_whitespace_is_accepted_and_a_revoked_one_is_not(
    api: Api, db: Database
) -> None:
    async with api.client(f"  {api.token}") as client:
        assert (await client.post("/v1/transactions", json=sale("ch_1"))).status_code == 201
    async with db.sessions.begin() as session:
        token = await token_for(session, api.token)
        assert token is not None
        await revoke_token(session, token, actor="test")
    async with api.client() as client:
        assert (await client.post("/v1/transactions", json=sale("ch_2"))).status_code == 401


async def test_one_sale_is_stored_then_written_back_by_a_sync(api: Api, db: Database, tmp_path: Path) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    await add_patient(db, api.practice, api.connection, "pat_1", sandbox_patient(pms.office))
    async with api.client() as client:
        answer = await client.post("/v1/transactions", json=sale("ch_1"))
    assert answer.status_code == 201
    assert answer.json() == {"received": 1, "imported": 1, "already_imported": 0}
    outcome = await run_sync(db, api.connection.id, pms)
    assert outcome.report.line(ReportCategory.SALES).total_cents == 12500 - 375
    assert [p.amount_cents for p in pms.office.payments()] == [12125]
    await pms.close()


async def test_amounts_sent_as_json_numbers_never_pass_through_a_float(api: Api, db: Database) -> None:
    body = '{"transactions": [' + json.dumps(sale("ch_1", gross="X")).replace('"X"', "19.99") + "]}"
    async with api.client() as client:
        answer = await client.post(
            "/v1/transactions", content=body, headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 201, answer.text
    async with db.sessions() as session:
        assert await session.scalar(select(Transaction.gross_cents)) == 1999


async def test_a_batch_with_a_bad_transaction_stores_nothing_and_names_each_problem(
    api: Api, db: Database
) -> None:
    batch = [sale("ch_1"), sale("ch_2", gross="12.345"), sale("ch_3", kind="sold")]
    async with api.client() as client:
        answer = await client.post("/v1/transactions", json={"transactions": batch})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_transactions"
    assert error["field"] == "transactions[1].gross"
    assert [d["field"] for d in error["details"]] == ["transactions[1].gross", "transactions[2].kind"]
    assert await stored_refs(db) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_body"),
        ('{"transactions": []}', "invalid_body"),
        ('{"transactions": {"a": 1}}', "invalid_body"),
        (json.dumps({"transactions": [sale(f"ch_{n}") for n in range(1001)]}), "batch_too_large"),
    ],
)
async def test_bodies_that_are_not_transactions_are_400(api: Api, body: str, code: str) -> None:
    async with api.client() as client:
        answer = await client.post("/v1/transactions", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code


async def test_same_key_and_body_replays_the_first_answer_and_another_body_is_409(
    api: Api, db: Database
) -> None:
    headers = {"Idempotency-Key": "batch-7"}
    async with api.client() as client:
        first = await client.post("/v1/transactions", json=sale("ch_1"), headers=headers)
        again = await client.post("/v1/transactions", json=sale("ch_1"), headers=headers)
        other = await client.post("/v1/transactions", json=sale("ch_2"), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() == {"received": 1, "imported": 1, "already_imported": 0}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await stored_refs(db) == ["ch_1"]


async def test_without_a_key_a_repeat_is_counted_as_already_imported(api: Api, db: Database) -> None:
    async with api.client() as client:
        await client.post("/v1/transactions", json=sale("ch_1"))
        again = await client.post("/v1/transactions", json=sale("ch_1"))
    assert again.status_code == 201
    assert again.json() == {"received": 1, "imported": 0, "already_imported": 1}
    assert await stored_refs(db) == ["ch_1"]


async def test_concurrent_identical_requests_store_once_and_answer_alike(api: Api, db: Database) -> None:
    batch = {"transactions": [sale(f"ch_{n}") for n in range(20)]}
    headers = {"Idempotency-Key": "same"}
    async with api.client() as client:
        answers = await asyncio.gather(
            *(client.post("/v1/transactions", json=batch, headers=headers) for _ in range(8))
        )
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert {json.dumps(a.json(), sort_keys=True) for a in answers} == {
        json.dumps({"received": 20, "imported": 20, "already_imported": 0}, sort_keys=True)
    }
    assert len(await stored_refs(db)) == 20
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


async def test_a_token_stores_into_its_own_practice_only_and_keys_are_per_practice(
    api: Api, db: Database
) -> None:
    other, _ = await make_practice(db, slug="other")
    async with db.sessions.begin() as session:
        other_token = (await issue_token(session, other, "platform", actor="test")).plain
    headers = {"Idempotency-Key": "k1"}
    async with api.client() as mine, api.client(other_token) as theirs:
        assert (await mine.post("/v1/transactions", json=sale("ch_1"), headers=headers)).status_code == 201
        answer = await theirs.post("/v1/transactions", json=sale("ch_9"), headers=headers)
    assert answer.status_code == 201  # the same key in another practice is another key
    async with db.sessions() as session:
        rows = (await session.execute(select(Transaction.practice_id, Transaction.processor_ref))).all()
    assert sorted(rows) == sorted([(api.practice.id, "ch_1"), (other.id, "ch_9")])
