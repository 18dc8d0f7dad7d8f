"""Admin routes over real HTTP: the practice, connections and their rules, patients and their account
numbers, patient imports (a real CSV upload that runs in the background), and the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from ledgerlink.api.app import create_app
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.engine.sync import run_sync
from ledgerlink.patients import uploads
from ledgerlink.practices import add_connection
from ledgerlink.secrets import SecretBox
from ledgerlink.serving import running_app
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Patient, Practice
from ledgerlink.tokens import issue_token
from tests.conftest import Api, make_practice
from tests.factories import add_patient, add_transaction, sandbox_patient

DEVELOPER_KEY = "dev-key-7f3a9c"
CUSTOMER_KEY = "cust-key-b81e44"


@pytest.fixture
async def admin(db: Database, tmp_path: Path) -> AsyncIterator[Api]:
    """The API over the test's store, with its data directory (secret key, uploads) in `tmp_path`."""
    practice, connection = await make_practice(db)
    async with db.sessions.begin() as session:
        issued = await issue_token(session, practice, "admin", actor="test")
    with running_app(create_app(db.url, data_dir=tmp_path / "data")) as url:
        yield Api(url, practice, connection, issued.plain)


def field_of(response: httpx.Response) -> str | None:
    field: str | None = response.json()["error"].get("field")
    return field


async def audit_actions(client: httpx.AsyncClient) -> list[str]:
    page = (await client.get("/v1/audit", params={"limit": 500})).json()
    return [entry["action"] for entry in page["items"]]


async def test_practice_is_read_and_changed_field_by_field(admin: Api) -> None:
    async with admin.client() as client:
        before = (await client.get("/v1/practice")).json()
        changed = await client.patch(
            "/v1/practice",
            json={"name": "Smile Dental", "timezone": "America/Denver", "patient_capacity": 500},
        )
        bad_zone = await client.patch("/v1/practice", json={"timezone": "Mars/Olympus"})
        bad_capacity = await client.patch("/v1/practice", json={"patient_capacity": 0})
        unknown_field = await client.patch("/v1/practice", json={"slug": "taken-over"})
        no_limit = (await client.patch("/v1/practice", json={"patient_capacity": None})).json()
        after = (await client.get("/v1/practice")).json()
        audit = (await client.get("/v1/audit", params={"action": "practice.update"})).json()["items"]
    assert before["slug"] == "smile" and before["timezone"] == "America/Chicago"
    assert changed.status_code == 200 and changed.json()["patient_capacity"] == 500
    assert (bad_zone.status_code, field_of(bad_zone)) == (422, "timezone")
    assert (bad_capacity.status_code, field_of(bad_capacity)) == (422, "patient_capacity")
    assert (unknown_field.status_code, field_of(unknown_field)) == (422, "slug")
    assert no_limit["patient_capacity"] is None
    assert (after["name"], after["timezone"], after["slug"]) == ("Smile Dental", "America/Denver", "smile")
    assert len(audit) == 2
    assert audit[1]["detail"]["timezone"] == {"previous": "America/Chicago", "new": "America/Denver"}
    assert audit[0]["actor"].startswith("api token ")


async def test_connection_secrets_are_sealed_and_never_returned(
    admin: Api, db: Database, tmp_path: Path
) -> None:
    settings = {
        "base_url": "http://127.0.0.1:9/api/v1",
        "developer_key": DEVELOPER_KEY,
        "customer_key": CUSTOMER_KEY,
    }
    async with admin.client() as client:
        created = await client.post(
            "/v1/connections",
            json={
                "kind": "opendental",
                "name": "od",
                "settings": settings,
                "rules": {"amount_mode": "gross"},
            },
        )
        assert created.status_code == 201, created.text
        connection_id = created.json()["id"]
        answers = [
            created,
            await client.get("/v1/connections"),
            await client.get(f"/v1/connections/{connection_id}"),
            # The masked values sent back keep the secrets, but not for a new address: the stored keys
            # would go to whatever server base_url now names.
            await client.patch(
                f"/v1/connections/{connection_id}",
                json={"settings": {**created.json()["settings"], "base_url": "http://127.0.0.1:10/api/v1"}},
            ),
            await client.patch(
                f"/v1/connections/{connection_id}",
                json={"settings": {**settings, "base_url": "http://127.0.0.1:10/api/v1"}},
            ),
            await client.get("/v1/audit"),
        ]
    for answer in answers:
        assert DEVELOPER_KEY not in answer.text and CUSTOMER_KEY not in answer.text
    shown = answers[2].json()["settings"]
    assert shown["developer_key"] == shown["customer_key"] == "********"
    assert shown["base_url"] == "http://127.0.0.1:9/api/v1"
    assert answers[3].status_code == 422, answers[3].text
    assert answers[3].json()["error"]["field"] == "settings.customer_key"
    assert "type customer_key, developer_key again" in answers[3].json()["error"]["message"]
    assert answers[4].json()["settings"]["base_url"] == "http://127.0.0.1:10/api/v1"
    async with db.sessions() as session:
        stored = (await session.get(Connection, connection_id)).settings  # type: ignore[union-attr]
    box = SecretBox.for_data_dir(tmp_path / "data")
    assert SecretBox.is_sealed(stored["developer_key"]) and box.open(stored["developer_key"]) == DEVELOPER_KEY
    assert box.open(stored["customer_key"]) == CUSTOMER_KEY
    updates = [e for e in answers[5].json()["items"] if e["action"] == "connection.update"]
    assert [e["detail"] for e in updates] == [{"settings": ["base_url", "customer_key", "developer_key"]}]


async def test_connection_rules_change_and_bad_values_name_their_field(admin: Api) -> None:
    url = f"/v1/connections/{admin.connection.id}"
    async with admin.client() as client:
        changed = await client.patch(
            url,
            json={
                "rules": {
                    "start_date": "2026-01-15",
                    "amount_mode": "gross_plus_fee",
                    "timing": "daily",
                    "daily_time": "07:30",
                    "chargebacks_enabled": False,
                    "type_handling": {"terminal": "manual", "insurance": "off"},
                }
            },
        )
        merged = await client.patch(
            url, json={"rules": {"type_handling": {"terminal": None, "online": "off"}}}
        )
        bad = {
            "rules.amount_mode": await client.patch(url, json={"rules": {"amount_mode": "half"}}),
            "rules.timing": await client.patch(url, json={"rules": {"timing": "hourly"}}),
            "rules.daily_time": await client.patch(url, json={"rules": {"daily_time": "25:00"}}),
            "rules.start_date": await client.patch(url, json={"rules": {"start_date": "2026-02-30"}}),
            "rules.type_handling": await client.patch(
                url, json={"rules": {"type_handling": {"cash": "off"}}}
            ),
            "rules.chargebacks_enabled": await client.patch(
                url, json={"rules": {"chargebacks_enabled": "no"}}
            ),
            "settings.path": await client.patch(url, json={"settings": {"path": "/etc/passwd"}}),
            "settings.color": await client.patch(url, json={"settings": {"color": "blue"}}),
        }
        kind = await client.post("/v1/connections", json={"kind": "hl7", "name": "lab"})
        missing_key = await client.post(
            "/v1/connections", json={"kind": "opendental", "name": "od", "settings": {"developer_key": "x"}}
        )
        duplicate = await client.post("/v1/connections", json={"kind": "sandbox", "name": "pms"})
        unknown = await client.get("/v1/connections/987654")
        after = (await client.get(url)).json()
        listed = (await client.get("/v1/connections")).json()
        sandboxes = (await client.get("/v1/connections", params={"kind": "sandbox"})).json()
        pulls = (await client.get("/v1/connections", params={"kind": "pull"})).json()
        bad_kind = await client.get("/v1/connections", params={"kind": "fax"})
    assert changed.status_code == 200, changed.text
    rules = merged.json()["rules"]
    assert rules["start_date"] == "2026-01-15" and rules["amount_mode"] == "gross_plus_fee"
    assert (rules["timing"], rules["daily_time"], rules["chargebacks_enabled"]) == ("daily", "07:30", False)
    assert rules["type_handling"]["terminal"] == "automatic"  # null put it back to the default
    assert (rules["type_handling"]["insurance"], rules["type_handling"]["online"]) == ("off", "off")
    for field, answer in bad.items():
        assert (answer.status_code, field_of(answer)) == (422, field), answer.text
    assert (kind.status_code, field_of(kind)) == (422, "kind")
    assert (missing_key.status_code, field_of(missing_key)) == (422, "settings.customer_key")
    assert (duplicate.status_code, field_of(duplicate)) == (409, "name")
    assert unknown.status_code == 404
    assert after["rules"] == rules  # the refused changes changed nothing
    assert [c["name"] for c in listed] == [c["name"] for c in sandboxes] == ["pms"] and pulls == []
    assert (bad_kind.status_code, field_of(bad_kind)) == (422, "kind")


async def test_patients_are_found_paged_and_changed(admin: Api, db: Database) -> None:
    for number in range(1, 6):
        await add_patient(db, admin.practice, admin.connection, f"pat-{number}", f"ACC{number:03}")
    await add_patient(db, admin.practice, None, "walk-in")
    async with admin.client() as client:
        by_name = (await client.get("/v1/patients", params={"search": "test pat-3"})).json()
        by_account = (await client.get("/v1/patients", params={"search": "acc005"})).json()
        first = (await client.get("/v1/patients", params={"limit": 4})).json()
        second = (
            await client.get("/v1/patients", params={"limit": 4, "cursor": first["next_cursor"]})
        ).json()
        patient_id = by_name["items"][0]["id"]
        changed = await client.patch(
            f"/v1/patients/{patient_id}",
            json={"email": "ana@example.com", "phone": "+1 555-0100", "active": False},
        )
        inactive = (await client.get("/v1/patients", params={"active": "false"})).json()
        bad_email = await client.patch(f"/v1/patients/{patient_id}", json={"email": "not an email"})
        bad_cursor = await client.get("/v1/patients", params={"cursor": "bm9wZQ"})
        unknown = await client.get("/v1/patients/987654")
        audit = (await client.get("/v1/audit", params={"action": "patient.update"})).json()["items"]
    assert [p["patient_ref"] for p in by_name["items"]] == ["pat-3"]
    assert by_name["items"][0]["accounts"] == [
        {"connection_id": admin.connection.id, "connection": "pms", "account_number": "ACC003"}
    ]
    assert [p["patient_ref"] for p in by_account["items"]] == ["pat-5"]
    refs = [p["patient_ref"] for p in first["items"] + second["items"]]
    assert refs == ["pat-1", "pat-2", "pat-3", "pat-4", "pat-5", "walk-in"] and second["next_cursor"] is None
    assert changed.status_code == 200 and changed.json()["email"] == "ana@example.com"
    assert [p["id"] for p in inactive["items"]] == [patient_id]
    assert (bad_email.status_code, field_of(bad_email)) == (422, "email")
    assert (bad_cursor.status_code, field_of(bad_cursor)) == (422, "cursor")
    assert unknown.status_code == 404
    assert audit[0]["detail"] == {
        "email": "changed",
        "phone": "changed",
        "active": {"previous": True, "new": False},
    }
    assert "ana@example.com" not in str(audit)


async def test_fixing_an_account_number_shows_the_failed_writebacks_to_retry(
    admin: Api, db: Database, tmp_path: Path
) -> None:
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "pms.db"))
    known = await add_patient(db, admin.practice, admin.connection, "p1", sandbox_patient(pms.office))
    unknown = await add_patient(db, admin.practice, admin.connection, "p2", None)
    await add_transaction(db, admin.practice, "ch_bad", patient=unknown)
    await run_sync(db, admin.connection.id, pms)
    url = f"/v1/patients/{unknown.id}/accounts/{admin.connection.id}"
    async with admin.client() as client:
        failed = (await client.get("/v1/writebacks", params={"status": "failed"})).json()
        taken = await client.put(url, json={"account_number": sandbox_patient(pms.office, "Other")})
        clash = await client.put(
            f"/v1/patients/{known.id}/accounts/{admin.connection.id}", json={"account_number": "x"}
        )
        fixed = await client.put(url, json={"account_number": f"  {sandbox_patient(pms.office, 'Roe')}  "})
        in_use = await client.put(url, json={"account_number": clash.json()["account_number"]})
        empty = await client.put(url, json={"account_number": "   "})
        retried = (
            await client.post("/v1/writebacks/retry", json={"ids": fixed.json()["awaiting_retry_ids"]})
        ).json()
        no_connection = await client.put(
            f"/v1/patients/{unknown.id}/accounts/987654", json={"account_number": "1"}
        )
        removed = await client.delete(f"/v1/patients/{known.id}/accounts/{admin.connection.id}")
        removed_again = await client.delete(f"/v1/patients/{known.id}/accounts/{admin.connection.id}")
        shown = (await client.get(f"/v1/patients/{known.id}")).json()
        actions = await audit_actions(client)
    await pms.close()
    assert [w["error_code"] for w in failed] == ["INVALID_PATIENT_ID"]
    assert taken.status_code == 200 and taken.json()["previous_account_number"] is None
    assert clash.status_code == 200
    body = fixed.json()
    assert body["awaiting_retry"] == 1 and body["awaiting_retry_ids"] == [failed[0]["id"]]
    assert body["previous_account_number"] == taken.json()["account_number"]
    assert body["account_number"] == body["account_number"].strip()
    assert (in_use.status_code, field_of(in_use)) == (409, "account_number")
    assert (empty.status_code, field_of(empty)) == (422, "account_number")
    assert retried == [{"id": failed[0]["id"], "ok": True, "message": "queued for the next sync"}]
    assert no_connection.status_code == 404
    assert removed.status_code == 204 and removed_again.status_code == 404
    assert shown["accounts"] == []
    assert actions.count("patient.account_number") == 3 and "patient.account_number.remove" in actions


def patients_csv(rows: int, bad_row: int) -> bytes:
    """A generic export: `rows` patients, the one at spreadsheet row `bad_row` with an unreadable birth date."""
    lines = ["patient_id,first_name,last_name,birth_date,account_number"]
    for number in range(2, rows + 2):
        birth = "yesterday-ish" if number == bad_row else "1980-02-03"
        lines.append(f"pat-{number},Ana,Ruiz{number},{birth},{10_000 + number}")
    return ("\r\n".join(lines) + "\r\n").encode()


async def wait_until_finished(client: httpx.AsyncClient, import_id: int) -> tuple[dict[str, Any], list[int]]:
    """Poll the import until it is no longer running; returns it and the progress seen on the way."""
    seen: list[int] = []
    for _ in range(600):
        current: dict[str, Any] = (await client.get(f"/v1/patient-imports/{import_id}")).json()
        seen.append(current["rows_done"])
        if current["status"] != "running":
            return current, seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"import {import_id} still running: {current}")


async def test_patient_csv_upload_runs_in_the_background_to_its_results(admin: Api, tmp_path: Path) -> None:
    async with admin.client() as client:
        started = await client.post(
            "/v1/patient-imports",
            params={"connection": admin.connection.id, "filename": "export.csv"},
            content=patients_csv(300, bad_row=120),
            headers={"Content-Type": "text/csv"},
        )
        assert started.status_code == 202, started.text
        import_id = started.json()["id"]
        assert started.headers["location"] == f"/v1/patient-imports/{import_id}"
        finished, progress = await wait_until_finished(client, import_id)
        rejections = (await client.get(f"/v1/patient-imports/{import_id}/rejections")).json()
        recent = (await client.get("/v1/patient-imports")).json()
        found = (await client.get("/v1/patients", params={"search": "ruiz250"})).json()["items"]
        actions = await audit_actions(client)
    assert finished["status"] == "done" and finished["error"] is None
    assert (finished["rows_done"], finished["created"], finished["rejected"]) == (300, 299, 1)
    assert finished["filename"] == "export.csv" and finished["connection_id"] == admin.connection.id
    assert progress == sorted(progress)
    assert rejections["items"] == [
        {"row": 120, "column": "birth_date", "reason": rejections["items"][0]["reason"]}
    ]
    assert "date" in rejections["items"][0]["reason"]
    assert [i["id"] for i in recent["items"]] == [import_id]
    assert [p["accounts"][0]["account_number"] for p in found] == ["10250"]
    assert "patients.import.upload" in actions and "patients.import" in actions
    assert list((tmp_path / "data" / "uploads").iterdir()) == []  # the upload is removed when done


async def test_patient_import_refusals_change_nothing(
    admin: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_type = {"Content-Type": "text/csv"}
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 2000)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for _ in range(10):
            yield b"x" * 500

    async with admin.client() as client:
        answers = {
            "json": await client.post("/v1/patient-imports", json={"rows": []}),
            "empty": await client.post("/v1/patient-imports", content=b"", headers=csv_type),
            "preset": await client.post(
                "/v1/patient-imports", params={"preset": "dentrix"}, content=b"a", headers=csv_type
            ),
            "source": await client.post(
                "/v1/patient-imports",
                params={"account_number_source": "chartnumber"},
                content=b"a",
                headers=csv_type,
            ),
            "connection": await client.post(
                "/v1/patient-imports", params={"connection": 987654}, content=b"a", headers=csv_type
            ),
            "announced": await client.post("/v1/patient-imports", content=b"x" * 2001, headers=csv_type),
            "streamed": await client.post("/v1/patient-imports", content=chunks(), headers=csv_type),
        }
        recent = (await client.get("/v1/patient-imports")).json()
        no_names = await client.post("/v1/patient-imports", content=b"email\r\na@b.c\r\n", headers=csv_type)
        failed, _ = await wait_until_finished(client, no_names.json()["id"])
        missing = await client.get("/v1/patient-imports/987654")
    expected = {
        "json": (415, "Content-Type"),
        "empty": (422, "body"),
        "preset": (422, "preset"),
        "source": (422, "account_number_source"),
        "connection": (404, "connection"),
        "announced": (413, "body"),
        "streamed": (413, "body"),
    }
    assert {name: (a.status_code, field_of(a)) for name, a in answers.items()} == expected
    assert recent["items"] == []
    assert failed["status"] == "failed" and "name column" in failed["error"]
    assert missing.status_code == 404
    assert list((tmp_path / "data" / "uploads").iterdir()) == []


async def test_audit_log_filters_and_pages_newest_first(admin: Api) -> None:
    async with admin.client() as client:
        for number in range(5):
            await client.patch("/v1/practice", json={"name": f"Smile {number}"})
        everything = (await client.get("/v1/audit")).json()["items"]
        first = (await client.get("/v1/audit", params={"action": "practice.update", "limit": 3})).json()
        rest = (
            await client.get(
                "/v1/audit", params={"action": "practice.update", "limit": 3, "cursor": first["next_cursor"]}
            )
        ).json()
        since = everything[1]["at"]
        recent = (await client.get("/v1/audit", params={"since": since})).json()["items"]
        before = (await client.get("/v1/audit", params={"until": since})).json()["items"]
        bad_since = await client.get("/v1/audit", params={"since": "last tuesday"})
        backwards = await client.get("/v1/audit", params={"since": "2026-02-01", "until": "2026-01-01"})
    names = [e["detail"]["name"]["new"] for e in first["items"] + rest["items"]]
    assert names == ["Smile 4", "Smile 3", "Smile 2", "Smile 1", "Smile 0"] and rest["next_cursor"] is None
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    assert {e["id"] for e in recent} >= {everything[0]["id"], everything[1]["id"]}
    assert everything[1]["id"] not in {e["id"] for e in before}
    assert {"practice.create", "connection.add"} <= {e["action"] for e in everything}
    assert (bad_since.status_code, field_of(bad_since)) == (422, "since")
    assert (backwards.status_code, field_of(backwards)) == (422, "until")


async def test_connection_change_reaches_the_store(admin: Api, db: Database) -> None:
    async with admin.client() as client:
        await client.patch(f"/v1/connections/{admin.connection.id}", json={"name": "front-desk"})
    async with db.sessions() as session:
        names = list(
            await session.scalars(select(Connection.name).where(Connection.practice_id == admin.practice.id))
        )
    assert names == ["front-desk"]


async def test_suggested_matches_come_from_the_pms_best_first(
    admin: Api, db: Database, tmp_path: Path
) -> None:
    born = date(1980, 2, 3)
    pms = SandboxConnector(SandboxSettings(path=tmp_path / "data" / "sandbox" / "sandbox.db"))
    exact = str(pms.office.add_patient("Ruiz", "Test", birthdate=born))
    nickname = str(pms.office.add_patient("Ruiz", "Tess", birthdate=born))
    other_birth = str(pms.office.add_patient("Ruiz", "Test", birthdate=date(1990, 1, 1)))
    pms.office.add_patient("Stone", "Test", birthdate=born)
    await pms.close()
    patient = await add_patient(db, admin.practice, admin.connection, "ruiz", "999")
    holder = await add_patient(db, admin.practice, admin.connection, "holder", nickname)
    async with db.sessions.begin() as session:
        await session.execute(update(Patient).where(Patient.id == patient.id).values(birth_date=born))
    url = f"/v1/patients/{patient.id}/suggestions"
    async with admin.client() as client:
        answer = await client.get(url, params={"connection_id": admin.connection.id})
        no_connection = await client.get(url)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["patient_id"], body["connection_id"], body["account_number"]) == (
        patient.id,
        admin.connection.id,
        "999",
    )
    shown = [(s["account_number"], s["match_quality"], s["taken_by"]) for s in body["suggestions"]]
    assert shown == [
        (exact, "name_and_birth_date", None),
        (other_birth, "name_only", None),
        (nickname, "last_name_and_birth_date", holder.patient_ref),
    ]
    assert body["suggestions"][0] == {
        "account_number": exact,
        "pms_id": exact,
        "first_name": "Test",
        "last_name": "Ruiz",
        "birth_date": "1980-02-03",
        "match_quality": "name_and_birth_date",
        "match": "Name and date of birth match",
        "taken_by": None,
    }
    assert (no_connection.status_code, field_of(no_connection)) == (422, "connection_id")


async def test_suggestions_say_clearly_when_the_pms_cannot_be_asked(admin: Api, db: Database) -> None:
    patient = await add_patient(db, admin.practice, admin.connection, "ruiz")
    async with db.sessions.begin() as session:
        practice = await session.get_one(Practice, admin.practice.id)
        pull = await add_connection(session, practice, name="downloads", kind="pull")
        broken = await add_connection(session, practice, name="broken", kind="sandbox")
        await session.execute(
            update(Connection).where(Connection.id == broken.id).values(settings={"no_such_setting": 1})
        )
        await session.execute(
            update(Connection)
            .where(Connection.id == admin.connection.id)
            .values(settings={"failure_rate": 1.0})  # every call to the sandbox PMS fails
        )
    url = f"/v1/patients/{patient.id}/suggestions"
    async with admin.client() as client:
        down = await client.get(url, params={"connection_id": admin.connection.id})
        pulled = await client.get(url, params={"connection_id": pull.id})
        misconfigured = await client.get(url, params={"connection_id": broken.id})
    assert down.status_code == 503 and down.json()["error"]["code"] == "pms_unavailable"
    assert "could not be asked" in down.json()["error"]["message"]
    assert (pulled.status_code, pulled.json()["error"]["code"]) == (409, "pull_connection")
    assert (misconfigured.status_code, misconfigured.json()["error"]["code"]) == (409, "connection_settings")
    assert "bad sandbox settings" in misconfigured.json()["error"]["message"]


async def test_suggestions_of_another_practice_are_404(admin: Api, db: Database) -> None:
    other, theirs = await make_practice(db, slug="grin")
    stranger = await add_patient(db, other, theirs, "ruiz", "1")
    mine = await add_patient(db, admin.practice, admin.connection, "ruiz", "2")
    async with admin.client() as client:
        their_patient = await client.get(
            f"/v1/patients/{stranger.id}/suggestions", params={"connection_id": admin.connection.id}
        )
        missing_patient = await client.get(
            "/v1/patients/987654/suggestions", params={"connection_id": admin.connection.id}
        )
        their_connection = await client.get(
            f"/v1/patients/{mine.id}/suggestions", params={"connection_id": theirs.id}
        )
    assert their_patient.status_code == missing_patient.status_code == their_connection.status_code == 404
    assert their_patient.text.replace(str(stranger.id), "N") == missing_patient.text.replace("987654", "N")
    assert field_of(their_connection) == "connection_id" and "grin" not in their_connection.text
