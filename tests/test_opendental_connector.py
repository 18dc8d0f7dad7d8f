"""The Open Dental connector: parsing, pacing, retries, settings and secrets over a real loopback HTTP server,
then every ledger rule end to end through the real engine against the Open Dental API peer.

The first half uses `Loopback`, a raw HTTP/1.1 server on 127.0.0.1 that records when each request arrived
and answers from a script (it can also drop a connection after reading a request, which a framework would
not let a test do). The second half runs the peer (`ledgerlink.opendental.peer`), Open Dental's API over an
`OpenDentalOffice` on SQLite and MariaDB.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from ledgerlink.connectors.base import (
    PaymentEntry,
    PmsAlert,
    PmsOutcomeUnknown,
    PmsRejected,
    PmsUnavailable,
    PmsWrite,
    ReversalEntry,
)
from ledgerlink.connectors.opendental import OpenDentalConnector, OpenDentalSettings, seal_settings
from ledgerlink.connectors.opendental.client import (
    OdParseError,
    OpenDentalClient,
    as_bool,
    as_cents,
    as_date,
    as_int,
    dollars,
    read_json,
)
from ledgerlink.connectors.registry import open_connector, settings_to_store
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.report import ReportCategory, SyncReport
from ledgerlink.engine.sync import idempotency_key, run_sync
from ledgerlink.errors import InvalidInput
from ledgerlink.opendental.office import OdPayment, OpenDentalOffice
from ledgerlink.opendental.peer import ApiKey, Faults, PeerConfig
from ledgerlink.opendental.peer.server import running_peer
from ledgerlink.practices import add_connection, create_practice
from ledgerlink.secrets import SecretBox
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection, Patient, Practice, Transaction, Writeback
from tests.factories import add_patient, add_transaction

DAY = date(2026, 3, 10)

# --- a loopback HTTP server ---------------------------------------------------------------------------------


@dataclass
class Request:
    arrived: float  # time.monotonic() when the request head had been read
    method: str
    path: str  # with the query string
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


DROP = Reply(status=0)  # read the request, then close the connection without answering

Script = Callable[[Request], Reply]


class Loopback:
    """An HTTP/1.1 server on loopback that records each request and answers it from `script`."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/api/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                arrived = time.monotonic()
                line, *header_lines = head.decode().split("\r\n")
                method, path, _ = line.split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (h.split(":", 1) for h in header_lines if ":" in h)
                }
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(arrived, method, path, headers, json.loads(raw) if raw else None)
                self.requests.append(request)
                reply = self.script(request)
                if reply is DROP:
                    writer.close()
                    return
                payload = json.dumps(reply.body).encode() if reply.body is not None else b""
                extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
                writer.write(
                    f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n{extra}\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


def replies(*sequence: Reply, then: Reply | None = None) -> Script:
    """A script answering with `sequence` in order, then `then` (default: 200 with an empty object)."""
    queue = list(sequence)
    last = then or Reply(200, {})

    def script(_: Request) -> Reply:
        return queue.pop(0) if queue else last

    return script


@pytest.fixture
async def loopback() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[Loopback] = []

    async def start(script: Script) -> Loopback:
        server = Loopback(script)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def settings(url: str, **overrides: Any) -> OpenDentalSettings:
    values: dict[str, Any] = {
        "base_url": url,
        "developer_key": "dev-key",
        "customer_key": "cust-key",
        "requests_per_second": 50,
    }
    return OpenDentalSettings.model_validate(values | overrides)


def client(url: str, *, rps: float = 50, customer_key: str = "cust-key", **kw: Any) -> OpenDentalClient:
    return OpenDentalClient(url, "dev-key", customer_key, requests_per_second=rps, timeout_s=5, **kw)


def payment_row(
    pay_num: int, pat_num: int, amount: str, note: str = "", pay_type: int = 71
) -> dict[str, Any]:
    """A payment as Open Dental lists it: PayAmt and ClinicNum as strings, the numbers as numbers."""
    return {
        "PayNum": pay_num,
        "PayType": pay_type,
        "PayDate": "2026-03-10",
        "PayAmt": amount,
        "PayNote": note,
        "PatNum": pat_num,
        "ClinicNum": "0",
        "DateEntry": "2026-03-10",
        "IsRecurringCC": "false",
        "PaymentSource": "API",
    }


def gaps(requests: list[Request]) -> list[float]:
    times = sorted(r.arrived for r in requests)
    return [b - a for a, b in pairwise(times)]


# --- parsing ----------------------------------------------------------------------------------------------


def test_money_from_open_dental_is_read_as_exact_cents_whatever_its_json_shape() -> None:
    assert as_cents("339") == 33900
    assert as_cents("-129.99") == -12999
    assert as_cents(read_json('{"AdjAmt": -25.0}')["AdjAmt"]) == -2500
    assert as_cents(12) == 1200
    assert as_cents(Decimal("0.10")) == 10
    assert dollars(9700) == "97.00" and dollars(-5) == "-0.05"


@pytest.mark.parametrize("bad", ["1.005", "abc", "", True, "NaN", None])
def test_money_with_more_than_two_places_or_not_a_number_is_refused(bad: Any) -> None:
    with pytest.raises(OdParseError):
        as_cents(bad)


def test_numbers_booleans_and_dates_are_read_from_strings_or_json_values() -> None:
    assert as_int("42") == as_int(42) == as_int(Decimal("42")) == 42
    assert as_int("-3") == -3
    assert as_bool("true") is True and as_bool("False") is False and as_bool(0) is False
    assert as_date("2022-06-24") == date(2022, 6, 24)
    assert as_date("2022-06-24 11:55:44") == date(2022, 6, 24)
    assert as_date("0001-01-01") is None
    for bad_int in ("4.5", "--5", True, None):
        with pytest.raises(OdParseError):
            as_int(bad_int)
    with pytest.raises(OdParseError):
        as_bool("maybe")


def test_json_decimals_never_become_floats() -> None:
    body = read_json('{"PayAmt": 0.1, "PayNum": 3}')
    assert body == {"PayAmt": Decimal("0.1"), "PayNum": 3}


# --- settings and secrets -----------------------------------------------------------------------------------


def test_settings_have_safe_defaults_and_refuse_unknown_keys() -> None:
    s = OpenDentalSettings.model_validate({"developer_key": "d", "customer_key": "c"})
    assert s.base_url == "https://api.opendental.com/api/v1"
    assert (s.requests_per_second, s.account_number, s.partial_refunds) == (1.0, "patnum", "negative_payment")
    assert s.payment_type_names["terminal"] == "Credit Card"
    assert s.is_patient_preferred is False and s.unsafe_direct_db is False
    with pytest.raises(ValueError, match="extra"):
        OpenDentalSettings.model_validate({"developer_key": "d", "customer_key": "c", "colour": "red"})


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ({"base_url": "ftp://x"}, "http"),
        ({"requests_per_second": 0}, "greater than 0"),
        ({"payment_type_names": {"cash": "Cash"}}, "unknown payment types"),
        ({"payment_type_names": {"terminal": " "}}, "empty"),
        ({"account_number": "ssn"}, "patnum"),
        ({"partial_refunds": "adjustment"}, "negative_payment"),
        ({"customer_key": ""}, "at least 1"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(
    tmp_path: Path, override: dict[str, Any], problem: str
) -> None:
    raw = {"developer_key": "d", "customer_key": "c"} | override
    with pytest.raises(InvalidInput, match=problem) as refused:
        open_connector("opendental", raw, tmp_path)
    assert next(iter(override)) in refused.value.message


def test_the_direct_database_mode_is_refused_until_it_exists(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unsafe_direct_db"):
        open_connector(
            "opendental", {"developer_key": "d", "customer_key": "c", "unsafe_direct_db": True}, tmp_path
        )


def test_keys_never_show_in_a_repr_or_an_error() -> None:
    s = OpenDentalSettings.model_validate({"developer_key": "DEV-SECRET", "customer_key": "CUST-SECRET"})
    shown = repr(s) + str(s) + repr(client("http://x", customer_key="CUST-SECRET"))
    assert "SECRET" not in shown
    with pytest.raises(ValueError) as refused:
        OpenDentalSettings.model_validate({"developer_key": "DEV-SECRET", "customer_key": 5})
    assert "DEV-SECRET" not in str(refused.value)


async def test_sealed_keys_are_stored_sealed_and_opened_into_the_authorization_header(
    tmp_path: Path, loopback: Callable[[Script], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGERLINK_SECRET_KEY", raising=False)
    server = await loopback(replies(then=Reply(200, [])))
    stored = settings_to_store(
        "opendental", {"base_url": server.url, "developer_key": " dev1 ", "customer_key": "cust1"}, tmp_path
    )
    assert SecretBox.is_sealed(stored["developer_key"]) and SecretBox.is_sealed(stored["customer_key"])
    assert "dev1" not in json.dumps(stored) and "cust1" not in json.dumps(stored)

    connector = open_connector("opendental", stored, tmp_path)
    assert await connector.find_patient("C-1") is None  # patnum mode: not a number, no request
    assert await connector.find_patient("5") is None
    await connector.close()
    assert server.requests[0].headers["authorization"] == "ODFHIR dev1/cust1"
    assert server.requests[0].path == "/api/v1/patients/5"


def test_a_key_sealed_by_another_installation_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGERLINK_SECRET_KEY", raising=False)
    sealed = seal_settings(
        {"developer_key": "d", "customer_key": "c"}, SecretBox.for_data_dir(tmp_path / "a")
    )
    with pytest.raises(InvalidInput, match="cannot be opened"):
        open_connector("opendental", sealed, tmp_path / "b")


# --- pacing -------------------------------------------------------------------------------------------------


async def test_every_request_of_a_key_leaves_at_least_one_interval_after_the_previous(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(replies(then=Reply(200, [])))
    first, second = client(server.url, rps=20), client(server.url, rps=20)  # two connectors, one key
    started = time.monotonic()
    await asyncio.gather(
        *(first.get("patients/1") for _ in range(3)),
        *(second.post("tasks", {"Descript": "x"}) for _ in range(2)),
        second.put("payments/1", {"PayNote": "n"}),
    )
    elapsed = time.monotonic() - started
    assert len(server.requests) == 6
    assert min(gaps(server.requests)) >= 0.05 - 0.002
    assert elapsed < 6 * 0.05 + 0.2  # spaced, not slowed further
    await first.close()
    await second.close()


async def test_keys_are_paced_independently(loopback: Callable[[Script], Any]) -> None:
    server = await loopback(replies(then=Reply(200, [])))
    office_a, office_b = (
        client(server.url, rps=4, customer_key="a"),
        client(server.url, rps=4, customer_key="b"),
    )
    started = time.monotonic()
    await asyncio.gather(*(c.get("definitions") for c in (office_a, office_b, office_a, office_b)))
    assert time.monotonic() - started < 0.25 + 0.15  # one interval, not three
    by_key: dict[str, list[Request]] = {}
    for r in server.requests:
        by_key.setdefault(r.headers["authorization"], []).append(r)
    assert all(min(gaps(rs)) >= 0.25 - 0.002 for rs in by_key.values())
    await office_a.close()
    await office_b.close()


async def test_a_429_is_retried_after_its_retry_after_and_never_faster_than_the_rate(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(
        replies(Reply(429, "slow down", {"Retry-After": "0.3"}), then=Reply(201, {"ok": 1}))
    )
    od = client(server.url, rps=20)
    assert await od.post("payments", {"PayAmt": "1.00"}) == {"ok": 1}
    assert len(server.requests) == 2
    assert gaps(server.requests)[0] >= 0.3
    await od.close()


async def test_throttling_longer_than_the_retry_budget_is_unavailable_with_its_retry_after(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(replies(then=Reply(429, "slow down", {"Retry-After": "60"})))
    od = client(server.url)
    with pytest.raises(PmsUnavailable) as unavailable:
        await od.post("payments", {"PayAmt": "1.00"})
    assert unavailable.value.retry_after == 60
    assert len(server.requests) == 1
    await od.close()


async def test_a_503_before_processing_is_retried_even_for_a_post(loopback: Callable[[Script], Any]) -> None:
    server = await loopback(replies(Reply(503, "busy"), then=Reply(201, {"PayNum": 1})))
    od = client(server.url)
    assert await od.post("payments", {}) == {"PayNum": 1}
    assert len(server.requests) == 2
    await od.close()


@pytest.mark.parametrize(
    "failure", [DROP, Reply(500, "boom"), Reply(502, "bad gateway"), Reply(504, "timeout")]
)
async def test_a_post_that_may_have_been_applied_is_outcome_unknown_and_never_resent(
    loopback: Callable[[Script], Any], failure: Reply
) -> None:
    server = await loopback(replies(failure))
    od = client(server.url)
    with pytest.raises(PmsOutcomeUnknown):
        await od.post("payments", {"PayAmt": "1.00"})
    assert len(server.requests) == 1
    await od.close()


async def test_a_post_that_times_out_after_sending_is_outcome_unknown(
    loopback: Callable[[Script], Any],
) -> None:
    async def never(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"
    od = OpenDentalClient(url, "d", "c", requests_per_second=50, timeout_s=0.2)
    with pytest.raises(PmsOutcomeUnknown):
        await od.post("payments", {"PayAmt": "1.00"})
    await od.close()
    server.close()


@pytest.mark.parametrize("failure", [DROP, Reply(500, "boom"), Reply(503, "busy")])
async def test_lookups_and_note_updates_are_retried_after_any_failure(
    loopback: Callable[[Script], Any], failure: Reply
) -> None:
    server = await loopback(replies(failure, failure, then=Reply(200, [])))
    od = client(server.url)
    assert await od.get("payments", {"PatNum": 1}) == []
    assert await od.put("payments/3", {"PayNote": "x"}) == []
    assert len(server.requests) == 4
    await od.close()


async def test_a_refused_connection_is_unavailable_not_unknown() -> None:
    od = OpenDentalClient(
        "http://127.0.0.1:9/api/v1", "d", "c", requests_per_second=50, timeout_s=1, retry_budget_s=0.1
    )
    with pytest.raises(PmsUnavailable):
        await od.post("payments", {"PayAmt": "1.00"})
    await od.close()


async def test_refused_api_keys_are_a_configuration_error(loopback: Callable[[Script], Any]) -> None:
    server = await loopback(replies(then=Reply(401, "Invalid Authorization header")))
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_payments([_payment("ll-wb-1", "5")])
    assert isinstance(result, PmsRejected) and result.code is LoadErrorCode.PMS_CONFIGURATION
    assert "API keys" in result.message
    await connector.close()


async def test_a_long_list_is_read_page_by_page(loopback: Callable[[Script], Any]) -> None:
    def pages(request: Request) -> Reply:
        offset = int(request.path.split("Offset=")[1].split("&")[0]) if "Offset=" in request.path else 0
        rows = [payment_row(n, 7, "1.00") for n in range(offset, min(offset + 100, 230))]
        return Reply(200, rows)

    server = await loopback(pages)
    od = client(server.url)
    assert len(await od.get_list("payments", {"PatNum": 7})) == 230
    assert len(server.requests) == 3
    await od.close()


async def test_a_server_that_ignores_offset_does_not_loop_forever(loopback: Callable[[Script], Any]) -> None:
    server = await loopback(replies(then=Reply(200, [payment_row(n, 7, "1.00") for n in range(100)])))
    od = client(server.url)
    assert len(await od.get_list("payments")) == 100
    assert len(server.requests) == 2
    await od.close()


# --- connector decisions over loopback ------------------------------------------------------------------------


def _payment(key: str, account: str, cents: int = 9700, fee: int = 0, kind: str = "terminal") -> PaymentEntry:
    return PaymentEntry(key, account, cents, fee, DAY, kind, "Card payment ch_1 via ledgerlink")


def _reversal(
    key: str, original: str, cents: int, *, full: bool, account: str = "7", fee: int = 0
) -> ReversalEntry:
    return ReversalEntry(key, account, original, cents, full, DAY, "Refund re_1 via ledgerlink", fee)


DEFINITIONS = [
    {"DefNum": 69, "Category": 10, "ItemName": "Check", "ItemValue": "", "IsHidden": "false"},
    {"DefNum": 71, "Category": 10, "ItemName": "Credit Card", "ItemValue": "", "IsHidden": "false"},
    {"DefNum": 72, "Category": 10, "ItemName": "Not used", "ItemValue": "", "IsHidden": "true"},
]


async def test_a_sale_is_one_post_with_the_marker_the_pay_type_and_two_place_dollars(
    loopback: Callable[[Script], Any],
) -> None:
    def office(request: Request) -> Reply:
        if request.path.startswith("/api/v1/definitions"):
            return Reply(200, DEFINITIONS)
        return Reply(201, payment_row(501, 7, "97.00", request.body["PayNote"]))

    server = await loopback(office)
    connector = OpenDentalConnector(settings(server.url, clinic_num=3, is_patient_preferred=True))
    [first] = await connector.post_payments([_payment("ll-wb-1", "7")])
    [second] = await connector.post_payments([_payment("ll-wb-2", "7", 1234)])
    assert first == PmsWrite("501", 9700) and isinstance(second, PmsWrite)
    definitions, post, _ = server.requests
    assert definitions.path == "/api/v1/definitions?Category=10"  # once per connector life
    assert post.body == {
        "PayAmt": "97.00",
        "PatNum": 7,
        "PayType": 71,
        "PayDate": "2026-03-10",
        "PayNote": "Card payment ch_1 via ledgerlink [ll-wb-1]",
        "ClinicNum": 3,
        "isPatientPreferred": "true",
    }
    assert connector.limits.requests_per_second is None and connector.limits.batch_size == 1
    await connector.close()


async def test_a_missing_payment_type_names_the_type_and_the_offices_types(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(replies(then=Reply(200, DEFINITIONS)))
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_payments([_payment("ll-wb-1", "7", kind="membership")])
    assert isinstance(result, PmsRejected) and result.code is LoadErrorCode.PMS_CONFIGURATION
    assert "'Membership'" in result.message and "Check, Credit Card" in result.message
    assert "Not used" not in result.message  # hidden types are not offered
    assert [r.method for r in server.requests] == ["GET"]  # nothing was posted
    await connector.close()


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Reply(404, "Patient not found."), LoadErrorCode.INVALID_PATIENT_ID),
        (Reply(400, "PatNum is invalid."), LoadErrorCode.INVALID_PATIENT_ID),
        (Reply(400, "PayDate cannot be in the future."), LoadErrorCode.PMS_REJECTED),
    ],
)
async def test_open_dentals_refusals_keep_its_words_and_map_to_load_error_codes(
    loopback: Callable[[Script], Any], answer: Reply, code: LoadErrorCode
) -> None:
    server = await loopback(lambda r: Reply(200, DEFINITIONS) if r.method == "GET" else answer)
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_payments([_payment("ll-wb-1", "7")])
    assert isinstance(result, PmsRejected) and result.code is code
    assert str(answer.body).rstrip(".") in result.message
    await connector.close()


async def test_a_chart_number_must_match_exactly_one_active_patient(
    loopback: Callable[[Script], Any],
) -> None:
    patients = [
        {"PatNum": 1, "ChartNumber": "A100", "PatStatus": "Patient", "LName": "One", "FName": "A"},
        {"PatNum": 2, "ChartNumber": "A1001", "PatStatus": "Patient", "LName": "Two", "FName": "B"},
        {"PatNum": 3, "ChartNumber": "B7", "PatStatus": "Patient", "LName": "Three", "FName": "C"},
        {"PatNum": 4, "ChartNumber": "B7", "PatStatus": "Patient", "LName": "Four", "FName": "D"},
        {"PatNum": 5, "ChartNumber": "C9", "PatStatus": "Deleted", "LName": "Five", "FName": "E"},
    ]

    def office(request: Request) -> Reply:  # a prefix search, as Open Dental's (research §9.4)
        wanted = request.path.split("ChartNumber=")[1]
        return Reply(200, [p for p in patients if str(p["ChartNumber"]).startswith(wanted)])

    server = await loopback(office)
    connector = OpenDentalConnector(settings(server.url, account_number="chartnumber"))
    found = await connector.find_patient("A100")
    assert found is not None and (found.pms_id, found.last_name) == ("1", "One")
    assert await connector.find_patient("C9") is None  # deleted
    assert await connector.find_patient("Z1") is None
    with pytest.raises(PmsRejected, match="ChartNumber B7 matches 2 patients") as ambiguous:
        await connector.find_patient("B7")
    assert ambiguous.value.code is LoadErrorCode.INVALID_PATIENT_ID
    [result] = await connector.post_payments([_payment("ll-wb-1", "B7")])
    assert isinstance(result, PmsRejected) and result.code is LoadErrorCode.INVALID_PATIENT_ID
    assert "matches 2 patients" in result.message
    await connector.close()


async def test_partial_refunds_held_for_staff_post_nothing_and_say_what_to_enter(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(replies(then=Reply(200, [payment_row(501, 7, "97.00", "x [ll-wb-1]")])))
    connector = OpenDentalConnector(settings(server.url, partial_refunds="task"))
    [result] = await connector.post_reversals([_reversal("ll-wb-2", "501", 2500, full=False)])
    assert isinstance(result, PmsRejected) and result.code is LoadErrorCode.HELD_FOR_STAFF
    assert "held for staff" in result.message
    assert "-$25.00" in result.message and "[ll-wb-2]" in result.message and "payment 501" in result.message
    assert [r.method for r in server.requests] == ["GET"]  # read the original; wrote nothing
    await connector.close()


async def test_a_full_refund_whose_note_was_never_set_is_found_and_marked(
    loopback: Callable[[Script], Any],
) -> None:
    ledger = [
        payment_row(501, 7, "97.00", "Card payment [ll-wb-1]"),
        payment_row(502, 7, "-97.00", "", pay_type=69),  # another type: not the mirror of 501
        payment_row(503, 7, "-97.00", ""),  # the mirror Open Dental's Refund made, without a note
        payment_row(504, 7, "-97.00", ""),  # a second mirror: not claimed
    ]
    server = await loopback(lambda r: Reply(200, ledger if r.method == "GET" else {}))
    connector = OpenDentalConnector(settings(server.url))
    found = await connector.find_write(_reversal("ll-wb-9", "501", 9700, full=True))
    assert found == PmsWrite("503", -9700)
    put = server.requests[-1]
    assert (put.method, put.path, put.body) == (
        "PUT",
        "/api/v1/payments/503",
        {"PayNote": "Refund re_1 via ledgerlink (reverses PayNum 501) [ll-wb-9]"},
    )
    assert (
        await connector.find_write(_reversal("ll-wb-8", "501", 2500, full=False)) is None
    )  # partial: marker only
    await connector.close()


async def test_an_alert_is_a_task_linked_to_the_patient_and_a_commlog(
    loopback: Callable[[Script], Any],
) -> None:
    server = await loopback(replies(then=Reply(201, {})))
    connector = OpenDentalConnector(settings(server.url, task_list_num=4, task_user_num=2))
    await connector.raise_alert(PmsAlert("Payment not posted (PMS_REJECTED)", "ch_1: refused", "7"))
    task, commlog = server.requests
    assert task.path == "/api/v1/tasks" and task.body["TaskListNum"] == 4 and task.body["UserNum"] == 2
    assert (task.body["KeyNum"], task.body["ObjectType"]) == (7, "Patient")
    assert "ch_1: refused" in task.body["Descript"]
    assert commlog.path == "/api/v1/commlogs" and commlog.body["PatNum"] == 7
    await connector.close()


async def test_an_alert_with_nowhere_to_go_stays_undelivered(loopback: Callable[[Script], Any]) -> None:
    server = await loopback(replies(then=Reply(201, {})))
    connector = OpenDentalConnector(settings(server.url))
    with pytest.raises(PmsRejected) as refused:
        await connector.raise_alert(PmsAlert("Payment not posted", "no patient", None))
    assert refused.value.code is LoadErrorCode.PMS_CONFIGURATION and server.requests == []
    await connector.close()


# === end to end: the real engine, the Open Dental peer, SQLite and MariaDB offices ==========================

NOON = datetime(2026, 3, 10, 18, 0, tzinfo=UTC)  # 12:00 in Chicago on DAY
MARKER = re.compile(r"\[(ll-wb-\d+)\]")
RATE = 25.0  # the key's plan in these tests: fast enough for tests, slow enough that pacing matters
CUSTOMER_KEY = "office-key"


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def office_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the Open Dental office's database lives: SQLite, or MariaDB in its strict default mode."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/opendental.db"
    return str(request.getfixturevalue("mariadb_url"))


@dataclass
class OdPractice:
    """One practice connected to one Open Dental office served by the peer, as a test sees it."""

    db: Database
    practice: Practice
    connection: Connection
    office: OpenDentalOffice
    peer_url: str
    data_dir: Path

    async def patient(self, ref: str, *, chart: str = "", account: str | None = None) -> tuple[Patient, int]:
        """A patient in both systems; the account number is the PatNum (or `account` when given)."""
        pat_num = self.office.add_patient(ref.title(), "Pat", chart_number=chart)
        number = account if account is not None else str(pat_num)
        return await add_patient(self.db, self.practice, self.connection, ref, number), pat_num

    async def sale(self, ref: str, patient: Patient | None, **kw: Any) -> None:
        kw.setdefault("at", NOON)
        await add_transaction(self.db, self.practice, ref, patient=patient, **kw)

    async def reversal(
        self, kind: str, ref: str, original: str, patient: Patient | None, amount: int
    ) -> None:
        await add_transaction(
            self.db,
            self.practice,
            ref,
            kind=kind,
            gross=amount,
            fee=0,
            patient=patient,
            original=original,
            at=NOON,
        )

    async def sync(self) -> SyncReport:
        async with self.db.sessions() as session:
            connection = await session.get(Connection, self.connection.id)
            assert connection is not None
        connector = open_connector("opendental", connection.settings, self.data_dir)
        try:
            outcome = await run_sync(self.db, self.connection.id, connector, since=DAY)
        finally:
            await connector.close()
        return outcome.report

    async def sync_until_settled(self, max_runs: int = 30) -> None:
        for _ in range(max_runs):
            await self.sync()
            async with self.db.sessions.begin() as session:
                await session.execute(update(Writeback).values(next_attempt_at=None))
                unsettled = await session.scalar(
                    select(func.count())
                    .select_from(Writeback)
                    .where(Writeback.status.in_(("pending", "in_flight")))
                )
            if not unsettled:
                return
        raise AssertionError(f"writebacks still pending after {max_runs} runs")

    async def writeback(self, ref: str) -> Writeback:
        async with self.db.sessions() as session:
            found = await session.scalar(
                select(Writeback)
                .join(Transaction, Transaction.id == Writeback.transaction_id)
                .where(Transaction.processor_ref == ref)
            )
        assert found is not None, f"no writeback for {ref}"
        return found

    def payments(self, pat_num: int | None = None) -> list[OdPayment]:
        return self.office.payments(pat_num=pat_num)

    def amounts(self, pat_num: int | None = None) -> list[Decimal]:
        return [p.pay_amt for p in self.payments(pat_num)]

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.peer_url}/_peer/stats").json()
        return answer

    def set_faults(self, **faults: Any) -> None:
        httpx.put(f"{self.peer_url}/_peer/faults", json=faults).raise_for_status()

    def check_the_office(self) -> None:
        """After every scenario: Open Dental's integrity checks pass, each writeback's marker is on exactly
        one payment, and ledgerlink never sent a request faster than the key's plan."""
        assert self.office.integrity_problems() == []
        markers = Counter(m for p in self.payments() for m in MARKER.findall(p.pay_note))
        assert [m for m, n in markers.items() if n > 1] == [], "a writeback was posted twice"
        assert self.stats()["rate_limit_violations"] == 0
        # A reversal is one negative payment on its original's patient, whose note names the original.
        by_num = {p.pay_num: p for p in self.payments()}
        for p in by_num.values():
            linked = re.search(r"\(reverses PayNum (\d+)\)", p.pay_note)
            if linked is not None:
                original = by_num[int(linked.group(1))]
                assert p.pay_amt < 0 < original.pay_amt and p.pat_num == original.pat_num


@asynccontextmanager
async def od_practice(
    db: Database,
    tmp_path: Path,
    office_url: str,
    *,
    amount_mode: str = "net",
    settings_overrides: dict[str, Any] | None = None,
    faults: Faults | None = None,
) -> AsyncIterator[OdPractice]:
    office = OpenDentalOffice.open(office_url, create=True)
    config = PeerConfig(
        database_url=office_url,
        keys=[ApiKey(developer_key="dev", customer_key=CUSTOMER_KEY, requests_per_second=RATE)],
        faults=faults or Faults(),
        rate_tolerance_ms=0,  # no arrival jitter forgiven: ledgerlink's pacing must hold by itself
    )
    try:
        with running_peer(config, office=office) as peer_url:
            raw = {
                "base_url": f"{peer_url}/api/v1",
                "developer_key": "dev",
                "customer_key": CUSTOMER_KEY,
                "requests_per_second": RATE,
                "task_list_num": 1,
                "task_user_num": 1,
            } | (settings_overrides or {})
            async with db.sessions.begin() as session:
                practice = await create_practice(
                    session, slug="smile", name="Smile", timezone="America/Chicago"
                )
                connection = await add_connection(
                    session,
                    practice,
                    name="od",
                    kind="opendental",
                    settings=settings_to_store("opendental", raw, tmp_path),
                    amount_mode=amount_mode,
                )
            od = OdPractice(db, practice, connection, office, peer_url, tmp_path)
            yield od
            od.check_the_office()
    finally:
        office.close()


async def test_e2e_sale_posts_the_net_amount_with_its_marker_and_pay_type(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)

        report = await od.sync()

        [payment] = od.payments(pat_num)
        wb = await od.writeback("ch_1")
        assert (payment.pay_amt, payment.pay_type, payment.pay_date) == (Decimal("97.00"), 71, DAY)
        assert f"[{idempotency_key(wb.id)}]" in payment.pay_note
        assert (wb.status, wb.pms_ref) == ("posted", str(payment.pay_num))
        assert (report.line(ReportCategory.SALES).count, report.line(ReportCategory.SALES).total_cents) == (
            1,
            9700,
        )
        async with sqlite_db.sessions() as session:
            stored = (await session.get(Connection, od.connection.id)).settings  # type: ignore[union-attr]
        assert SecretBox.is_sealed(stored["customer_key"])


async def test_e2e_plan_and_membership_payments_are_recurring(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        plan = od.office.add_definition(10, "Payment Plan")
        member = od.office.add_definition(10, "Membership")
        patient, pat_num = await od.patient("p1")
        await od.sale("plan_1", patient, payment_type="payment_plan", gross=5000, fee=150)
        await od.sale("member_1", patient, payment_type="membership", gross=3000, fee=90)

        report = await od.sync()

        assert [(p.pay_type, p.pay_amt) for p in od.payments(pat_num)] == [
            (plan, Decimal("48.50")),
            (member, Decimal("29.10")),
        ]
        assert report.line(ReportCategory.RECURRING).count == 2


async def test_e2e_gross_plus_fee_posts_a_fee_adjustment_and_a_void_takes_it_back(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url, amount_mode="gross_plus_fee") as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.sync()
        [fee] = od.office.adjustments(pat_num)
        wb = await od.writeback("ch_1")
        assert (fee.adj_amt, fee.adj_type) == (Decimal("3.00"), 2)
        assert f"[{idempotency_key(wb.id)}]" in fee.adj_note

        await od.reversal("void", "vo_1", "ch_1", patient, 10000)
        await od.sync()

        assert od.amounts(pat_num) == [Decimal("100.00"), Decimal("-100.00")]
        assert [(a.adj_amt, a.adj_type) for a in od.office.adjustments(pat_num)] == [
            (Decimal("3.00"), 2),
            (Decimal("-3.00"), 1),
        ]
        assert (await od.writeback("vo_1")).status == "posted"


async def test_e2e_full_refund_is_open_dentals_refund_with_the_note_put_on_it(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.reversal("refund", "re_1", "ch_1", patient, 9700)

        report = await od.sync()

        _, refund = od.payments(pat_num)
        wb = await od.writeback("re_1")
        assert (refund.pay_amt, refund.pay_type, refund.payment_source) == (Decimal("-97.00"), 71, 0)
        original = (await od.writeback("ch_1")).pms_ref
        assert (
            refund.pay_note
            == f"Refund re_1 via ledgerlink (reverses PayNum {original}) [{idempotency_key(wb.id)}]"
        )
        assert (wb.status, wb.pms_ref) == ("posted", str(refund.pay_num))
        assert report.line(ReportCategory.REFUNDS).total_cents == 9700
        assert od.office.paid_total(pat_num) == 0


async def test_e2e_partial_refunds_are_negative_payments_until_nothing_is_left(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.sync()
        await od.reversal("refund", "re_1", "ch_1", patient, 5000)
        await od.sync()
        await od.reversal("refund", "re_2", "ch_1", patient, 5000)  # only 47.00 is left on the ledger
        await od.sync()

        assert od.amounts(pat_num) == [Decimal("97.00"), Decimal("-50.00"), Decimal("-47.00")]
        assert {p.pay_type for p in od.payments(pat_num)} == {71}
        assert od.office.paid_total(pat_num) == 0
        assert (await od.writeback("ch_1")).reversed_cents == 9700
        await od.reversal("refund", "re_3", "ch_1", patient, 100)
        await od.sync()
        assert (await od.writeback("re_3")).error_code == "REFUND_EXCEEDS_ORIGINAL"


async def test_e2e_a_refund_naming_a_patient_without_an_account_lands_on_the_original_payments_patient(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.sync()
        stub = await add_patient(od.db, od.practice, od.connection, "p1-refund", None)  # no account number
        await od.reversal("refund", "re_1", "ch_1", stub, 2000)

        await od.sync()

        assert (await od.writeback("re_1")).status == "posted"
        assert od.amounts(pat_num) == [Decimal("97.00"), Decimal("-20.00")]


async def test_e2e_partial_refunds_left_to_staff_are_held_with_one_task_and_nothing_posted(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(
        sqlite_db, tmp_path, office_url, settings_overrides={"partial_refunds": "task"}
    ) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.sync()
        await od.reversal("refund", "re_1", "ch_1", patient, 2500)

        await od.sync()
        await od.sync()  # a second run raises no second task

        wb = await od.writeback("re_1")
        assert (wb.status, wb.error_code, wb.category) == ("failed", "HELD_FOR_STAFF", "held_for_manual")
        assert "held for staff" in (wb.error_message or "")
        assert od.amounts(pat_num) == [Decimal("97.00")]
        [task] = od.office.tasks(task_list_num=1)
        assert "-$25.00" in task.descript and task.key_num == pat_num


async def test_e2e_void_before_posting_posts_nothing_and_after_posting_reverses_it(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.reversal("void", "vo_1", "ch_1", patient, 10000)
        await od.sale("ch_2", patient, gross=2000, fee=60)
        await od.sync()
        assert od.amounts(pat_num) == [Decimal("19.40")]
        assert (await od.writeback("ch_1")).status == "skipped"

        await od.reversal("void", "vo_2", "ch_2", patient, 2000)
        report = await od.sync()

        assert od.amounts(pat_num) == [Decimal("19.40"), Decimal("-19.40")]
        assert report.line(ReportCategory.VOIDS).total_cents == 1940


async def test_e2e_chargeback_reverses_and_a_decline_is_never_posted(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_1", patient, gross=10000, fee=300)
        await od.sale("dc_1", patient, kind="decline", gross=4500, fee=0)
        await od.sync()
        await od.reversal("chargeback", "cb_1", "ch_1", patient, 10000)

        report = await od.sync()

        assert od.amounts(pat_num) == [Decimal("97.00"), Decimal("-97.00")]
        assert report.line(ReportCategory.CHARGEBACKS).count == 1
        assert (await od.writeback("dc_1")).skip_reason == "declined"


async def test_e2e_unknown_duplicate_and_deleted_patients_are_invalid_patient_id(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(
        sqlite_db, tmp_path, office_url, settings_overrides={"account_number": "chartnumber"}
    ) as od:
        good, good_num = await od.patient("good", chart="A100", account="A100")
        od.office.add_patient("Prefix", "Pat", chart_number="A1001")  # a prefix match must not count
        twin, _ = await od.patient("twin", chart="B7", account="B7")
        od.office.add_patient("Twin", "Other", chart_number="B7")
        gone, gone_num = await od.patient("gone", chart="C9", account="C9")
        od.office.set_patient_status(gone_num, 4)
        nobody = await add_patient(sqlite_db, od.practice, od.connection, "nobody", "Z999")
        for ref, patient in (("ch_good", good), ("ch_twin", twin), ("ch_gone", gone), ("ch_nobody", nobody)):
            await od.sale(ref, patient)

        report = await od.sync()

        assert [p.pat_num for p in od.payments()] == [good_num]
        assert report.line(ReportCategory.INVALID_PATIENT_ID).count == 3
        twin_wb = await od.writeback("ch_twin")
        assert (twin_wb.error_code, twin_wb.error_message) == (
            "INVALID_PATIENT_ID",
            "ChartNumber B7 matches 2 patients in Open Dental; make it unique there (Patient Edit) or use "
            "PatNum account numbers, then Retry",
        )
        assert "C9" in ((await od.writeback("ch_gone")).error_message or "")


async def test_e2e_a_deleted_patients_patnum_is_invalid_patient_id(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        od.office.set_patient_status(pat_num, 4)
        await od.sale("ch_1", patient)

        await od.sync()

        wb = await od.writeback("ch_1")
        assert (wb.status, wb.error_code) == ("failed", "INVALID_PATIENT_ID")
        assert "Patient not found" in (wb.error_message or "")
        assert od.payments() == []


async def test_e2e_missing_payment_type_names_are_a_clear_configuration_error(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(sqlite_db, tmp_path, office_url) as od:
        patient, pat_num = await od.patient("p1")
        await od.sale("ch_online", patient, payment_type="online")
        await od.sale("ch_card", patient, payment_type="terminal")

        await od.sync()

        wb = await od.writeback("ch_online")
        assert (wb.status, wb.error_code) == ("failed", "PMS_CONFIGURATION")
        assert "'Online Payment'" in (wb.error_message or "")
        assert "Cash, Check, Credit Card" in (wb.error_message or "")
        assert od.amounts(pat_num) == [Decimal("97.00")]  # the other payment is not held up
        [task] = od.office.tasks(task_list_num=1)
        assert "PMS_CONFIGURATION" in task.descript
        assert [c.pat_num for c in od.office.commlogs()] == [pat_num]


@pytest.mark.parametrize("seed", [1, 2])
async def test_e2e_lost_answers_after_commit_post_nothing_twice(
    sqlite_db: Database, tmp_path: Path, office_url: str, seed: int
) -> None:
    async with od_practice(
        sqlite_db, tmp_path, office_url, faults=Faults(drop_after_commit_rate=0.4, seed=seed)
    ) as od:
        patients = [await od.patient(f"p{n}") for n in range(4)]
        for n, (patient, _) in enumerate(patients):
            await od.sale(f"ch_{n}", patient, gross=10000 + n, fee=0)
            await od.sale(f"ch_{n}b", patient, gross=5000, fee=0)
        await od.sync_until_settled()
        for n, (patient, _) in enumerate(patients):
            await od.reversal("refund", f"re_{n}", f"ch_{n}", patient, 10000 + n)  # full: Refund + PUT
            await od.reversal("refund", f"re_{n}b", f"ch_{n}b", patient, 1000)  # partial: negative payment

        await od.sync_until_settled()

        assert od.stats()["dropped"] > 0
        for _, pat_num in patients:
            assert od.office.paid_total(pat_num) == Decimal("40.00")
        async with sqlite_db.sessions() as session:
            statuses = Counter(await session.scalars(select(Writeback.status)))
        assert statuses == {"posted": 16}
        marked = [m for p in od.payments() for m in MARKER.findall(p.pay_note)]
        assert len(marked) == 16  # every writeback's marker is in Open Dental, once


async def test_e2e_a_429_storm_delays_but_never_violates_the_rate(
    sqlite_db: Database, tmp_path: Path, office_url: str
) -> None:
    async with od_practice(
        sqlite_db, tmp_path, office_url, faults=Faults(throttle_rate=0.5, retry_after_s=0.05, seed=7)
    ) as od:
        patient, pat_num = await od.patient("p1")
        for n in range(6):
            await od.sale(f"ch_{n}", patient, gross=1000, fee=0)

        await od.sync_until_settled()

        stats = od.stats()
        assert stats["throttled"] > 0 and stats["rate_limit_violations"] == 0
        assert od.amounts(pat_num) == [Decimal("10.00")] * 6


async def test_e2e_pacing_measured_by_the_peer_has_no_violation_with_no_tolerance(
    tmp_path: Path,
) -> None:
    office_url = f"sqlite:///{tmp_path}/opendental.db"
    office = OpenDentalOffice.open(office_url, create=True)
    pat_num = office.add_patient("Doe", "Pat")
    config = PeerConfig(
        database_url=office_url,
        keys=[ApiKey(developer_key="dev", customer_key="k", requests_per_second=20)],
        rate_tolerance_ms=0,  # no jitter forgiven: the pacing must hold by itself
    )
    try:
        with running_peer(config, office=office) as peer_url:
            raw = {
                "base_url": f"{peer_url}/api/v1",
                "developer_key": "dev",
                "customer_key": "k",
                "requests_per_second": 20,
                "task_list_num": 1,
                "task_user_num": 1,
            }
            one = OpenDentalConnector(OpenDentalSettings.model_validate(raw))
            two = OpenDentalConnector(OpenDentalSettings.model_validate(raw))
            await asyncio.gather(
                *(one.find_patient(str(pat_num)) for _ in range(5)),
                *(two.find_patient("999") for _ in range(5)),
                *(one.raise_alert(PmsAlert("Test", "pacing", None)) for _ in range(5)),
                two.post_payments([_payment("ll-wb-1", str(pat_num))]),
            )
            await one.close()
            await two.close()
            async with httpx.AsyncClient() as http:
                stats = (await http.get(f"{peer_url}/_peer/stats")).json()
    finally:
        office.close()
    assert stats["requests"] == 5 + 5 + 5 + 2, stats  # definitions, then the payment
    assert stats["rate_limit_violations"] == 0


async def test_a_found_payment_whose_fee_entry_is_missing_gets_it_and_only_once(
    loopback: Callable[[Script], Any],
) -> None:
    adjustments: list[dict[str, Any]] = []
    adj_types = [
        {
            "DefNum": 1,
            "Category": 1,
            "ItemName": "Misc Neg Adjustment",
            "ItemValue": "-",
            "IsHidden": "false",
        },
        {
            "DefNum": 2,
            "Category": 1,
            "ItemName": "Misc Pos Adjustment",
            "ItemValue": "+",
            "IsHidden": "false",
        },
    ]

    def office(request: Request) -> Reply:
        if request.path.startswith("/api/v1/definitions"):
            return Reply(200, adj_types)
        if request.path.startswith("/api/v1/payments"):
            return Reply(200, [payment_row(501, 7, "100.00", "Card payment [ll-wb-1]")])
        if request.method == "GET":
            return Reply(200, adjustments)
        adjustments.append(request.body)
        return Reply(201, adjustments[-1])

    server = await loopback(office)
    entry = _payment("ll-wb-1", "7", 10000, fee=300)
    first = OpenDentalConnector(settings(server.url))
    assert await first.find_write(entry) == PmsWrite("501", 10000)
    assert [(a["AdjType"], a["AdjAmt"], a["AdjNote"]) for a in adjustments] == [
        (2, "3.00", "Processing fee [ll-wb-1]")
    ]
    second = OpenDentalConnector(settings(server.url))  # another run: finds the fee entry, adds none
    assert await second.find_write(entry) == PmsWrite("501", 10000)
    assert len(adjustments) == 1
    assert await first.find_write(_payment("ll-wb-2", "7", 10000)) is None
    await first.close()
    await second.close()


async def test_a_refund_open_dental_refuses_is_posted_as_a_negative_payment(
    loopback: Callable[[Script], Any],
) -> None:
    def office(request: Request) -> Reply:
        if request.method == "GET":
            return Reply(200, [payment_row(501, 7, "97.00", "x [ll-wb-1]")])
        if request.path.endswith("/Refund"):
            return Reply(400, "Payments with paysplits attached to payment plans cannot be refunded.")
        return Reply(201, payment_row(502, 7, request.body["PayAmt"], request.body["PayNote"]))

    server = await loopback(office)
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_reversals([_reversal("ll-wb-2", "501", 9700, full=True)])
    assert result == PmsWrite("502", -9700)
    negative = server.requests[-1]
    assert (negative.path, negative.body["PayAmt"], negative.body["PayType"]) == (
        "/api/v1/payments",
        "-97.00",
        71,
    )
    assert negative.body["PayNote"].endswith("[ll-wb-2]")
    await connector.close()


def test_payment_type_names_can_be_given_as_json_text_as_the_cli_does(tmp_path: Path) -> None:
    raw = {"developer_key": "d", "customer_key": "c", "payment_type_names": '{"online": "Credit Card"}'}
    assert OpenDentalSettings.model_validate(raw).payment_type_names == {"online": "Credit Card"}
    with pytest.raises(InvalidInput, match=r"payment_type_names: .*JSON object"):
        open_connector("opendental", raw | {"payment_type_names": "Credit Card"}, tmp_path)


async def test_an_unreadable_answer_to_a_write_is_outcome_unknown(loopback: Callable[[Script], Any]) -> None:
    def office(request: Request) -> Reply:
        return Reply(200, DEFINITIONS) if request.method == "GET" else Reply(201, None, {"X-Body": "none"})

    server = await loopback(office)
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_payments([_payment("ll-wb-1", "7")])
    assert isinstance(result, PmsOutcomeUnknown)  # Open Dental said 201 but named no PayNum
    await connector.close()


async def test_an_unreadable_read_fails_the_entry_instead_of_the_sync(
    loopback: Callable[[Script], Any],
) -> None:
    broken = [{"DefNum": "seventy-one", "ItemName": "Credit Card", "IsHidden": "false"}]

    def office(request: Request) -> Reply:
        if request.path.startswith("/api/v1/payments"):
            return Reply(200, [payment_row(501, 7, "97.00", "x [ll-wb-1]"), {"PayNum": "?", "PayNote": "y"}])
        return Reply(200, broken)

    server = await loopback(office)
    connector = OpenDentalConnector(settings(server.url))
    [result] = await connector.post_payments([_payment("ll-wb-1", "7")])
    assert isinstance(result, PmsRejected) and "cannot read" in result.message
    with pytest.raises(PmsRejected, match="cannot read"):
        await connector.find_write(_payment("ll-wb-1", "7", fee=300))  # found: reads adjustment types
    await connector.close()


async def test_search_patients_asks_open_dental_by_name_and_by_birth_date(tmp_path: Path) -> None:
    office_url = f"sqlite:///{tmp_path}/opendental.db"
    office = OpenDentalOffice.open(office_url, create=True)
    born = date(1971, 4, 2)
    same = office.add_patient("Quinn", "Tess", birthdate=born)
    other_birthday = office.add_patient("Quinn", "Tess", birthdate=date(1980, 1, 1))
    nickname = office.add_patient("Quinn", "Teresa", birthdate=born)
    office.add_patient("Quinnell", "Tess", birthdate=born)  # Open Dental's prefix match finds it; not a match
    office.add_patient("Quinn", "Sam")
    deleted = office.add_patient("Quinn", "Tess", birthdate=born)
    office.set_patient_status(deleted, 4)
    config = PeerConfig(
        database_url=office_url, keys=[ApiKey(developer_key="dev", customer_key="k", requests_per_second=50)]
    )
    try:
        with running_peer(config, office=office) as peer_url:
            raw = {"base_url": f"{peer_url}/api/v1", "developer_key": "dev", "customer_key": "k",
                   "requests_per_second": 50, "task_list_num": 1, "task_user_num": 1}  # fmt: skip
            connector = OpenDentalConnector(OpenDentalSettings.model_validate(raw))
            found = await connector.search_patients("quinn ", "TESS", born)
            by_name = await connector.search_patients("Quinn", "Tess", None)
            nobody = await connector.search_patients("Nobody", "Tess", born)
            await connector.close()
            async with httpx.AsyncClient() as http:
                stats = (await http.get(f"{peer_url}/_peer/stats")).json()
    finally:
        office.close()
    assert sorted(int(p.pms_id) for p in found) == [same, other_birthday, nickname]
    assert {p.account_number for p in found} == {str(same), str(other_birthday), str(nickname)}
    assert {int(p.pms_id): p.birth_date for p in found}[same] == born
    assert sorted(int(p.pms_id) for p in by_name) == [same, other_birthday]
    assert nobody == []
    assert stats["requests"] == 2 + 1 + 2  # by name and by birth date; by name only without a birth date
