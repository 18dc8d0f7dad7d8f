"""Stripe webhooks over real HTTP (uvicorn on loopback, SQLite and PostgreSQL), the event mapping on its own,
the staff routes for signing secrets, and `ledgerlink stripe secret-add/list`.

Deliveries are signed the way Stripe signs them, with the stripe library's own sender-side helper
(`stripe.WebhookSignature.generate_signature_header`); the server verifies with the library too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from cryptography.fernet import Fernet
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from ledgerlink.cli.app import app as cli_app
from ledgerlink.secrets import SecretBox
from ledgerlink.settings import get_settings
from ledgerlink.sources.stripe_events import (
    KnownCharge,
    StripeEventError,
    charges_to_look_up,
    transactions_for_event,
)
from ledgerlink.store.db import Database
from ledgerlink.store.models import AuditEntry, Patient, Transaction, WebhookEvent, WebhookSecret
from ledgerlink.webhook_secrets import add_secret, rotate_secret
from tests.conftest import Api, make_practice

OLD = "whsec_old_0123456789abcdef"
NEW = "whsec_new_fedcba9876543210"
CREATED = 1_764_601_445  # 2025-12-01T15:04:05Z


@pytest.fixture(autouse=True)
def sealing_key(monkeypatch: pytest.MonkeyPatch) -> SecretBox:
    """The installation key the served app seals with (instead of a secret.key in the user's data dir)."""
    key = Fernet.generate_key()
    monkeypatch.setenv("LEDGERLINK_SECRET_KEY", key.decode())
    return SecretBox(key)


# --- events as Stripe sends them ------------------------------------------------------------------------


def charge(
    charge_id: str = "ch_1", amount: int = 12_500, metadata: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "captured": True,
        "currency": "usd",
        "created": CREATED,
        "status": "succeeded",
        "balance_transaction": "txn_1",
        "metadata": {"patient_id": "pat_1", "payment_type": "terminal", "fee": "375"}
        if metadata is None
        else metadata,
        "payment_method_details": {
            "type": "card",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "fingerprint": "fp_secret"},
        },
        **extra,
    }


def event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": CREATED,
        "data": {"object": obj},
    }


def refund(refund_id: str, amount: int, charge_id: str = "ch_1", status: str = "succeeded") -> dict[str, Any]:
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": charge_id,
        "currency": "usd",
        "created": CREATED + 3600,
        "status": status,
        "metadata": {},
    }


def signed(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The sender's side: the header Stripe computes for `body` (HMAC-SHA256 of "t.body")."""
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


async def deliver(
    api: Api,
    payload: dict[str, Any],
    secret: str = OLD,
    *,
    practice: str | None = None,
    timestamp: int | None = None,
) -> httpx.Response:
    body = json.dumps(payload)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:  # no staff token: not needed
        return await client.post(
            f"/v1/webhooks/stripe/{practice or api.practice.slug}",
            content=body,
            headers=signed(body, secret, timestamp),
        )


async def with_secret(db: Database, api: Api, box: SecretBox, secret: str = OLD) -> None:
    async with db.sessions.begin() as session:
        await add_secret(session, box, api.practice, secret, actor="test")


async def stored(db: Database) -> dict[str, Transaction]:
    async with db.sessions() as session:
        return {t.processor_ref: t for t in await session.scalars(select(Transaction))}


async def event_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


# --- the mapping on its own (no I/O) ---------------------------------------------------------------------


def fields(payload: dict[str, Any], known: dict[str, KnownCharge] | None = None) -> list[dict[str, str]]:
    return [m.fields for m in transactions_for_event(payload, known)]


def test_sale_fields_come_from_the_charge_and_its_metadata() -> None:
    (sale,) = fields(event("charge.succeeded", charge(metadata={"patient_id": " pat_9 "})))
    assert sale == {
        "reference": "ch_1",
        "time": "2025-12-01T15:04:05+00:00",
        "kind": "sale",
        "payment_type": "online",  # the default when the metadata names none
        "gross": "125.00",
        "fee": "0",
        "currency": "USD",
        "patient_id": "pat_9",
        "card_brand": "visa",
        "card_last4": "4242",
    }


def test_amounts_convert_exactly_per_currency_exponent() -> None:
    def gross(currency: str, amount: int) -> str:
        metadata = {"patient_id": "pat_1"}
        return fields(event("charge.succeeded", charge(amount=amount, currency=currency, metadata=metadata)))[
            0
        ]["gross"]

    assert gross("usd", 1) == "0.01" and gross("usd", 99_999_999_999) == "999999999.99"
    assert gross("jpy", 5_000) == "5000"  # no minor unit
    assert gross("kwd", 12_340) == "12.34"
    with pytest.raises(StripeEventError) as fraction:
        gross("kwd", 12_345)
    assert fraction.value.field == "data.object.amount_captured"


def test_fee_from_an_expanded_balance_transaction_in_the_same_currency_else_metadata() -> None:
    expanded = {"id": "txn_1", "object": "balance_transaction", "fee": 392, "currency": "usd"}
    converted = expanded | {"currency": "eur", "fee": 1}
    assert fields(event("charge.succeeded", charge(balance_transaction=expanded)))[0]["fee"] == "3.92"
    assert fields(event("charge.succeeded", charge(balance_transaction=converted)))[0]["fee"] == "3.75"
    with pytest.raises(StripeEventError) as bad:
        fields(event("charge.succeeded", charge(metadata={"patient_id": "p", "fee": "3.75"})))
    assert bad.value.field == "data.object.metadata.fee"


def test_terminal_card_details_keep_brand_and_last4_only() -> None:
    present = {"type": "card_present", "card_present": {"brand": "mastercard", "last4": "0005", "emv": "x"}}
    (sale,) = fields(event("charge.succeeded", charge(payment_method_details=present)))
    assert (sale["card_brand"], sale["card_last4"]) == ("mastercard", "0005")
    assert "emv" not in json.dumps(sale) and "fp_secret" not in json.dumps(
        fields(event("charge.succeeded", charge()))
    )


def test_authorisations_that_moved_no_money_map_to_nothing() -> None:
    assert fields(event("charge.succeeded", charge(captured=False))) == []
    assert fields(event("charge.refunded", charge(captured=False))) == []
    assert fields(event("refund.created", refund("re_1", 100, status="canceled"))) == []


def test_charge_refunded_without_its_refund_list_maps_only_the_sale() -> None:
    assert [f["reference"] for f in fields(event("charge.refunded", charge()))] == ["ch_1"]


def test_refunds_and_disputes_take_patient_and_type_from_the_stored_sale() -> None:
    known = {"ch_1": KnownCharge("pat_7", "payment_plan")}
    refund_event = event("refund.created", refund("re_1", 250))
    assert charges_to_look_up(refund_event) == ["ch_1"]
    (mapped,) = fields(refund_event, known)
    assert (mapped["kind"], mapped["original_reference"], mapped["gross"]) == ("refund", "ch_1", "2.50")
    assert (mapped["patient_id"], mapped["payment_type"]) == ("pat_7", "payment_plan")
    dispute = {"id": "dp_1", "amount": 5, "charge": "ch_2", "currency": "usd", "created": CREATED}
    with pytest.raises(StripeEventError) as unknown:
        fields(event("charge.dispute.created", dispute), known)
    assert unknown.value.field == "data.object.charge"
    expanded = dispute | {"charge": charge("ch_2", metadata={"patient_id": "pat_8"})}
    (chargeback,) = fields(event("charge.dispute.created", expanded))
    assert (chargeback["patient_id"], chargeback["original_reference"]) == ("pat_8", "ch_2")


# --- over HTTP ------------------------------------------------------------------------------------------


async def test_signed_charge_is_stored_as_a_sale(api: Api, db: Database, sealing_key: SecretBox) -> None:
    await with_secret(db, api, sealing_key)
    answer = await deliver(api, event("charge.succeeded", charge()))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": True, "imported": 1, "already_imported": 0}
    sale = (await stored(db))["ch_1"]
    assert (sale.kind, sale.payment_type, sale.source) == ("sale", "terminal", "stripe")
    assert (sale.gross_cents, sale.fee_cents, sale.net_cents) == (12_500, 375, 12_125)
    assert (sale.card_brand, sale.card_last4, sale.currency) == ("visa", "4242", "USD")
    assert sale.occurred_at == datetime(2025, 12, 1, 15, 4, 5, tzinfo=UTC)
    async with db.sessions() as session:
        patient = await session.get(Patient, sale.patient_id)
    assert patient is not None and patient.patient_ref == "pat_1"


async def test_stale_signature_is_refused_and_nothing_is_stored(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await with_secret(db, api, sealing_key)
    answer = await deliver(api, event("charge.succeeded", charge()), timestamp=int(time.time()) - 3600)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "signature_stale"
    assert await stored(db) == {} and await event_count(db) == 0


async def test_tampered_or_unsigned_body_is_refused(api: Api, db: Database, sealing_key: SecretBox) -> None:
    await with_secret(db, api, sealing_key)
    body = json.dumps(event("charge.succeeded", charge(amount=100)))
    headers = signed(body, OLD)
    async with httpx.AsyncClient(base_url=api.url) as client:
        tampered = await client.post(
            f"/v1/webhooks/stripe/{api.practice.slug}", content=body.replace("100", "900"), headers=headers
        )
        unsigned = await client.post(f"/v1/webhooks/stripe/{api.practice.slug}", content=body)
    assert tampered.status_code == 400 and tampered.json()["error"]["code"] == "signature_invalid"
    assert unsigned.status_code == 400 and unsigned.json()["error"]["code"] == "signature_missing"
    assert await stored(db) == {}


async def test_rotated_out_secret_verifies_during_the_overlap_and_not_after(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await with_secret(db, api, sealing_key, OLD)
    async with db.sessions.begin() as session:
        await rotate_secret(session, sealing_key, api.practice, f"  {NEW}\n", actor="test")  # pasted
    assert (await deliver(api, event("charge.succeeded", charge("ch_1"), "evt_1"), OLD)).status_code == 200
    assert (await deliver(api, event("charge.succeeded", charge("ch_2"), "evt_2"), NEW)).status_code == 200
    async with db.sessions.begin() as session:
        expires = await session.scalars(select(WebhookSecret.expires_at).order_by(WebhookSecret.id))
        old_expiry, new_expiry = list(expires)
        assert new_expiry is None and old_expiry is not None
        assert timedelta(hours=23) < old_expiry - datetime.now(UTC) <= timedelta(hours=24)
        await session.execute(
            update(WebhookSecret)
            .where(WebhookSecret.expires_at.is_not(None))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    late = await deliver(api, event("charge.succeeded", charge("ch_3"), "evt_3"), OLD)
    assert late.status_code == 400 and late.json()["error"]["code"] == "signature_invalid"
    assert sorted(await stored(db)) == ["ch_1", "ch_2"]


async def test_unknown_practice_looks_like_a_bad_signature(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await make_practice(db, slug="nosecret")
    await with_secret(db, api, sealing_key)
    payload = event("charge.succeeded", charge())
    unknown = await deliver(api, payload, practice="no-such-practice")
    without_secret = await deliver(api, payload, practice="nosecret")
    wrong_secret = await deliver(api, payload, "whsec_someone_else")
    assert [r.status_code for r in (unknown, without_secret, wrong_secret)] == [400, 400, 400]
    assert unknown.json() == without_secret.json() == wrong_secret.json()
    assert unknown.json()["error"]["code"] == "signature_invalid"
    assert await stored(db) == {}


async def test_replays_are_harmless(api: Api, db: Database, sealing_key: SecretBox) -> None:
    await with_secret(db, api, sealing_key)
    first = await deliver(api, event("charge.succeeded", charge(), "evt_1"))
    again = await deliver(api, event("charge.succeeded", charge(), "evt_1"))
    # The same charge in another event (Stripe sends charge.captured after a capture) is not stored twice.
    captured = await deliver(api, event("charge.captured", charge(), "evt_2"))
    assert first.json()["imported"] == 1
    assert again.status_code == 200 and again.json() == {"received": True, "replayed": True}
    assert captured.status_code == 200 and captured.json()["already_imported"] == 1
    assert list(await stored(db)) == ["ch_1"] and await event_count(db) == 2


async def test_refunds_link_to_their_original_sale(api: Api, db: Database, sealing_key: SecretBox) -> None:
    await with_secret(db, api, sealing_key)
    assert (await deliver(api, event("charge.succeeded", charge(), "evt_1"))).status_code == 200
    # An API version before 2022-11-15: the charge carries its refund list (a failed refund moved no money).
    refunded = charge(
        refunds={"object": "list", "data": [refund("re_1", 2_500), refund("re_bad", 100, status="failed")]}
    )
    listed = await deliver(api, event("charge.refunded", refunded, "evt_2"))
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"received": True, "imported": 1, "already_imported": 1}
    # Later API versions send the refund on its own, without the charge's metadata.
    alone = await deliver(api, event("refund.created", refund("re_2", 1_000), "evt_3"))
    assert alone.status_code == 200, alone.text
    rows = await stored(db)
    sale = rows["ch_1"]
    assert sorted(rows) == ["ch_1", "re_1", "re_2"]
    for ref, cents in (("re_1", 2_500), ("re_2", 1_000)):
        assert (rows[ref].kind, rows[ref].original_id, rows[ref].gross_cents) == ("refund", sale.id, cents)
        assert (rows[ref].patient_id, rows[ref].payment_type) == (sale.patient_id, "terminal")


async def test_dispute_is_a_chargeback_and_failed_charge_a_decline(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await with_secret(db, api, sealing_key)
    await deliver(api, event("charge.succeeded", charge(), "evt_1"))
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "amount": 12_500,
        "charge": "ch_1",
        "currency": "usd",
        "created": CREATED + 86_400,
        "status": "needs_response",
        "metadata": {},
    }
    disputed = await deliver(api, event("charge.dispute.created", dispute, "evt_2"))
    failed = await deliver(
        api, event("charge.failed", charge("ch_2", metadata={}, status="failed", captured=False), "evt_3")
    )
    assert disputed.status_code == 200 and failed.status_code == 200, (disputed.text, failed.text)
    rows = await stored(db)
    assert (rows["dp_1"].kind, rows["dp_1"].original_id) == ("chargeback", rows["ch_1"].id)
    assert rows["dp_1"].patient_id == rows["ch_1"].patient_id
    assert (rows["ch_2"].kind, rows["ch_2"].payment_type, rows["ch_2"].patient_id) == (
        "decline",
        "online",
        None,
    )


async def test_missing_or_wrong_metadata_is_422_naming_the_field(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await with_secret(db, api, sealing_key)
    no_patient = await deliver(api, event("charge.succeeded", charge(metadata={"payment_type": "terminal"})))
    bad_type = await deliver(
        api, event("charge.succeeded", charge(metadata={"patient_id": "p", "payment_type": "cash"}))
    )
    orphan = await deliver(api, event("refund.created", refund("re_1", 100, "ch_unknown")))
    assert [r.status_code for r in (no_patient, bad_type, orphan)] == [422, 422, 422]
    assert no_patient.json()["error"]["field"] == "data.object.metadata.patient_id"
    assert bad_type.json()["error"]["field"] == "data.object.metadata.payment_type"
    assert "ch_unknown" in orphan.json()["error"]["message"]
    assert await stored(db) == {} and await event_count(db) == 0
    # Fixed at the sender, the same event id is taken.
    assert (await deliver(api, event("charge.succeeded", charge()))).status_code == 200


async def test_large_amounts_arrive_to_the_cent(api: Api, db: Database, sealing_key: SecretBox) -> None:
    await with_secret(db, api, sealing_key)
    big = 987_654_321_019  # $9,876,543,210.19: no float could carry this and stay exact
    metadata = {"patient_id": "pat_1", "fee": "28642201079"}
    answer = await deliver(api, event("charge.succeeded", charge(amount=big, metadata=metadata)))
    assert answer.status_code == 200, answer.text
    sale = (await stored(db))["ch_1"]
    assert (sale.gross_cents, sale.fee_cents, sale.net_cents) == (big, 28_642_201_079, big - 28_642_201_079)


async def test_other_event_types_are_acknowledged_and_ignored(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    await with_secret(db, api, sealing_key)
    answer = await deliver(api, event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert answer.status_code == 200 and answer.json() == {"received": True, "ignored": True}
    assert await stored(db) == {}


async def test_staff_manage_secrets_without_ever_seeing_one(
    api: Api, db: Database, sealing_key: SecretBox
) -> None:
    async with api.client() as client:
        added = await client.post("/v1/webhooks/stripe-secrets", json={"secret": f" {OLD} "})
        duplicate = await client.post("/v1/webhooks/stripe-secrets", json={"secret": OLD})
        not_stripe = await client.post("/v1/webhooks/stripe-secrets", json={"secret": "sk_live_123"})
        rotated = await client.post(
            "/v1/webhooks/stripe-secrets", json={"secret": NEW, "rotate": True, "overlap_hours": 2}
        )
        listed = await client.get("/v1/webhooks/stripe-secrets")
        anonymous = await httpx.AsyncClient(base_url=api.url).get("/v1/webhooks/stripe-secrets")
    assert added.status_code == 201 and rotated.status_code == 201
    assert duplicate.status_code == 409
    assert not_stripe.status_code == 422 and "whsec_" in not_stripe.json()["error"]["message"]
    assert anonymous.status_code == 401
    secrets = listed.json()
    assert [s["id"] for s in secrets] == [rotated.json()["id"], added.json()["id"]]
    assert secrets[0]["expires_at"] is None and secrets[1]["expires_at"] is not None
    assert all(s["live"] for s in secrets)
    for answer in (added, duplicate, rotated, listed):
        assert "whsec_" not in answer.text
    assert (await deliver(api, event("charge.succeeded", charge()), NEW)).status_code == 200
    async with api.client() as client:
        third = await client.post(
            "/v1/webhooks/stripe-secrets", json={"secret": "whsec_third", "rotate": True, "overlap_hours": 0}
        )
        live = (await client.get("/v1/webhooks/stripe-secrets", params={"live_only": "true"})).json()
    assert [s["id"] for s in live] == [third.json()["id"]]
    async with db.sessions() as session:
        actions = list(
            await session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("webhook%")))
        )
        sealed = list(await session.scalars(select(WebhookSecret.secret_sealed)))
    assert actions.count("webhook_secret.added") == 3 and "webhook_secret.rotated" in actions
    assert all(SecretBox.is_sealed(value) and "whsec_" not in value for value in sealed)


# --- the CLI ----------------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh data directory for in-process CLI runs, with the secret.key the CLI creates there."""
    monkeypatch.setenv("LEDGERLINK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LEDGERLINK_DATABASE_URL", raising=False)
    monkeypatch.delenv("LEDGERLINK_SECRET_KEY", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_cli_adds_and_lists_secrets_from_stdin_never_showing_them(data_dir: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli_app, ["practice", "create", "smile"]).exit_code == 0
    added = runner.invoke(cli_app, ["stripe", "secret-add", "--practice", "smile"], input=f"  {OLD}  \n")
    assert added.exit_code == 0, added.output
    refused = runner.invoke(cli_app, ["stripe", "secret-add", "-p", "smile"], input="sk_test_nope\n")
    assert refused.exit_code == 2 and "whsec_" in refused.output
    rotated = runner.invoke(
        cli_app, ["stripe", "secret-rotate", "-p", "smile", "--overlap-hours", "1"], input=NEW + "\n"
    )
    assert rotated.exit_code == 0, rotated.output
    listed = runner.invoke(cli_app, ["stripe", "secret-list", "--practice", "smile"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.strip().splitlines()
    assert len(lines) == 2 and "expires never" in lines[0] and "live" in lines[1]
    assert "whsec_" not in added.output + rotated.output + listed.output
    assert (data_dir / "secret.key").exists()
