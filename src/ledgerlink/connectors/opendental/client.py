"""Open Dental's REST API over HTTP: authentication, exact pacing per key, retries, defensive parsing.

Three things here exist for exactly-once and for Open Dental's throttle:

- **Pacing.** Open Dental throttles each customer key (0.2, 1 or 2 requests a second by plan). Every request
  of a key goes through one `KeyPacer` per event loop (so connectors that share a key share it): requests
  of a key go one at a time, each at least `1/rate` after the previous one ended (monotonic clock), whether
  it was a lookup, a write, an alert or a retry.
- **Retries.** A request that cannot have been applied is retried here, within a short budget: a refused
  connection, a 429 (after its Retry-After) or a 503. A GET or a PUT (idempotent: PUT overwrites the note)
  is also retried after a timeout, a dropped connection or a 5xx. A POST is NOT: once its bytes may have
  reached Open Dental, a timeout, a dropped connection or a 500/502/504 raises `PmsOutcomeUnknown`, and the
  engine looks the write up before anything is posted again.
- **Parsing.** Open Dental answers with mixed shapes (research §9.2: PayAmt and ClinicNum as strings, PayNum
  and AdjAmt as numbers, booleans as "true"/"false", enums as names). JSON is read with decimals as
  `Decimal`, never float, and money is turned into integer cents only when it has at most two places.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import date
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any

import certifi
import httpx

from ledgerlink.clock import utcnow
from ledgerlink.connectors.base import PmsOutcomeUnknown, PmsRejected, PmsUnavailable
from ledgerlink.domain.errors import LoadErrorCode
from ledgerlink.domain.money import Cents, cents_to_decimal
from ledgerlink.log import get_logger

log = get_logger(__name__)

PAGE_SIZE = 100  # Open Dental pages lists at 100 (Limit/Offset)
MAX_PAGES = 50  # a list longer than 5,000 rows is not one patient's payments: stop rather than loop
ZERO_DATE = "0001-01-01"  # Open Dental's "no date"
_WHOLE = re.compile(r"^-?\d+$", re.ASCII)


class OdParseError(ValueError):
    """A value in an Open Dental answer that cannot be read as what it should be."""


class OdAnswer(Exception):
    """Open Dental answered with a 4xx other than 429: nothing was written. The caller maps it by context
    (a 404 on POST /payments is an unknown patient, on /payments/Refund an unknown payment)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


# --- parsing -----------------------------------------------------------------------------------------------


def read_json(text: str) -> Any:
    """JSON with every non-integer number read as `Decimal` (money never passes through a binary float)."""
    return json.loads(text, parse_float=Decimal)


def as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise OdParseError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    if isinstance(value, str) and _WHOLE.match(value.strip()):
        return int(value.strip())
    raise OdParseError(f"{value!r} is not a whole number")


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise OdParseError(f"{value!r} is not a boolean")


def as_cents(value: Any) -> Cents:
    """Open Dental money ("339", "-129.99", 25.0, 12) as integer cents; refuses more than two places."""
    if isinstance(value, bool):
        raise OdParseError(f"{value!r} is not an amount")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise OdParseError(f"{value!r} is not an amount") from None
    if not amount.is_finite():
        raise OdParseError(f"{value!r} is not an amount")
    cents = amount.scaleb(2)
    if cents != cents.to_integral_value():
        raise OdParseError(f"{value!r} has more than two decimal places")
    return int(cents)


def as_date(value: Any) -> date | None:
    """A "yyyy-MM-dd" date (a datetime's date part is accepted); None for Open Dental's 0001-01-01."""
    text = str(value or "").strip()[:10]
    if not text or text == ZERO_DATE:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise OdParseError(f"{value!r} is not a date") from None


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def dollars(cents: Cents) -> str:
    """Cents as the two-place decimal Open Dental takes: 9700 -> "97.00", -5000 -> "-50.00"."""
    return str(cents_to_decimal(cents))


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(raw) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def error_message(response: httpx.Response) -> str:
    """Open Dental's explanation from an error answer: a JSON string, an object with a message, or text."""
    text = response.text.strip()
    try:
        body = read_json(text) if text else None
    except ValueError:
        return text[:500] or response.reason_phrase
    if isinstance(body, str):
        return body.strip()[:500]
    if isinstance(body, dict):
        for key in ("message", "Message", "detail", "error", "Error"):
            if isinstance(body.get(key), str):
                return str(body[key]).strip()[:500]
    return text[:500] or response.reason_phrase


# --- pacing ------------------------------------------------------------------------------------------------


class KeyPacer:
    """Spaces the requests of one API key at least `interval` seconds apart, one request at a time.

    The spacing is counted from when the previous request *ended* (answered, or failed), not from when it
    was sent. Open Dental cannot have stamped a request's arrival later than it answered it, and the next
    request cannot arrive before it is sent, so two requests of a key arrive at least `interval` apart
    whatever the network or the server's own scheduling delays: exact by causality, with no tolerance to
    guess. (Counting from the send instead was measured to violate the peer's throttle when the server's
    loop was busy.) The price is the request's latency on top of each interval: a few milliseconds on an
    office network, about a tenth of the rate for the remote API's round trip at one request a second.
    Requests that never connected count too: spacing them costs little and keeps the rule simple.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._lock:
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                yield
            finally:
                self._next = max(self._next, time.monotonic() + self.interval)

    def hold_off(self, seconds: float) -> None:
        """No request of this key before `seconds` from now (a 429's Retry-After, a backoff)."""
        self._next = max(self._next, time.monotonic() + seconds)


_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, KeyPacer]] = (
    weakref.WeakKeyDictionary()
)


def pacer_for(key_id: str, requests_per_second: float) -> KeyPacer:
    """The pacer of a key (`key_id`: a hash of the keys, never the keys) in the running event loop, shared
    by every client of that key. If two connections of one key were given different rates, the slower one
    wins: Open Dental throttles the key, not the connection."""
    pacers = _PACERS.setdefault(asyncio.get_running_loop(), {})
    interval = 1.0 / requests_per_second
    pacer = pacers.get(key_id)
    if pacer is None:
        pacer = pacers[key_id] = KeyPacer(interval)
    pacer.interval = max(pacer.interval, interval)
    return pacer


# --- the client --------------------------------------------------------------------------------------------

# Nothing reached Open Dental: always safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# The request may have reached Open Dental and been applied.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every client in the process.

    httpx builds a context per client by default, reading the whole CA bundle each time (about 20 ms):
    a process serving 500 offices would spend 10 s of CPU on it before its first request.
    """
    return ssl.create_default_context(cafile=certifi.where())


class OpenDentalClient:
    """One office's view of Open Dental's API. Cheap to create: the HTTP client may be shared.

    `http`: an `httpx.AsyncClient` shared between many connectors (the benchmark runs 500 offices in one
    process); it is not closed by `close()`. Without one, the client makes its own and closes it.
    """

    def __init__(
        self,
        base_url: str,
        developer_key: str,
        customer_key: str,
        *,
        requests_per_second: float,
        timeout_s: float,
        http: httpx.AsyncClient | None = None,
        max_attempts: int = 4,
        retry_budget_s: float = 20.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._authorization = f"ODFHIR {developer_key}/{customer_key}"
        self._key_id = hashlib.sha256(f"{developer_key}/{customer_key}".encode()).hexdigest()
        self._rate = requests_per_second
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0))
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(verify=shared_tls_context())
        self.max_attempts = max_attempts
        self.retry_budget_s = retry_budget_s

    def __repr__(self) -> str:
        return f"OpenDentalClient({self.base_url!r})"  # never the keys

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self._call("GET", path, params=params, idempotent=True)

    async def get_list(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every row of a list, following Open Dental's pages of 100.

        Stops when a page is short, or when a page repeats the previous one (a server that ignores Offset).
        """
        rows: list[dict[str, Any]] = []
        previous_first: Any = None
        for page in range(MAX_PAGES):
            query = dict(params or {})
            if page:
                query["Offset"] = page * PAGE_SIZE
            body = await self.get(path, query)
            if not isinstance(body, list):
                raise OdParseError(f"GET {path} did not answer with a list")
            batch = [row for row in body if isinstance(row, dict)]
            if page and batch and batch[0] == previous_first:
                break
            rows.extend(batch)
            if len(body) < PAGE_SIZE:
                break
            previous_first = batch[0] if batch else None
        return rows

    async def post(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self._call("POST", path, body=body, idempotent=False)

    async def put(self, path: str, body: Mapping[str, Any]) -> Any:
        return await self._call("PUT", path, body=body, idempotent=True)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool,
    ) -> Any:
        pacer = pacer_for(self._key_id, self._rate)
        url = f"{self.base_url}/{path.lstrip('/')}"
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body)
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + self.retry_budget_s
        what = f"{method} /{path.lstrip('/').split('?')[0]}"
        problem = "no attempt was made"
        wait: float | None = None
        for attempt in range(1, self.max_attempts + 1):
            wait = None
            async with pacer.slot():
                try:
                    response = await self._http.request(
                        method,
                        url,
                        params=params,
                        content=content,
                        headers=headers,
                        timeout=self._timeout,
                    )
                except _NOT_SENT as exc:
                    problem = f"Open Dental could not be reached ({type(exc).__name__})"
                except _MAYBE_SENT as exc:
                    if not idempotent:
                        raise PmsOutcomeUnknown(
                            f"{what}: the connection failed after the request was sent "
                            f"({type(exc).__name__}); it may have been applied"
                        ) from None
                    problem = f"Open Dental did not answer ({type(exc).__name__})"
                except httpx.HTTPError as exc:  # anything else httpx raises: assume the worst for a POST
                    if not idempotent:
                        raise PmsOutcomeUnknown(
                            f"{what}: {type(exc).__name__}; it may have been applied"
                        ) from None
                    problem = f"Open Dental's answer could not be read ({type(exc).__name__})"
                else:
                    status = response.status_code
                    if status < 400:
                        return self._body(response, what, idempotent)
                    if status in (401, 403):
                        raise PmsRejected(
                            f"Open Dental refused the API keys ({status}): check the developer key and the "
                            "customer key, and that the office enabled this developer's API access",
                            LoadErrorCode.PMS_CONFIGURATION,
                        )
                    if status in (429, 503):  # refused before processing: nothing was applied
                        wait = _retry_after(response)
                        problem = (
                            f"Open Dental answered {status} ({'throttled' if status == 429 else 'busy'})"
                        )
                    elif status >= 500:
                        if not idempotent:
                            raise PmsOutcomeUnknown(
                                f"{what}: Open Dental answered {status} after the request was sent; "
                                "it may have been applied"
                            )
                        problem = f"Open Dental answered {status}"
                    else:
                        raise OdAnswer(status, error_message(response))
                backoff = wait if wait is not None else min(2.0 ** (attempt - 1) * pacer.interval, 10.0)
                pacer.hold_off(backoff)
            log.info("opendental.retry", request=what, attempt=attempt, problem=problem)
            if time.monotonic() + backoff > deadline:
                break
        raise PmsUnavailable(f"{what}: {problem}", retry_after=wait)

    @staticmethod
    def _body(response: httpx.Response, what: str, idempotent: bool) -> Any:
        """A success's JSON. One that cannot be read is a failure: of a read (nothing written), or of a
        write that Open Dental says it made but whose result is unknown."""
        text = response.text.strip()
        if not text:
            return None
        try:
            return read_json(text)
        except ValueError:
            problem = f"{what} answered {response.status_code} with something that is not JSON"
            if idempotent:
                raise PmsUnavailable(problem) from None
            raise PmsOutcomeUnknown(problem + "; it may have been applied") from None
