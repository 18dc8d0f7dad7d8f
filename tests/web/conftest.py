"""Dashboard tests: a real `ledgerlink serve` process over the demo practice, driven by real clients.

`dashboard` runs `ledgerlink demo` in a fresh data directory (SQLite, the sandbox PMS: patients P-1037 and
P-1040 have Invalid Patient ID failures, P-1038's card was declined...), sets known passwords for its
`admin` and `frontdesk` users and starts `ledgerlink serve` on a free port. `signed_in` gives an httpx
client already signed in (for the fast, browser-less checks); `page` gives a Playwright page in Debian's
Chromium (installed by `scripts/install-browser`, which `make test` runs), for the journeys a person makes.
Browser tests skip with the reason when Chromium is absent, except under CI, where they fail.

Screenshots: `shoot(page, name)` writes docs/screenshots/NAME.png when LEDGERLINK_SCREENSHOTS is set to
that folder (`make screenshots`), and nothing otherwise, so a test run leaves the checkout unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledgerlink.connectors.sandbox import open_sandbox_office
from ledgerlink.opendental.office import OpenDentalOffice
from tests.conftest import service_missing

EXE = str(Path(sys.executable).with_name("ledgerlink"))
CHROMIUM = os.environ.get("LEDGERLINK_CHROMIUM", "/usr/bin/chromium")
# As the machine's notes advise: without the background-networking flags Chromium keeps dialling out.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PRACTICE = "demo"
PASSWORDS = {"admin": "admin-password-1", "frontdesk": "front-desk-password-1"}
TIMEZONE = "America/Chicago"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Dashboard:
    url: str
    data_dir: Path
    env: dict[str, str]
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str, input: str | None = None, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [EXE, *args], env=self.env, input=input, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == expect, f"ledgerlink {' '.join(args)}: {result.stdout}\n{result.stderr}"
        return result

    @contextmanager
    def worker(self) -> Iterator[subprocess.Popen[bytes]]:
        """A `ledgerlink worker` process on the same store (SQLite: it polls every 0.2 s)."""
        process = subprocess.Popen(
            [EXE, "worker", "--grace", "5"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)

    @contextmanager
    def office(self) -> Iterator[OpenDentalOffice]:
        """The demo's sandbox PMS, to check what really reached the ledger."""
        path = self.data_dir / "sandbox" / f"{PRACTICE}-pms.db"
        office = open_sandbox_office(f"sqlite:///{path}", TIMEZONE)
        try:
            yield office
        finally:
            office.close()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Accept": "text/html"}, timeout=30)

    def sign_in_client(self, username: str = "frontdesk", password: str | None = None) -> httpx.Client:
        """An httpx client signed in as `username` (its `csrf` attribute holds the session's CSRF token)."""
        client = self.client()
        page = client.get("/")
        token = re.search(r'name="sign_in_token" value="([^"]+)"', page.text)
        assert token, page.text
        answer = client.post(
            "/sign-in",
            data={
                "practice": PRACTICE,
                "username": username,
                "password": password or PASSWORDS[username],
                "sign_in_token": token.group(1),
            },
        )
        assert answer.status_code == 303, answer.text
        client.csrf = csrf_of(client.get("/account").text)  # type: ignore[attr-defined]
        return client


def post_form(client: httpx.Client, url: str, data: dict[str, Any]) -> httpx.Response:
    """POST a form with the signed-in client's CSRF token, as the page's own form would."""
    return client.post(url, data={"csrf_token": client.csrf, **data})  # type: ignore[attr-defined]


def error_next_to(html: str, field_id: str) -> str:
    """The error a re-rendered form shows next to the field `field_id` (the macros' `<id>-error`)."""
    found = re.search(rf'<p class="field-error" id="{re.escape(field_id)}-error">([^<]+)</p>', html)
    assert found, f"no error next to {field_id}"
    return found.group(1)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def _environment(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "LEDGERLINK_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("LEDGERLINK_DATABASE_URL", None)
    return env


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo practice with known passwords, made once; each test serves its own copy."""
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    board = Dashboard("", data_dir, _environment(data_dir))
    board.cli("demo")
    for username, password in PASSWORDS.items():
        board.cli("users", "set-password", username, "--password-stdin", input=password + "\n")
    return data_dir


def _start_dashboard(data_dir: Path) -> Dashboard:
    env = _environment(data_dir)
    port = _free_port()
    board = Dashboard(f"http://127.0.0.1:{port}", data_dir, env)
    server = subprocess.Popen(
        [EXE, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    board.children.append(server)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{board.url}/v1/health", timeout=2).status_code == 200:
                return board
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            err = server.stderr.read().decode() if server.stderr else ""
            raise RuntimeError(f"ledgerlink serve did not start: {err}")
        time.sleep(0.1)


@pytest.fixture
def dashboard(tmp_path: Path, demo_data: Path) -> Iterator[Dashboard]:
    """A fresh copy of the demo practice behind a real `ledgerlink serve` (one per test: tests change it)."""
    shutil.copytree(demo_data, tmp_path / "data")
    board = _start_dashboard(tmp_path / "data")
    try:
        yield board
    finally:
        for child in board.children:
            child.terminate()
            child.wait(timeout=30)


@pytest.fixture
def signed_in(dashboard: Dashboard) -> Iterator[httpx.Client]:
    client = dashboard.sign_in_client("frontdesk")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the whole session: Playwright's sync API keeps an event loop
    running in this thread while it is started, and async tests collected after it could not run theirs."""
    if not Path(CHROMIUM).exists():
        service_missing(
            "Chromium", f"no {CHROMIUM}; `make test` installs Debian's chromium (scripts/install-browser)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh browser context (laptop size, US English, the practice's time zone). Any script
    error or refused resource (a CSP violation, a 404 for an asset) fails the test."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 860}, locale="en-US", timezone_id=TIMEZONE, accept_downloads=True
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems: list[str] = []

    def on_console(message: Any) -> None:
        # A page answered 4xx on purpose (a refused sign-in is 401/403) makes Chromium log "Failed to load
        # resource"; failed subresources are caught by `on_response` below instead.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console error: {message.text}")

    def on_response(response: Any) -> None:
        if response.status >= 400 and response.request.resource_type != "document":
            problems.append(f"{response.status} for {response.request.resource_type} {response.url}")

    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", on_console)
    page.on("response", on_response)
    try:
        yield page
    finally:
        context.close()
    assert not problems, problems


def sign_in(
    page: Any, dashboard: Dashboard, username: str = "frontdesk", password: str | None = None
) -> None:
    """Sign in through the form, as a person would (labels find the fields). Stays on the sign-in page a
    redirect already showed, so its "next" (the page asked for) is kept."""
    if page.url.split("?")[0] != dashboard.url + "/":
        page.goto(dashboard.url + "/")
    page.get_by_label("Practice").fill(PRACTICE)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()


def shoot(page: Any, name: str, *, full_page: bool = True) -> None:
    folder = os.environ.get("LEDGERLINK_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)
