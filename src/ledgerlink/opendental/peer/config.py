"""CONTRACT: how the Open Dental API peer is configured, and what it serves besides Open Dental's API.

The peer is an ASGI app (FastAPI) that serves Open Dental's REST API (`/api/v1/...`, the paths, bodies,
status codes and messages Open Dental documents) over an `OpenDentalOffice`. Tests run it under uvicorn on
loopback; integrators run it with `ledgerlink od-peer --database-url ... --port ...`.

Besides Open Dental's API it serves `/_peer/...` for tests and benchmarks only:
- `GET /_peer/stats` -> {"requests": int, "rate_limit_violations": int, "throttled": int,
  "by_key": {customer_key: {"requests": int, "rate_limit_violations": int, "throttled": int}}}
  plus, at both levels, "errors" (injected 503s) and "dropped" (connections dropped after a commit), and at
  the top "unauthorized" (401s, which have no key). `requests` counts every authenticated API request.
- `PUT /_peer/faults` with a `Faults` body -> replaces the fault knobs at run time; `GET` reads them.
- `POST /_peer/reset-stats`.

Throttling: per customer key, a request that arrives less than 1/requests_per_second (minus
`rate_tolerance_ms`) after the previous request of that key is a *violation*: it is counted and answered
429. Every 429 (violation or injected storm) counts as *throttled*. A well-behaved client has zero
violations however many 429s it is sent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    """Misbehaviour on demand, applied to Open Dental API requests (never to `/_peer`)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)  # added to every request (asyncio.sleep, not blocking)
    error_rate: float = Field(default=0.0, ge=0, le=1)  # 503 before doing anything
    throttle_rate: float = Field(default=0.0, ge=0, le=1)  # 429 (a "429 storm") before doing anything
    retry_after_s: float | None = None  # Retry-After sent with 429s; None: none sent
    drop_after_commit_rate: float = Field(default=0.0, ge=0, le=1)  # write commits, then the connection drops
    seed: int | None = None


class ApiKey(BaseModel):
    """One customer key the peer accepts (with the developer key), and its plan's throttle."""

    model_config = ConfigDict(extra="forbid")

    developer_key: str
    customer_key: str
    requests_per_second: float | None = None  # None: unthrottled; Open Dental plans: 0.2, 1, 2
    user_num: int = 1  # the Open Dental user the key is bound to (SecUserNumEntry, securitylog)


class PeerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str  # `sqlite:///...` or `mysql+pymysql://...` (sync drivers: OpenDentalOffice)
    create_schema: bool = True
    keys: list[ApiKey] = Field(default_factory=list)  # empty: any well-formed ODFHIR header is accepted
    # With `keys` empty: the throttle every customer key gets (None: unthrottled).
    default_requests_per_second: float | None = Field(default=None, gt=0)
    faults: Faults = Field(default_factory=Faults)
    rate_tolerance_ms: float = 20.0  # arrival jitter forgiven before a request counts as a violation
    office_threads: int = Field(
        default=32, ge=1
    )  # threads running office calls (each may hold a DB connection)
    payment_writers: int = Field(
        default=4, ge=1
    )  # POST /payments transactions at once (concurrent ones group)
    storage_engine: str | None = None  # MariaDB only: "MyISAM" builds the tables as older offices have them
