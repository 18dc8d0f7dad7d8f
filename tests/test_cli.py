"""The `ledgerlink` command end to end: the real executable in a subprocess, on a fresh data directory."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).with_name("ledgerlink"))


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.env = {**os.environ, "LEDGERLINK_DATA_DIR": str(data_dir), "COLUMNS": "250"}
        self.env.pop("LEDGERLINK_DATABASE_URL", None)
        self.data_dir = data_dir

    def __call__(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [EXE, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == expect, (
            f"`ledgerlink {' '.join(args)}` exited {result.returncode}, expected {expect}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "data")


def report_lines(cli: Cli, *args: str) -> dict[str, tuple[int, str]]:
    body = json.loads(cli("report", "--format", "json", *args).stdout)
    return {line["category"]: (line["count"], line["total"]) for line in body["lines"]}


def failed_ids(cli: Cli) -> list[str]:
    table = cli("writebacks", "list", "--status", "failed").stdout
    return re.findall(r"^│\s*(\d+)\s*│", table, flags=re.MULTILINE)


def test_demo_then_fix_retry_and_sync_again(cli: Cli) -> None:
    demo = cli("demo")
    assert "Sync report" in demo.stdout and "Try next" in demo.stdout
    first = report_lines(cli)
    assert first["invalid_patient_id"][0] == 4
    assert first["sales"][0] > 0 and first["recurring"][0] > 0
    assert first["refunds"][0] == 2 and first["voids"][0] == 1 and first["chargebacks"][0] == 1
    assert first["declined"][0] > 0 and first["in_error"][0] == 1

    sandbox = sqlite3.connect(cli.data_dir / "sandbox" / "demo-pms.db")
    payments_before = sandbox.execute("SELECT COUNT(*) FROM payment").fetchone()[0]

    cli("patients", "set-account", "P-1037", "37")
    cli("patients", "set-account", "P-1040", "40")
    ids = failed_ids(cli)
    assert len(ids) == 5
    cli("writebacks", "retry", *ids)
    cli("sync", expect=5)  # two patients still have no number, one refund has no original: exit 5

    second = report_lines(cli)
    assert second["sales"][0] == 2  # P-1037 and P-1040 posted now
    assert second["already_processed"][0] > 0
    assert second["invalid_patient_id"][0] == 2
    payments_after = sandbox.execute("SELECT COUNT(*) FROM payment").fetchone()[0]
    assert payments_after == payments_before + 2

    # Running again posts nothing new: everything is Already Processed or still waiting for a person.
    cli("sync", expect=5)
    assert sandbox.execute("SELECT COUNT(*) FROM payment").fetchone()[0] == payments_after
    third = report_lines(cli)
    assert third["sales"][0] == 0 and third["already_processed"][0] == second["already_processed"][0] + 2

    # Clear the refund of an unknown payment: reviewed and posted by hand.
    refund_id = failed_ids(cli)[-1]
    assert "ok" in cli("writebacks", "clear", refund_id).stdout
    assert refund_id not in failed_ids(cli)


def test_dry_run_writes_nothing(cli: Cli, tmp_path: Path) -> None:
    cli("practice", "create", "smile", "--timezone", "America/Denver")
    cli("connection", "add", "--setting", "path=smile.db")
    txns = tmp_path / "t.csv"
    txns.write_text(
        "reference,time,kind,payment_type,gross,fee,patient_id\n"
        "ch_1,2026-11-20T10:00:00-07:00,sale,terminal,50.00,1.75,P-1\n"
    )
    cli("transactions", "import", str(txns))
    result = cli("sync", "--dry-run", "--format", "json", "--since", "2026-11-01")
    lines = {line["category"]: line["count"] for line in json.loads(result.stdout)["lines"]}
    assert lines["invalid_patient_id"] == 1
    runs = cli("runs").stdout.strip()
    assert runs == ""
    assert "Writebacks (0)" in cli("writebacks", "list").stdout  # not even enrolled: the dry run kept nothing
    sandbox = sqlite3.connect(cli.data_dir / "sandbox" / "smile.db")
    assert sandbox.execute("SELECT COUNT(*) FROM payment").fetchone()[0] == 0


def test_report_csv_is_machine_readable(cli: Cli) -> None:
    cli("demo")
    csv_text = cli("report", "--format", "csv").stdout
    header, *rows = csv_text.strip().splitlines()
    assert header == "category,label,count,total"
    assert any(row.startswith("sales,Sales,") for row in rows)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("practice", "create", "Bad Slug!"), 2, "lower-case letters"),
        (("practice", "create", "ok", "--timezone", "Mars/Base"), 2, "unknown time zone"),
        (("sync", "--practice", "nope"), 3, "no practice with id 'nope'"),
        (("report", "--since", "2026-13-01"), 2, "is not a date"),
        (("connection", "add", "--kind", "dentrix"), 2, "unknown connector"),
        (("connection", "add", "--setting", "latency_ms=-5"), 2, "bad sandbox settings"),
        (("connection", "add", "--type", "cash=automatic"), 2, "bad payment type rule"),
    ],
)
def test_bad_input_gets_a_clear_message_and_exit_code(
    cli: Cli, args: tuple[str, ...], code: int, message: str
) -> None:
    if args[0] in ("sync", "report", "connection"):
        cli("practice", "create", "smile")
    if args[0] == "report":
        cli("connection", "add")
    result = cli(*args, expect=code)
    assert message in result.stderr


def test_duplicate_practice_is_a_conflict(cli: Cli) -> None:
    cli("practice", "create", "smile")
    assert "already exists" in cli("practice", "create", "smile", expect=4).stderr


def test_bad_transaction_file_imports_nothing_and_names_row_and_column(cli: Cli, tmp_path: Path) -> None:
    cli("practice", "create", "smile")
    cli("connection", "add")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "reference,time,kind,payment_type,gross,fee,patient_id\n"
        "ch_1,2026-11-20T10:00:00Z,sale,terminal,50.00,1.75,P-1\n"
        "ch_2,2026-11-20T10:05:00Z,sale,terminal,12.345,0,P-2\n"
    )
    result = cli("transactions", "import", str(bad), expect=5)
    assert "row 3, column gross" in result.stderr and "nothing imported" in result.stderr
    assert "Writebacks (0)" in cli("writebacks", "list").stdout


def test_retry_and_clear_answer_per_id(cli: Cli) -> None:
    cli("demo")
    result = cli("writebacks", "retry", "1", "99999", expect=5)
    assert "99999: no such writeback" in result.stdout
    assert "only failed writebacks can be retried" in result.stdout


def test_an_open_dental_connection_syncs_through_the_peer_served_by_the_cli(cli: Cli, tmp_path: Path) -> None:
    """`ledgerlink od-peer` serves Open Dental's API; `connection add --kind opendental` stores the keys
    sealed; a sync posts through the peer and the payment is in the peer's Open Dental database."""
    import socket
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    office_db = tmp_path / "od.db"
    peer = subprocess.Popen(
        [EXE, "od-peer", "--database-url", f"sqlite:///{office_db}", "--port", str(port)],
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                httpx.get(
                    f"{base}/definitions", params={"Category": 10}, headers={"Authorization": "ODFHIR d/c"}
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        from ledgerlink.opendental.office import OpenDentalOffice

        office = OpenDentalOffice.open(f"sqlite:///{office_db}")
        pat_num = office.add_patient("Doe", "Jane")
        cli("practice", "create", "smile", "--timezone", "UTC")
        cli(
            "connection", "add", "--kind", "opendental",
            "-s", f"base_url={base}", "-s", "developer_key=dev-key-1", "-s", "customer_key=cust-key-1",
            "-s", "requests_per_second=50", "-s", "payment_type_names={\"terminal\": \"Credit Card\"}",
        )  # fmt: skip
        stored = sqlite3.connect(cli.data_dir / "ledgerlink.db").execute("SELECT settings FROM connections")
        assert "cust-key-1" not in stored.fetchone()[0]  # sealed at rest
        (tmp_path / "p.csv").write_text(
            f"patient_id,first_name,last_name,account_number\np1,Jane,Doe,{pat_num}\n"
        )
        cli("patients", "import", str(tmp_path / "p.csv"))
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 60))  # the practice is on UTC
        (tmp_path / "t.csv").write_text(
            f"reference,time,kind,payment_type,gross,fee,patient_id\nch_1,{now},sale,terminal,100.00,3.00,p1\n"
        )
        cli("transactions", "import", str(tmp_path / "t.csv"))

        cli("sync")

        [payment] = office.payments(pat_num=pat_num)
        assert payment.amount_cents == 9700 and "[ll-wb-" in payment.pay_note
        assert office.integrity_problems() == []
        office.close()
    finally:
        peer.terminate()
        peer.wait(10)


def test_serve_takes_transactions_with_a_token_the_cli_issued_and_refuses_it_once_revoked(
    cli: Cli, tmp_path: Path
) -> None:
    """`ledgerlink serve` on a fresh data directory (initialised on start), `token create` shows the token
    once, the API stores a transaction with it, and after `token revoke` the same token gets 401."""
    import socket
    import time

    import httpx

    cli("practice", "create", "smile", "--timezone", "UTC")
    token = cli("token", "create", "--name", "payment platform").stdout.strip()
    assert token.startswith("ll_")
    prefix = token.split("_")[1]
    assert prefix in cli("token", "list").stdout and token not in cli("token", "list").stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [EXE, "serve", "--port", str(port)], env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/v1/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        sale = {"reference": "ch_1", "time": "2026-12-01T10:00:00Z", "kind": "sale", "payment_type": "terminal",
                "gross": "80.00", "patient_id": "p1"}  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{base}/v1/transactions", json=sale, headers=headers)
        assert answer.status_code == 201, answer.text
        cli("token", "revoke", prefix)
        refused = httpx.post(f"{base}/v1/transactions", json=sale, headers=headers)
        assert refused.status_code == 401
        assert cli("token", "revoke", "nosuch", expect=3).stderr.count("no token") == 1
    finally:
        server.terminate()
        server.wait(timeout=30)
    stored = sqlite3.connect(cli.data_dir / "ledgerlink.db").execute("SELECT processor_ref FROM transactions")
    assert [r[0] for r in stored] == ["ch_1"]
