"""Fixtures for tests that talk to the Open Dental API peer over real HTTP.

Use them from another test module with

    from tests.od_peer import od_backend_fixture, od_peer_fixture  # noqa: F401  (fixtures)

(The functions' names differ from the fixtures' names, `od_peer` and `od_backend`, so that test arguments
do not shadow the imports.)

`od_peer` is a factory: `od_peer(backend="sqlite" | "mariadb", **settings)` starts a peer (uvicorn on
127.0.0.1, an ephemeral port, a background thread) over a fresh Open Dental office and returns a
`RunningPeer` that unpacks as `(base_url, office, stats)`:

    base_url, office, stats = od_peer(keys=[ApiKey(...)], faults=Faults(latency_ms=50))
    pat_num = office.add_patient("Smith", "Jane")
    ...  # point the connector at base_url; Open Dental's API is under base_url + "/api/v1"
    assert stats()["rate_limit_violations"] == 0
    assert office.integrity_problems() == []

`settings` are `PeerConfig` fields (the database URL is the fixture's). The office is the peer's own (one
engine), open for set-up and inspection; every peer and office is closed when the test ends. On MariaDB the
database is conftest's `mariadb_url` (fresh per test, strict sql_mode), so MariaDB peers started in one
test share it. `od_backend` parametrizes a test over both databases, MariaDB marked `mariadb`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import httpx
import pytest

from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.opendental.peer import Faults, PeerConfig, create_app
from ledgerlink.serving import running_app


class StatsReader(Protocol):
    def __call__(self) -> dict[str, Any]: ...


class RunningPeer(NamedTuple):
    base_url: str  # http://127.0.0.1:PORT
    office: OpenDentalOffice
    stats: StatsReader

    @property
    def api_url(self) -> str:
        """Where Open Dental's API is: what a connector is configured with."""
        return self.base_url + "/api/v1"

    def set_faults(self, faults: Faults) -> None:
        httpx.put(self.base_url + "/_peer/faults", json=faults.model_dump()).raise_for_status()

    def reset_stats(self) -> None:
        httpx.post(self.base_url + "/_peer/reset-stats").raise_for_status()


class OdPeerFactory(Protocol):
    def __call__(self, backend: str = "sqlite", **settings: Any) -> RunningPeer: ...


@pytest.fixture(name="od_backend", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def od_backend_fixture(request: pytest.FixtureRequest) -> str:
    """The Open Dental database a test runs on: SQLite, then MariaDB."""
    return str(request.param)


@pytest.fixture(name="od_peer")
def od_peer_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OdPeerFactory]:
    numbers = itertools.count(1)
    with ExitStack() as stack:

        def start(backend: str = "sqlite", **settings: Any) -> RunningPeer:
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path / f'opendental-{next(numbers)}.db'}"
            elif backend == "mariadb":
                url = str(request.getfixturevalue("mariadb_url"))
            else:
                raise ValueError(f"no such Open Dental backend: {backend!r}")
            config = PeerConfig(database_url=url, **settings)
            office = OpenDentalOffice.open(url, create=True, storage_engine=config.storage_engine)
            stack.callback(office.close)  # runs after the server below has stopped
            base_url = stack.enter_context(running_app(create_app(config, office=office)))

            def stats() -> dict[str, Any]:
                answer = httpx.get(base_url + "/_peer/stats")
                answer.raise_for_status()
                document: dict[str, Any] = answer.json()
                return document

            return RunningPeer(base_url, office, stats)

        yield start
