"""Syncs in a process of their own, so that crash tests can kill a sync for real.

Usage: python crash_worker.py DATABASE_URL CONNECTION_ID [CONNECTION_ID ...]

With several connections, their syncs run at once in one event loop (sharing their store transactions,
as a worker serving many offices does).

The connector is built from the connection's stored settings, so a test arms the sandbox's
`crash_after_writes` or `latency_ms` by writing them into `connections.settings` first. On success the
run's report is printed as one JSON object per connection, a line each (category -> [count, total_cents]),
and the exit code is 0.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ledgerlink.connectors.registry import open_connector
from ledgerlink.engine.sync import run_sync
from ledgerlink.store.db import Database
from ledgerlink.store.models import Connection


async def sync_once(url: str, connection_id: int) -> dict[str, list[int]]:
    """Run one sync and return its report as plain JSON-ready data."""
    db = await Database.open(url, migrate_schema=False)  # the test migrated it; the worker only syncs
    try:
        async with db.sessions() as session:
            connection = await session.get(Connection, connection_id)
            if connection is None:
                raise LookupError(f"connection {connection_id} does not exist")
        connector = open_connector(connection.kind, connection.settings, Path.cwd())
        try:
            outcome = await run_sync(db, connection_id, connector)
        finally:
            await connector.close()
    finally:
        await db.close()
    return {line.category.value: [line.count, line.total_cents] for line in outcome.report.lines}


async def sync_all(url: str, connection_ids: list[int]) -> list[dict[str, list[int]]]:
    return list(await asyncio.gather(*(sync_once(url, connection_id) for connection_id in connection_ids)))


def main(argv: list[str]) -> int:
    url, connection_ids = argv[1], [int(arg) for arg in argv[2:]]
    for report in asyncio.run(sync_all(url, connection_ids)):
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
