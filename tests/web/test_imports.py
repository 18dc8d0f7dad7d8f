"""Import patients: uploading a PMS export, its progress, its Import Results with each rejected row, and the
uploads that are refused without recording anything."""

from __future__ import annotations

import http.client
import re
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.web.conftest import Dashboard, shoot, sign_in

# Spreadsheet rows 4, 7 and 9 are bad: a birth date nobody can read, no name at all, and the account number
# of the demo's patient P-1001.
BAD_ROWS = {
    4: ("birth_date", "unreadable date"),
    7: ("last_name", "no name"),
    9: ("account_number", "already belongs to another patient (P-1001)"),
}


def export_with_bad_rows(patients: int = 12) -> bytes:
    """A generic export: rows 2 to 13 are active patients (three of them bad), any further rows inactive ones
    (the demo practice's capacity of patients would refuse thousands of new ones)."""
    lines = ["patient_id,first_name,last_name,birth_date,email,account_number,status"]
    for row in range(2, patients + 2):
        first, last, birth, account = "Ana", f"Ruiz{row}", "1980-02-03", str(5000 + row)
        if row == 4:
            birth = "yesterday-ish"
        if row == 7:
            first = last = ""
        if row == 9:
            account = "1"
        status = "active" if row <= 13 else "inactive"
        lines.append(f"W-{row},{first},{last},{birth},ana{row}@example.com,{account},{status}")
    return ("\r\n".join(lines) + "\r\n").encode()


def upload(
    client: httpx.Client, name: str, content: bytes, media_type: str = "text/csv", **form: str
) -> httpx.Response:
    data = {"csrf_token": client.csrf, "preset": "generic", **form}  # type: ignore[attr-defined]
    return client.post("/imports", data=data, files={"file": (name, content, media_type)})


def field_error(html: str, name: str = "file") -> str:
    found = re.search(rf'<p class="field-error" id="f-{name}-error">([^<]*)</p>', html)
    assert found, f"no error next to {name}"
    return found.group(1)


def finished(client: httpx.Client, url: str) -> str:
    """The progress fragment once the import has ended."""
    for _ in range(300):
        fragment = client.get(f"{url}/progress").text
        if "data-refresh-url" not in fragment:
            return fragment
        time.sleep(0.1)
    raise AssertionError(f"{url} still running")


def import_ids(client: httpx.Client) -> list[str]:
    return re.findall(r'<th scope="row"><a href="/imports/(\d+)">', client.get("/imports").text)


def test_upload_with_bad_rows_ends_with_each_rejected_row_its_column_and_reason(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    before = import_ids(signed_in)
    answer = upload(signed_in, "march-export.csv", export_with_bad_rows())
    assert answer.status_code == 303, answer.text
    url = answer.headers["location"]
    assert re.fullmatch(r"/imports/\d+", url)

    fragment = finished(signed_in, url)
    assert 'role="status"' in fragment and "<progress" in fragment
    assert "12 of 12 rows processed" in fragment
    summary = signed_in.get(url).text
    counts = dict(re.findall(r"<dt>(\w+)</dt><dd>(\d+)</dd>", summary))
    assert counts == {"Created": "9", "Updated": "0", "Skipped": "0", "Rejected": "3"}
    assert "Import Results: march-export.csv" in summary and "Rejected rows (3)" in summary

    rejected = signed_in.get(f"{url}/rejected").text
    rows = re.findall(
        r'<tr><th scope="row" class="num">(\d+)</th><td>([^<]*)</td><td>([^<]*)</td></tr>', rejected
    )
    assert [(int(row), column) for row, column, _ in rows] == [(r, c) for r, (c, _) in BAD_ROWS.items()]
    for (_, _, reason), (_, words) in zip(rows, BAD_ROWS.values(), strict=True):
        assert words in reason

    # The same import the API sees, listed with the others, audited under the user's name.
    assert import_ids(signed_in) == [url.rsplit("/", 1)[1], *before]
    with closing(dashboard.sign_in_client("admin")) as admin:
        audit = admin.get("/audit", params={"actor": "user frontdesk"}).text
    assert "Patient file uploaded" in audit and "Patient import finished" in audit

    # Importing the corrected file again updates the same patients instead of adding them twice.
    fixed = export_with_bad_rows().replace(b"yesterday-ish", b"1980-02-03")
    again = upload(signed_in, "march-export.csv", fixed).headers["location"]
    finished(signed_in, again)
    counts = dict(re.findall(r"<dt>(\w+)</dt><dd>(\d+)</dd>", signed_in.get(again).text))
    assert (counts["Created"], counts["Updated"], counts["Rejected"]) == ("1", "9", "2")
    assert list((dashboard.data_dir / "uploads").iterdir()) == []


def test_bad_uploads_get_an_error_next_to_the_file_and_record_nothing(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    before = import_ids(signed_in)
    answers = {
        "empty": upload(signed_in, "empty.csv", b""),
        "picture": upload(signed_in, "scan.png", b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        "workbook": upload(signed_in, "patients.xlsx", b"PK\x03\x04rest", "application/octet-stream"),
        "columns": upload(signed_in, "list.csv", b"email,phone\r\na@b.example,555\r\n"),
        "header only": upload(signed_in, "list.csv", b"patient_id,first_name,last_name\r\n"),
        "od columns": upload(signed_in, "od.csv", b"LName,FName\r\nRuiz,Ana\r\n", preset="opendental"),
    }
    messages = {name: field_error(answer.text) for name, answer in answers.items()}
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(answers, 400)
    assert "empty" in messages["empty"]
    assert "scan.png is not a CSV file" in messages["picture"]
    assert "Excel workbook" in messages["workbook"]
    assert "no name column" in messages["columns"] and "columns found: email, phone" in messages["columns"]
    assert "no patients" in messages["header only"]
    assert "PatNum" in messages["od columns"]
    assert 'aria-invalid="true" aria-describedby="f-file-help f-file-error"' in answers["empty"].text

    no_file = signed_in.post("/imports", data={"csrf_token": signed_in.csrf, "preset": "generic"})  # type: ignore[attr-defined]
    assert no_file.status_code == 400 and "Choose the CSV file" in field_error(no_file.text)
    unknown = upload(signed_in, "x.csv", export_with_bad_rows(), preset="dentrix")
    assert unknown.status_code == 400 and "Unknown preset" in field_error(unknown.text, "preset")
    forged = signed_in.post(
        "/imports",
        data={"csrf_token": "forged", "preset": "generic"},
        files={"file": ("a.csv", export_with_bad_rows())},
    )
    assert forged.status_code == 403

    assert import_ids(signed_in) == before
    assert list((dashboard.data_dir / "uploads").iterdir()) == []


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    signed_in: httpx.Client, dashboard: Dashboard
) -> None:
    """The browser announces the size; the page answers at once instead of receiving half a gigabyte."""
    place = urlsplit(dashboard.url)
    connection = http.client.HTTPConnection(place.hostname or "", place.port, timeout=30)
    cookie = "; ".join(f"{name}={value}" for name, value in signed_in.cookies.items())
    connection.putrequest("POST", "/imports")
    for name, value in {
        "Content-Type": "multipart/form-data; boundary=xyz",
        "Content-Length": str(600 * 1024 * 1024),
        "Cookie": cookie,
        "Accept": "text/html",
    }.items():
        connection.putheader(name, value)
    connection.endheaders(b"--xyz\r\n")
    answer = connection.getresponse()
    html = answer.read().decode()
    connection.close()
    assert answer.status == 413
    assert "larger than 512 MiB" in field_error(html)


def test_the_sample_file_the_page_offers_imports_without_a_rejection(signed_in: httpx.Client) -> None:
    page = signed_in.get("/imports").text
    assert 'href="/imports/sample.csv?preset=generic" download' in page
    assert 'href="/imports/sample.csv?preset=opendental" download' in page
    for preset in ("generic", "opendental"):
        sample = signed_in.get("/imports/sample.csv", params={"preset": preset})
        assert sample.headers["content-type"].startswith("text/csv")
        assert f"ledgerlink-patients-{preset}.csv" in sample.headers["content-disposition"]
        url = upload(signed_in, f"sample-{preset}.csv", sample.content, preset=preset).headers["location"]
        assert "3 of 3 rows processed" in finished(signed_in, url)
        assert "Rejected rows (0)" in signed_in.get(url).text


def test_importing_needs_the_import_patients_privilege(dashboard: Dashboard) -> None:
    dashboard.cli("users", "add", "viewer", "--privilege", "view_reports")
    dashboard.cli("users", "set-password", "viewer", "--password-stdin", input="viewer-password-1\n")
    with closing(dashboard.sign_in_client("viewer", "viewer-password-1")) as viewer:
        assert viewer.get("/imports").status_code == 403
        assert "import patients" in viewer.get("/imports").text
        assert upload(viewer, "a.csv", export_with_bad_rows()).status_code == 403
        assert viewer.get("/imports/1").status_code == 403
        assert 'href="/imports"' not in viewer.get("/account").text


def test_another_practices_import_is_not_found(
    signed_in: httpx.Client, dashboard: Dashboard, tmp_path: Path
) -> None:
    dashboard.cli("practice", "create", "other", "--name", "Other Dental", "--timezone", "America/Chicago")
    dashboard.cli("connection", "add", "--practice", "other", "--kind", "pull")
    export = tmp_path / "other.csv"
    export.write_bytes(export_with_bad_rows(3))
    dashboard.cli("patients", "import", str(export), "--practice", "other", expect=5)  # 5: rows were rejected
    theirs = max(int(i) for i in import_ids(signed_in)) + 1  # the import just made belongs to "other"
    for url in (f"/imports/{theirs}", f"/imports/{theirs}/rejected", f"/imports/{theirs}/progress"):
        answer = signed_in.get(url)
        assert answer.status_code == 404 and "another practice" in answer.text, url
    assert signed_in.get("/imports/987654").status_code == 404
    assert str(theirs) not in import_ids(signed_in)


def test_import_with_bad_rows_in_the_browser(page: Any, dashboard: Dashboard) -> None:
    page.goto(dashboard.url + "/imports")
    sign_in(page, dashboard)
    page.get_by_role("heading", name="Import patients").wait_for()
    shoot(page, "import")
    page.get_by_label("Patient file (CSV)").set_input_files(
        files=[{"name": "march-export.csv", "mimeType": "text/csv", "buffer": export_with_bad_rows(40_000)}]
    )
    page.get_by_label("Skip inactive patients").check()
    page.get_by_role("button", name="Upload and import").click()
    page.get_by_role("heading", name="Import Results: march-export.csv").wait_for()
    status = page.locator("#import-summary")
    status.get_by_text("Finished: 40,000 of 40,000 rows processed.").wait_for(timeout=60_000)
    assert status.get_attribute("role") == "status"
    assert status.locator("dd").all_inner_texts() == [
        "9",
        "0",
        "39,988",
        "3",
    ]  # created, updated, skipped, rejected
    page.get_by_role("link", name="Rejected rows (3)").wait_for()
    page.get_by_role("link", name="Rejected rows (3)").click()
    rows = page.locator("table tbody tr")
    assert rows.count() == 3
    for index, (row, (column, words)) in enumerate(BAD_ROWS.items()):
        cells = rows.nth(index).locator("th, td").all_inner_texts()
        assert cells[0] == str(row) and cells[1] == column and words in cells[2]
    shoot(page, "import-results")
