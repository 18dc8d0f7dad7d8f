"""The Open Dental API peer, over real HTTP (uvicorn on loopback, httpx), on SQLite and MariaDB.

What a connector relies on: Open Dental's paths, status codes, messages and JSON shapes; the per-key
throttle and its accounting; and faults that look to the client like the real thing (a dropped connection
after the payment committed is a transport error, not a status code). Every scenario ends with Open
Dental's integrity checks clean.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer import ApiKey, Faults, PeerConfig
from ledgerlink.opendental.peer.faults import FaultInjector
from ledgerlink.opendental.peer.serialize import amount_text
from ledgerlink.opendental.peer.server import running_peer_process
from ledgerlink.opendental.peer.throttle import Throttle
from tests.od_peer import OdPeerFactory, RunningPeer, od_backend_fixture, od_peer_fixture  # noqa: F401  (fixtures)

AUTH = {"Authorization": "ODFHIR dev-key/customer-key"}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def api(peer: RunningPeer, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=peer.api_url, headers=AUTH if headers is None else headers, timeout=10)


def assert_open_dental_payment_shape(payment: dict[str, Any]) -> None:
    """research/opendental.md §9.2: numbers for keys, strings for PayAmt and ClinicNum, strings for flags."""
    for key in ("PayNum", "PayType", "PatNum", "DepositNum"):
        assert type(payment[key]) is int, key
    for key in ("PayAmt", "ClinicNum", "payType", "CheckNum", "BankBranch", "PayNote", "Receipt"):
        assert type(payment[key]) is str, key
    assert payment["IsRecurringCC"] in ("true", "false")
    assert payment["IsCcCompleted"] in ("true", "false")
    assert payment["ProcessStatus"] == "OfficeProcessed"
    assert DATE.fullmatch(payment["PayDate"]) and DATE.fullmatch(payment["DateEntry"])
    assert payment["RecurringChargeDate"] == "0001-01-01"


# --- round trips ----------------------------------------------------------------------------------------


def test_payment_create_list_refund_and_note_round_trip_in_open_dentals_shapes(
    od_peer: OdPeerFactory, od_backend: str
) -> None:
    peer = od_peer(od_backend)
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        created = client.post(
            "/payments", json={"PayAmt": "129.99", "PatNum": pat_num, "PayNote": "[wb:pi_1]"}
        )
        assert created.status_code == 201
        payment = created.json()
        assert_open_dental_payment_shape(payment)
        assert payment["PayAmt"] == "129.99"
        assert payment["ClinicNum"] == "0"
        assert payment["PaymentSource"] == "API"
        assert payment["PayType"] == 69 and payment["payType"] == "Check"  # preference ApiPaymentType
        assert payment["PayNote"] == "[wb:pi_1]"

        whole = client.post(
            "/payments", json={"PayAmt": 20, "PatNum": str(pat_num), "isPatientPreferred": "true"}
        )
        assert whole.status_code == 201
        assert whole.json()["PayAmt"] == "20"  # as C# prints the double 20.0

        refund = client.post("/payments/Refund", json={"PayNum": payment["PayNum"]})
        assert refund.status_code == 201
        mirrored = refund.json()
        assert_open_dental_payment_shape(mirrored)
        assert mirrored["PayAmt"] == "-129.99"
        assert mirrored["PayNote"] == "" and mirrored["PaymentSource"] == "None"  # research §9.5

        noted = client.put(f"/payments/{mirrored['PayNum']}", json={"PayNote": "[wb:re_1]"})
        assert noted.status_code == 200
        assert noted.json()["PayNote"] == "[wb:re_1]"

        listed = client.get("/payments", params={"PatNum": pat_num, "DateEntry": payment["DateEntry"]})
        assert listed.status_code == 200
        rows = listed.json()
        assert [row["PayNum"] for row in rows] == [
            payment["PayNum"],
            whole.json()["PayNum"],
            mirrored["PayNum"],
        ]
        assert [row["PayNote"] for row in rows] == ["[wb:pi_1]", "", "[wb:re_1]"]
        assert all(DATE_TIME.fullmatch(row["serverDateTime"]) for row in rows)
        assert client.get("/payments", params={"PatNum": pat_num, "Offset": 1, "Limit": 1}).json() == [
            rows[1]
        ]
        assert client.get("/payments", params={"PatNum": pat_num, "DateEntry": "2999-01-01"}).json() == []
    assert peer.office.integrity_problems() == []


def test_reference_data_and_staff_notes_in_open_dentals_shapes(od_peer: OdPeerFactory) -> None:
    peer = od_peer()
    office = peer.office
    pat_num = office.add_patient("Smith", "Jane", chart_number="A100")
    office.add_patient("Smith", "John", chart_number="A1001")
    office.add_patient("Doe", "Ann", chart_number="B7")
    with api(peer) as client:
        types = client.get("/definitions", params={"Category": 10}).json()
        assert [(d["DefNum"], d["ItemName"], d["IsHidden"]) for d in types] == [
            (69, "Check", "false"),
            (70, "Cash", "false"),
            (71, "Credit Card", "false"),
        ]
        hidden = client.get("/definitions", params={"Category": 10, "includeHidden": "true"}).json()
        assert len(hidden) == 4

        patient = client.get(f"/patients/{pat_num}").json()
        assert patient["PatNum"] == pat_num and patient["PatStatus"] == "Patient"
        assert patient["Birthdate"] == "0001-01-01" and patient["ChartNumber"] == "A100"
        prefix = client.get("/patients", params={"ChartNumber": "A100"}).json()
        assert sorted(p["ChartNumber"] for p in prefix) == ["A100", "A1001"]  # a prefix match (§9.4)
        # The name and birth date filters of Patients GET (multiple): names from their start, any case.
        smiths = client.get("/patients", params={"LName": "smi", "FName": "JA"}).json()
        assert [(p["LName"], p["FName"]) for p in smiths] == [("Smith", "Jane")]
        assert client.get("/patients", params={"LName": "Smith", "Birthdate": "1999-01-01"}).json() == []
        assert client.get("/patients", params={"Birthdate": "1990-13-01"}).status_code == 400
        assert client.get("/patients").status_code == 400

        adjustment = client.post(
            "/adjustments",
            json={
                "PatNum": pat_num,
                "AdjType": 1,
                "AdjAmt": -2.5,
                "AdjDate": "2024-03-01",
                "Note": "ignored",
            },
        )
        assert adjustment.status_code == 201
        made = adjustment.json()
        assert made["AdjAmt"] == -2.5 and type(made["AdjAmt"]) is float  # a JSON number, unlike PayAmt
        assert made["AdjNote"] == "" and made["adjType"] == "Misc Neg Adjustment"  # "Note" is ignored (§9.6)
        wrong_sign = client.post(
            "/adjustments", json={"PatNum": pat_num, "AdjType": 2, "AdjAmt": -1, "AdjDate": "2024-03-01"}
        )
        assert wrong_sign.status_code == 400
        listed = client.get("/adjustments", params={"PatNum": pat_num}).json()
        assert [(a["AdjNum"], a["AdjAmt"]) for a in listed] == [(made["AdjNum"], -2.5)]
        assert client.get("/adjustments", params={"PatNum": pat_num, "AdjType": 2}).json() == []
        assert client.get("/adjustments").status_code == 400
        assert client.get("/adjustments", params={"PatNum": 999999}).status_code == 404

        task = client.post(
            "/tasks",
            json={
                "TaskListNum": 1,
                "Descript": "Check payment",
                "UserNum": 1,
                "KeyNum": pat_num,
                "ObjectType": "Patient",
            },
        )
        assert task.status_code == 201
        assert task.json()["ObjectType"] == "Patient" and task.json()["TaskStatus"] == "New"

        commlog = client.post("/commlogs", json={"PatNum": pat_num, "Note": "Payment posted"})
        assert commlog.status_code == 201
        assert commlog.json()["CommType"] == "239" and commlog.json()["commType"] == "Misc"  # a string
        financial = client.post("/commlogs", json={"PatNum": pat_num, "Note": "x", "commType": "Financial"})
        assert financial.json()["CommType"] == "237"
    assert [c.note for c in office.commlogs(pat_num)] == ["Payment posted", "x"]
    assert office.integrity_problems() == []


# --- refusals -------------------------------------------------------------------------------------------


def test_refusals_carry_open_dentals_status_and_explanation(od_peer: OdPeerFactory) -> None:
    peer = od_peer()
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        cases: list[tuple[httpx.Response, int, str]] = [
            (client.post("/payments", json={"PatNum": pat_num}), 400, "PayAmt is required."),
            (client.post("/payments", json={"PayAmt": "5"}), 400, "PatNum is required."),
            (client.post("/payments", json={"PayAmt": "5", "PatNum": 99999}), 404, "Patient not found."),
            (
                client.post("/payments", json={"PayAmt": "1.005", "PatNum": pat_num}),
                400,
                "PayAmt is invalid.",
            ),
            (client.post("/payments/Refund", json={}), 400, "PayNum is required."),
            (client.post("/payments/Refund", json={"PayNum": 99999}), 404, "Payment not found."),
            (client.put("/payments/99999", json={"PayNote": "x"}), 404, "Payment not found."),
            (client.get("/patients/99999"), 404, "Patient not found."),
            (client.get("/payments", params={"PatNum": 99999}), 404, "Patient not found."),
            (client.post("/commlogs", json={"PatNum": pat_num}), 400, "Note is required."),
        ]
        for answer, status, message in cases:
            assert (answer.status_code, answer.json()) == (status, message), answer.request.url
        not_json = client.post("/payments", content=b"{PayAmt", headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400
        check = client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num, "CheckNum": "123"})
        assert check.status_code == 400 and "CheckNum" in check.json()  # accepted but not stored: refused
    assert peer.office.payments() == []
    assert peer.office.integrity_problems() == []


def test_missing_malformed_or_unknown_keys_are_refused_with_401(od_peer: OdPeerFactory) -> None:
    peer = od_peer(keys=[ApiKey(developer_key="dev", customer_key="office-1")])
    pat_num = peer.office.add_patient("Smith", "Jane")
    body = {"PayAmt": "5", "PatNum": pat_num}
    for headers in (
        {},
        {"Authorization": "Bearer dev/office-1"},
        {"Authorization": "ODFHIR dev"},
        {"Authorization": "ODFHIR dev/office-2"},
        {"Authorization": "ODFHIR other/office-1"},
    ):
        with api(peer, headers) as client:
            assert client.post("/payments", json=body).status_code == 401
    with api(peer, {"Authorization": "ODFHIR dev/office-1"}) as client:
        assert client.post("/payments", json=body).status_code == 201
    stats = peer.stats()
    assert stats["unauthorized"] == 5
    assert stats["requests"] == 1 and list(stats["by_key"]) == ["office-1"]
    assert len(peer.office.payments()) == 1


# --- throttling -----------------------------------------------------------------------------------------


def test_requests_faster_than_the_keys_rate_are_429_and_counted_as_violations(od_peer: OdPeerFactory) -> None:
    keys = [ApiKey(developer_key="dev", customer_key="slow", requests_per_second=2)]
    peer = od_peer(keys=keys, faults=Faults(retry_after_s=1))
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer, {"Authorization": "ODFHIR dev/slow"}) as client:
        answers = [client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 429, 429, 429]
    assert answers[1].headers["Retry-After"] == "1"
    stats = peer.stats()
    assert (stats["rate_limit_violations"], stats["throttled"], stats["requests"]) == (3, 3, 4)
    assert stats["by_key"]["slow"]["rate_limit_violations"] == 3
    assert len(peer.office.payments()) == 1  # a throttled request writes nothing
    assert peer.office.integrity_problems() == []


def test_requests_at_the_keys_rate_have_no_violations(od_peer: OdPeerFactory) -> None:
    keys = [
        ApiKey(developer_key="dev", customer_key=f"office-{n}", requests_per_second=5, user_num=1)
        for n in range(3)
    ]
    peer = od_peer(keys=keys)
    pat_num = peer.office.add_patient("Smith", "Jane")

    async def office_client(n: int) -> list[int]:
        headers = {"Authorization": f"ODFHIR dev/office-{n}"}
        codes: list[int] = []
        async with httpx.AsyncClient(base_url=peer.api_url, headers=headers) as client:
            next_send = time.monotonic()
            for _ in range(6):
                await asyncio.sleep(max(0.0, next_send - time.monotonic()))
                answer = await client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num})
                codes.append(answer.status_code)
                # The rate's 200 ms counted from the answer: the peer stamped the arrival before it answered,
                # so the next arrival is at least 200 ms later whatever the scheduling jitter (a send-time
                # pacer with a margin was not: it failed once under load).
                next_send = time.monotonic() + 0.2
        return codes

    async def all_offices() -> list[list[int]]:
        return await asyncio.gather(*(office_client(n) for n in range(3)))

    assert asyncio.run(all_offices()) == [[201] * 6] * 3
    stats = peer.stats()
    assert (stats["rate_limit_violations"], stats["throttled"], stats["requests"]) == (0, 0, 18)
    assert peer.office.integrity_problems() == []


def test_an_injected_429_storm_is_throttled_but_never_a_violation(od_peer: OdPeerFactory) -> None:
    keys = [ApiKey(developer_key="dev", customer_key="office", requests_per_second=20)]
    peer = od_peer(keys=keys, faults=Faults(throttle_rate=1.0, retry_after_s=0.25, seed=1))
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer, {"Authorization": "ODFHIR dev/office"}) as client:
        for _ in range(3):
            answer = client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num})
            assert answer.status_code == 429 and answer.headers["Retry-After"] == "0.25"
            time.sleep(0.25)  # what Retry-After asks for, well above the key's 50 ms
    stats = peer.stats()
    assert (stats["throttled"], stats["rate_limit_violations"]) == (3, 0)
    assert peer.office.payments() == []


def test_throttle_verdicts_forgive_jitter_up_to_the_tolerance() -> None:
    throttle = Throttle(tolerance_s=0.02)
    assert throttle.admit("k", 1.0, 100.0)  # a key's first request
    assert throttle.admit("k", 1.0, 100.985)  # 15 ms early: jitter
    assert not throttle.admit("k", 1.0, 101.95)  # 35 ms early
    assert not throttle.admit("k", 1.0, 102.5)  # measured from the refused request before it
    assert throttle.admit("k", 1.0, 103.5)
    assert throttle.admit("other", 1.0, 103.5)  # keys are independent
    assert all(throttle.admit("free", None, 104.0) for _ in range(5))  # no rate: never a violation


# --- faults ---------------------------------------------------------------------------------------------


def test_injected_503s_write_nothing_and_are_counted(od_peer: OdPeerFactory) -> None:
    peer = od_peer(faults=Faults(error_rate=1.0))
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        assert [
            client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}).status_code for _ in range(3)
        ] == [503] * 3
    assert peer.stats()["errors"] == 3
    assert peer.office.payments() == []


def test_fault_draws_repeat_for_a_seed() -> None:
    def draws(seed: int) -> list[bool]:
        faults = FaultInjector(Faults(error_rate=0.5, seed=seed))
        return [faults.error() for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_a_dropped_connection_after_commit_is_a_transport_error_and_the_payment_exists(
    od_peer: OdPeerFactory, od_backend: str
) -> None:
    peer = od_peer(od_backend, faults=Faults(drop_after_commit_rate=1.0, seed=3))
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/payments", json={"PayAmt": "42.10", "PatNum": pat_num, "PayNote": "[wb:pi_9]"})
        refused = client.post("/payments", json={"PayAmt": "1", "PatNum": 99999})
        assert refused.status_code == 404  # nothing committed: answered normally
    (written,) = peer.office.payments()
    assert (amount_text(written.pay_amt), written.pay_note) == ("42.1", "[wb:pi_9]")
    assert peer.stats()["dropped"] == 1
    assert peer.office.integrity_problems() == []


def test_latency_delays_each_request_without_serializing_them(od_peer: OdPeerFactory) -> None:
    peer = od_peer(faults=Faults(latency_ms=300))
    pat_num = peer.office.add_patient("Smith", "Jane")

    async def burst() -> tuple[float, list[int]]:
        async with httpx.AsyncClient(base_url=peer.api_url, headers=AUTH) as client:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}) for _ in range(10))
            )
            return time.monotonic() - started, [a.status_code for a in answers]

    elapsed, codes = asyncio.run(burst())
    assert codes == [201] * 10
    assert 0.3 <= elapsed < 1.5  # ten requests of 300 ms each, served side by side


def test_fault_knobs_change_at_run_time_and_stats_reset(od_peer: OdPeerFactory) -> None:
    peer = od_peer()
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        assert client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}).status_code == 201
        peer.set_faults(Faults(error_rate=1.0))
        assert httpx.get(peer.base_url + "/_peer/faults").json()["error_rate"] == 1.0
        assert client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}).status_code == 503
        assert (peer.stats()["requests"], peer.stats()["errors"]) == (2, 1)
        peer.reset_stats()
        assert peer.stats()["requests"] == 0 and peer.stats()["by_key"] == {}
        peer.set_faults(Faults())
        assert client.post("/payments", json={"PayAmt": "5", "PatNum": pat_num}).status_code == 201
    assert httpx.put(peer.base_url + "/_peer/faults", json={"error_rate": 2}).status_code == 422
    assert peer.office.integrity_problems() == []


def test_concurrent_payments_each_get_their_own_answer_and_are_written_once(
    od_peer: OdPeerFactory, od_backend: str
) -> None:
    peer = od_peer(od_backend)
    pat_nums = [peer.office.add_patient("Smith", f"Pat{n}") for n in range(5)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=peer.api_url, headers=AUTH, timeout=30) as client:
            bodies = [
                {
                    "PayAmt": f"{n + 1}.25",
                    "PatNum": pat_nums[n % 5] if n % 10 else 99999,
                    "PayNote": f"[wb:{n}]",
                }
                for n in range(60)
            ]
            return await asyncio.gather(*(client.post("/payments", json=body) for body in bodies))

    answers = asyncio.run(burst())
    for n, answer in enumerate(answers):
        if n % 10 == 0:
            assert (answer.status_code, answer.json()) == (404, "Patient not found.")
        else:
            assert answer.status_code == 201
            assert (answer.json()["PayAmt"], answer.json()["PayNote"]) == (f"{n + 1}.25", f"[wb:{n}]")
    pay_nums = [a.json()["PayNum"] for a in answers if a.status_code == 201]
    assert len(set(pay_nums)) == 54
    assert sorted(p.pay_num for p in peer.office.payments()) == sorted(pay_nums)
    assert peer.office.integrity_problems() == []


@pytest.mark.mariadb
def test_payments_and_refunds_on_an_office_without_transactions(od_peer: OdPeerFactory) -> None:
    peer = od_peer("mariadb", storage_engine="MyISAM")
    pat_num = peer.office.add_patient("Smith", "Jane")
    with api(peer) as client:
        paid = client.post("/payments", json={"PayAmt": "10.01", "PatNum": pat_num})
        assert paid.status_code == 201
        assert client.post("/payments/Refund", json={"PayNum": paid.json()["PayNum"]}).status_code == 201
    assert [amount_text(p.pay_amt) for p in peer.office.payments()] == ["10.01", "-10.01"]
    assert peer.office.integrity_problems() == []


def test_the_peer_runs_in_its_own_process_for_benchmarks(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'opendental.db'}"
    office = OpenDentalOffice.open(url, create=True)
    try:
        pat_num = office.add_patient("Smith", "Jane")
        with running_peer_process(PeerConfig(database_url=url)) as base_url:
            answer = httpx.post(
                f"{base_url}/api/v1/payments", json={"PayAmt": "5", "PatNum": pat_num}, headers=AUTH
            )
            assert answer.status_code == 201
            assert httpx.get(f"{base_url}/_peer/stats").json()["requests"] == 1
        assert [p.pay_num for p in office.payments()] == [answer.json()["PayNum"]]
    finally:
        office.close()
