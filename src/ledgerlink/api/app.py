"""The FastAPI application: `create_app(url)` opens the store (migrating a new one) when it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from ledgerlink import __version__
from ledgerlink.api import errors, ingest, reports, writebacks
from ledgerlink.store.db import Database


class Health(BaseModel):
    status: str
    version: str


def create_app(database_url: str) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.db = await Database.open(database_url)
        try:
            yield
        finally:
            await app.state.db.close()

    app = FastAPI(
        title="ledgerlink",
        version=__version__,
        summary="Writes processed payments into practice-management ledgers, exactly once.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(ingest.router)
    app.include_router(writebacks.router)
    app.include_router(reports.router)

    @app.get("/v1/health", response_model=Health, tags=["service"], summary="Liveness")
    async def health() -> Health:
        return Health(status="ok", version=__version__)

    return app
