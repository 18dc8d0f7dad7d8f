"""The FastAPI application: `create_app(url)` opens the store (migrating a new one) when it starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from ledgerlink import __version__
from ledgerlink.api import (
    audit_log,
    connections,
    errors,
    ingest,
    notifications,
    patient_imports,
    patients,
    people,
    practice_admin,
    pull,
    reports,
    stripe_webhook,
    syncs,
    writebacks,
)
from ledgerlink.engine import sync_now
from ledgerlink.store.db import Database


class Health(BaseModel):
    status: str
    version: str


# The route modules, in the order the OpenAPI document lists them.
ROUTERS = (
    ingest,
    stripe_webhook,
    writebacks,
    reports,
    syncs,
    practice_admin,
    connections,
    patients,
    patient_imports,
    people,
    notifications,
    audit_log,
    pull,
)


def create_app(database_url: str, data_dir: Path | None = None) -> FastAPI:
    """`data_dir` holds the installation's secret key (sealing webhook and PMS secrets); default: the
    configured data directory."""
    if data_dir is None:
        from ledgerlink.settings import get_settings

        data_dir = get_settings().data_dir

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = await Database.open(database_url)
        try:
            yield
        finally:
            # A patient import running in the background records itself as interrupted when cancelled.
            imports = list(getattr(app.state, "patient_import_tasks", ()))
            for task in imports:
                task.cancel()
            await asyncio.gather(*imports, return_exceptions=True)
            # A Sync now (dashboard or API) ends after the slice of writes in hand, recording what it wrote.
            await sync_now.stop_syncs(app.state)
            await app.state.db.close()

    app = FastAPI(
        title="ledgerlink",
        version=__version__,
        summary="Writes processed payments into practice-management ledgers, exactly once.",
        lifespan=lifespan,
    )
    app.state.data_dir = data_dir
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)

    from ledgerlink import web

    web.install(app)

    @app.get("/v1/health", response_model=Health, tags=["service"], summary="Liveness")
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    return app
