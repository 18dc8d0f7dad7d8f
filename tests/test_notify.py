"""Alert digests out of the PMS, against real peers on loopback: an aiosmtpd SMTP server collecting the mail
and a webhook receiver served by uvicorn that records each request and can be told to fail. The alerts come
from real syncs that fail against the sandbox PMS, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography.fernet import Fernet
from fastapi import FastAPI, Request, Response
from sqlalchemy import select
from typer.testing import CliRunner

from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.engine.sync import run_sync
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.notify.digest import send_digests
from ledgerlink.notify.targets import add_target
from ledgerlink.notify.webhooks import sign, verify_signature
from ledgerlink.secrets import SecretBox
from ledgerlink.serving import running_app
from ledgerlink.settings import Settings, get_settings
from ledgerlink.store.db import Database
from ledgerlink.store.models import (
    Alert,
    AuditEntry,
    Connection,
    NotificationTarget,
    Patient,
    PatientAccount,
    Practice,
)
from tests.conftest import make_practice
from tests.factories import add_transaction

# --- the peers ---------------------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler keeping every message it is given; `delay_s` holds each one up a moment."""

    messages: list[EmailMessage] = field(default_factory=list)
    delay_s: float = 0.0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


@dataclass
class Smtp:
    port: int
    mailbox: Mailbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Smtp(port, mailbox)
    finally:
        controller.stop()


class Receiver:
    """A webhook receiver: records (headers, raw body) of each request; answers `status` (200 by default)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self.url = ""
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            self.requests.append((dict(request.headers), await request.body()))
            retry = {"Retry-After": "0"} if self.status >= 500 else None  # no need to wait in tests
            return Response(status_code=self.status, headers=retry)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hooks = Receiver()
    with running_app(hooks.app) as url:
        hooks.url = f"{url}/hook?token=abc"
        yield hooks


@pytest.fixture(autouse=True)
def sealing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The installation key (instead of a secret.key in the user's data directory)."""
    monkeypatch.setenv("LEDGERLINK_SECRET_KEY", Fernet.generate_key().decode())


def mail_settings(tmp_path: Path, smtp: Smtp | None) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        smtp_host="127.0.0.1" if smtp else None,
        smtp_port=smtp.port if smtp else 25,
        smtp_from="ledgerlink@smile.example",
        dashboard_url="https://ledgerlink.smile.example/",
    )


# --- alerts from real failing syncs ------------------------------------------------------------------------


@dataclass
class Failures:
    practice: Practice
    writeback_ids: set[int]
    names: list[str]


async def named_patient(
    db: Database, practice: Practice, connection_id: int, ref: str, first: str, last: str, account: str | None
) -> Patient:
    async with db.sessions.begin() as session:
        patient = Patient(practice_id=practice.id, patient_ref=ref, first_name=first, last_name=last)
        session.add(patient)
        await session.flush()
        if account is not None:
            session.add(
                PatientAccount(patient_id=patient.id, connection_id=connection_id, account_number=account)
            )
    return patient


async def failing_sync(
    db: Database, tmp_path: Path, slug: str, patients: list[tuple[str, str, str, str | None]]
) -> Failures:
    """A practice whose sync fails one sale per patient (no account number, or one the PMS does not know)."""
    async with db.sessions() as session:
        practice = await session.scalar(select(Practice).where(Practice.slug == slug))
    if practice is None:
        practice, _ = await make_practice(db, slug=slug)
    connection_id = await _connection_id(db, practice)
    pms = SandboxConnector(SandboxSettings(path=tmp_path / f"{slug}-pms.db"))
    before = await alert_ids(db, practice)
    for ref, first, last, account in patients:
        patient = await named_patient(db, practice, connection_id, ref, first, last, account)
        await add_transaction(db, practice, f"ch_{ref}", patient=patient)
    await run_sync(db, connection_id, pms)
    await pms.close()
    async with db.sessions() as session:
        rows = await session.execute(
            select(Alert.id, Alert.writeback_id).where(Alert.practice_id == practice.id)
        )
        ids = {wid for aid, wid in rows if aid not in before}
    assert len(ids) == len(patients), "every sale should have failed with an alert"
    return Failures(practice, ids, [n for _, first, last, _ in patients for n in (first, last)])


async def _connection_id(db: Database, practice: Practice) -> int:
    async with db.sessions() as session:
        found = await session.scalar(select(Connection.id).where(Connection.practice_id == practice.id))
    assert found is not None
    return int(found)


async def alert_ids(db: Database, practice: Practice) -> set[int]:
    async with db.sessions() as session:
        return set(await session.scalars(select(Alert.id).where(Alert.practice_id == practice.id)))


async def unsent(db: Database) -> int:
    async with db.sessions() as session:
        return len((await session.scalars(select(Alert.id).where(Alert.notified_at.is_(None)))).all())


async def targets(db: Database, settings: Settings, practice: Practice, *addresses: str) -> str | None:
    """Add e-mail and webhook targets; returns the webhook's signing secret (if one was added)."""
    box = SecretBox.for_data_dir(settings.data_dir)
    secret = None
    async with db.sessions.begin() as session:
        for address in addresses:
            kind = "webhook" if address.startswith("http") else "email"
            added = await add_target(session, practice, kind, address, box=box, actor="test")
            secret = added.secret or secret
    return secret


def text_of(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    return str(plain.get_content()), str(html.get_content())


def writebacks_in(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"^Writeback (\d+) on ", text, flags=re.MULTILINE)}


# --- digests -----------------------------------------------------------------------------------------------


async def test_digest_goes_to_every_target_with_its_practices_alerts_only_and_no_patient_names(
    db: Database, tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    settings = mail_settings(tmp_path, smtp)
    smile = await failing_sync(
        db,
        tmp_path,
        "smile",
        [("p-1", "Zebediah", "Quackenbush", None), ("p-2", "Philomena", "Thistlewaite", "999999")],
    )
    other = await failing_sync(db, tmp_path, "other", [("q-1", "Bartholomew", "Fennimore", None)])
    secret = await targets(db, settings, smile.practice, "office@smile.example", receiver.url)
    await targets(db, settings, other.practice, "desk@other.example")
    assert secret is not None

    summary = await send_digests(db, settings)

    assert summary.failures == [] and summary.errors == [] and summary.alerts_notified == 3
    [mail] = smtp.mailbox.to("office@smile.example")
    plain, html = text_of(mail)
    assert writebacks_in(plain) == smile.writeback_ids
    assert "INVALID_PATIENT_ID: 2" in plain and "2 payments need attention at Smile" in mail["Subject"]
    assert "Patient ref p-1, PMS account number (none)" in plain and "999999" in plain
    assert "https://ledgerlink.smile.example/writebacks?status=failed" in plain
    assert "$97.00" in plain and "$97.00" in html and "/writebacks?status=failed" in html
    [(headers, body)] = receiver.requests
    assert verify_signature(secret, headers["ledgerlink-signature"], body)
    payload = json.loads(body)
    assert payload["id"] == headers["ledgerlink-event-id"] and payload["type"] == "alerts.digest"
    assert {a["writeback_id"] for a in payload["alerts"]} == smile.writeback_ids
    assert payload["counts"] == {"INVALID_PATIENT_ID": 2} and payload["practice"]["id"] == "smile"
    assert {a["amount_cents"] for a in payload["alerts"]} == {9700}
    for name in smile.names + other.names:
        assert name.lower() not in (plain + html + str(mail["Subject"])).lower()
        assert name.lower() not in body.decode().lower()
    [theirs] = smtp.mailbox.to("desk@other.example")
    assert writebacks_in(text_of(theirs)[0]) == other.writeback_ids
    assert await unsent(db) == 0

    nothing_new = await send_digests(db, settings)
    assert nothing_new.digests == [] and len(smtp.mailbox.messages) == 2 and len(receiver.requests) == 1

    later = await failing_sync(db, tmp_path, "smile", [("p-3", "Ignatius", "Wobblesworth", None)])
    await send_digests(db, settings)
    [_, second] = smtp.mailbox.to("office@smile.example")
    assert writebacks_in(text_of(second)[0]) == later.writeback_ids  # only the alert raised since
    assert len(receiver.requests) == 2 and receiver.payloads()[1]["id"] != payload["id"]


async def test_a_failing_webhook_keeps_the_alerts_for_the_next_digest_and_email_still_gets_its_copy(
    db: Database, tmp_path: Path, smtp: Smtp, receiver: Receiver
) -> None:
    settings = mail_settings(tmp_path, smtp)
    smile = await failing_sync(db, tmp_path, "smile", [("p-1", "Zebediah", "Quackenbush", None)])
    secret = await targets(db, settings, smile.practice, "office@smile.example", receiver.url)
    assert secret is not None
    receiver.status = 503

    failed = await send_digests(db, settings)

    assert len(receiver.requests) == 3  # three tries within the one send
    assert len({h["ledgerlink-event-id"] for h, _ in receiver.requests}) == 1  # one delivery, retried
    assert all(verify_signature(secret, h["ledgerlink-signature"], b) for h, b in receiver.requests)
    [(practice, failure)] = failed.failures
    assert practice == "smile" and failure.kind == "webhook" and "503" in failure.detail
    assert "token=abc" not in failure.detail and "token=abc" not in "\n".join(failed.lines())
    assert len(smtp.mailbox.to("office@smile.example")) == 1  # the e-mail target got its copy
    assert await unsent(db) == 1 and failed.alerts_notified == 0

    receiver.status = 200
    healed = await send_digests(db, settings)

    assert healed.failures == [] and healed.alerts_notified == 1 and await unsent(db) == 0
    mails = smtp.mailbox.to("office@smile.example")
    assert [writebacks_in(text_of(m)[0]) for m in mails] == [smile.writeback_ids] * 2  # re-sent to all
    assert receiver.requests[-1][0]["ledgerlink-event-id"] != receiver.requests[0][0]["ledgerlink-event-id"]


async def test_a_receiver_refusing_with_4xx_is_reported_without_retries(
    db: Database, tmp_path: Path, receiver: Receiver
) -> None:
    settings = mail_settings(tmp_path, None)
    smile = await failing_sync(db, tmp_path, "smile", [("p-1", "Zebediah", "Quackenbush", None)])
    await targets(db, settings, smile.practice, receiver.url)
    receiver.status = 410

    summary = await send_digests(db, settings)

    assert len(receiver.requests) == 1
    [(_, failure)] = summary.failures
    assert "410" in failure.detail and await unsent(db) == 1


async def test_email_without_an_smtp_host_is_reported_as_not_configured(db: Database, tmp_path: Path) -> None:
    settings = mail_settings(tmp_path, None)
    smile = await failing_sync(db, tmp_path, "smile", [("p-1", "Zebediah", "Quackenbush", None)])
    await targets(db, settings, smile.practice, "office@smile.example")

    summary = await send_digests(db, settings)

    [(_, failure)] = summary.failures
    assert "not configured" in failure.detail and "LEDGERLINK_SMTP_HOST" in failure.detail
    assert await unsent(db) == 1


async def test_two_senders_at_once_mail_each_alert_once(db: Database, tmp_path: Path, smtp: Smtp) -> None:
    settings = mail_settings(tmp_path, smtp)
    expected: set[int] = set()
    for slug in ("smile", "bright", "river"):
        practice = await failing_sync(
            db, tmp_path, slug, [(f"{slug}-1", "Ann", "Xylo", None), (f"{slug}-2", "Bo", "Yarrow", None)]
        )
        await targets(db, settings, practice.practice, f"office@{slug}.example")
        expected |= practice.writeback_ids
    smtp.mailbox.delay_s = 0.3  # each send takes a while, so the two senders overlap
    second_process = await Database.open(db.url)
    try:
        first, second = await asyncio.gather(
            send_digests(db, settings), send_digests(second_process, settings)
        )
    finally:
        await second_process.close()

    mailed = [wid for m in smtp.mailbox.messages for wid in writebacks_in(text_of(m)[0])]
    assert sorted(mailed) == sorted(expected)  # every alert, each once
    assert first.alerts_notified + second.alerts_notified == 6 and await unsent(db) == 0
    assert first.skipped or second.skipped  # one of them found work already claimed


# --- signatures --------------------------------------------------------------------------------------------


def test_signatures_verify_and_fail_when_tampered_stale_or_signed_with_another_secret() -> None:
    secret, body, t = "llwh_secret", b'{"type":"alerts.digest","alerts":[]}', 1_764_601_445
    header = sign(secret, body, t)
    assert re.fullmatch(r"t=1764601445,v1=[0-9a-f]{64}", header)
    assert verify_signature(secret, header, body, now=t + 10)
    assert verify_signature(secret, header, body.decode(), now=t)  # text bodies are checked as UTF-8
    assert not verify_signature(secret, header, body.replace(b"[]", b"[1]"), now=t)  # tampered body
    assert not verify_signature(secret, header.replace("t=1764601445", "t=1764601446"), body, now=t)
    assert not verify_signature("llwh_other", header, body, now=t)
    assert not verify_signature(secret, header, body, tolerance=300, now=t + 301)  # stale: a replay
    assert not verify_signature(secret, header, body, tolerance=300, now=t - 301)  # from a clock far ahead
    assert not verify_signature(secret, "v1=" + header.split("v1=")[1], body, now=t)  # no timestamp
    assert not verify_signature(secret, "garbage", body, now=t)
    rotated = f"t={t},v1={'0' * 64},v1={header.split('v1=')[1]}"
    assert verify_signature(secret, rotated, body, now=t)  # one matching v1 is enough


# --- targets -----------------------------------------------------------------------------------------------


async def test_targets_are_checked_audited_and_webhook_secrets_sealed(db: Database, tmp_path: Path) -> None:
    practice, _ = await make_practice(db)
    box = SecretBox.for_data_dir(tmp_path / "data")
    async with db.sessions.begin() as session:
        webhook = await add_target(
            session, practice, "webhook", " https://hooks.example.com/ll ", box=box, actor="t"
        )
        await add_target(session, practice, "email", "office@smile.example", box=box, actor="t")
    for kind, address in [
        ("email", "Front Desk <office@smile.example>"),
        ("email", "office@smile.example\nBcc: all@example.com"),
        ("email", "a@b.example, c@d.example"),
        ("webhook", "ftp://hooks.example.com/"),
        ("webhook", "hooks.example.com/ll"),
        ("webhook", "https://user:pw@hooks.example.com/"),
        ("sms", "+15555550100"),
    ]:
        with pytest.raises(InvalidInput):
            async with db.sessions.begin() as session:
                await add_target(session, practice, kind, address, box=box, actor="t")
    with pytest.raises(Conflict):
        async with db.sessions.begin() as session:
            await add_target(session, practice, "email", "office@smile.example", box=box, actor="t")
    async with db.sessions() as session:
        stored = list(await session.scalars(select(NotificationTarget).order_by(NotificationTarget.id)))
        actions = list(
            await session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("notif%")))
        )
    assert [t.address for t in stored] == ["https://hooks.example.com/ll", "office@smile.example"]
    assert webhook.secret and webhook.secret.startswith("llwh_") and stored[0].secret_sealed
    assert (
        webhook.secret not in stored[0].secret_sealed and box.open(stored[0].secret_sealed) == webhook.secret
    )
    assert actions == ["notification_target.added"] * 2


# --- the CLI -----------------------------------------------------------------------------------------------


def test_cli_adds_lists_tests_sends_and_removes_targets(
    tmp_path: Path, smtp: Smtp, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledgerlink.cli.app import app as cli_app

    monkeypatch.setenv("LEDGERLINK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("LEDGERLINK_DATABASE_URL", raising=False)
    monkeypatch.setenv("LEDGERLINK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("LEDGERLINK_SMTP_PORT", str(smtp.port))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli_app, ["practice", "create", "smile"]).exit_code == 0
        email = runner.invoke(cli_app, ["notify", "add-email", "office@smile.example", "-p", "smile"])
        assert email.exit_code == 0, email.output
        hook = runner.invoke(cli_app, ["notify", "add-webhook", "https://hooks.example.com/ll"])
        assert hook.exit_code == 0 and re.search(r"^llwh_\S+$", hook.stdout, flags=re.MULTILINE)
        bad = runner.invoke(cli_app, ["notify", "add-webhook", "not a url"])
        assert bad.exit_code == 2 and "http" in bad.output
        listed = runner.invoke(cli_app, ["notify", "list"])
        assert listed.exit_code == 0 and "llwh_" not in listed.output
        assert [line.split()[:2] for line in listed.stdout.strip().splitlines()] == [
            ["1", "email"],
            ["2", "webhook"],
        ]
        tested = runner.invoke(cli_app, ["notify", "test", "1"])
        assert tested.exit_code == 0, tested.output
        assert "test message" in str(smtp.mailbox.messages[0]["Subject"])
        sent = runner.invoke(cli_app, ["notify", "send", "--practice", "smile"])
        assert sent.exit_code == 0 and "no new alerts" in sent.output
        assert runner.invoke(cli_app, ["notify", "remove", "2"]).exit_code == 0
        missing = runner.invoke(cli_app, ["notify", "remove", "2"])
        assert missing.exit_code == 3 and "no notification target 2" in missing.output
    finally:
        get_settings.cache_clear()


async def test_a_patient_name_a_pms_put_into_its_error_is_blanked_out(
    db: Database, tmp_path: Path, smtp: Smtp
) -> None:
    settings = mail_settings(tmp_path, smtp)
    smile = await failing_sync(db, tmp_path, "smile", [("p-1", "Zebediah", "Quackenbush", "999999")])
    async with db.sessions.begin() as session:
        alert = await session.scalar(select(Alert))
        assert alert is not None
        alert.message = "sale ch_p-1: Patient QUACKENBUSH, Zebediah (999999) is archived"  # as a PMS may say
    await targets(db, settings, smile.practice, "office@smile.example")

    await send_digests(db, settings)

    plain, html = text_of(smtp.mailbox.messages[0])
    assert "Patient [patient], [patient] (999999) is archived" in plain
    assert "quackenbush" not in (plain + html).lower() and "zebediah" not in (plain + html).lower()
