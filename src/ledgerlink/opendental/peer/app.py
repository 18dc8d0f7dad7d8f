"""The Open Dental API peer: Open Dental's REST API (`/api/v1/...`) served over an `OpenDentalOffice`.

ledgerlink's Open Dental connector is tested against this app under uvicorn on loopback, so what it sees
must be what a real office answers: Open Dental's paths, status codes, messages and JSON shapes
(serialize.py), its per-key throttle (throttle.py) and the failures a network adds (faults.py). What an
office does with a write (splits, allocation, validation) is `OpenDentalOffice`'s job, not this module's.

Layout of a request, and why:
- `OpenDentalGate`, a plain ASGI middleware, handles everything that is not one endpoint's business, in
  Open Dental's order: authentication (401), the throttle verdict taken on arrival (429, counted as a
  violation), then the injected faults (latency, 503, 429 storm) and, for writes, the dropped connection
  after the commit. It is plain ASGI rather than `BaseHTTPMiddleware` because it must abort a response it
  has already started, and because it runs on every request of a 500-requests-a-second benchmark.
- The Open Dental endpoints are plain Starlette routes taking a `Request`: the bodies are parsed the way
  Open Dental parses them (strings or numbers, "true"/"false"), which a Pydantic model would get wrong, and
  FastAPI's dependency and response-model machinery would only add per-request cost.
- Every office call runs in a worker thread (the office is synchronous), bounded by `office_threads`, so a
  slow database never blocks the event loop that keeps time for the throttle and the latency fault.
  Concurrent `POST /payments` are written together (`PaymentBatcher`), which is what lets one process
  on two cores take 500 payments a second.
- `/_peer/...` (stats, fault knobs) are ordinary FastAPI routes, outside the gate.

Validation follows Open Dental where it is documented ("PayAmt is required.", "Patient not found.").
Fields that Open Dental accepts but the office cannot store (CheckNum, an adjustment's ProvNum, ...) are
accepted only with the value Open Dental would store by default, and refused with a 400 naming the field
otherwise: a test double that silently dropped them would let a connector believe they were written.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledgerlink.opendental.money import CENT
from ledgerlink.opendental.office import (
    DEF_CAT_ADJ_TYPES,
    DEF_CAT_COMMLOG_TYPES,
    DEF_CAT_PAYMENT_TYPES,
    NewOdPayment,
    OdBadRequest,
    OdDefinition,
    OdError,
    OdNotFound,
    OpenDentalOffice,
)
from ledgerlink.opendental.peer import serialize
from ledgerlink.opendental.peer.config import ApiKey, Faults, PeerConfig
from ledgerlink.opendental.peer.faults import (
    DroppedConnection,
    FaultInjector,
    hide_deliberate_drops_from_logs,
)
from ledgerlink.opendental.peer.serialize import JsonObject, JsonValue
from ledgerlink.opendental.peer.throttle import PeerStats, Throttle

API_PREFIX = "/api/v1"
PAGE_LIMIT = 100  # Open Dental's remote API returns at most 100 items per list request

# The commlog enums' documented input names (Commlogs POST), mapped to the stored numbers.
COMM_MODES = {
    "None": 0,
    "Email": 1,
    "Mail": 2,
    "Phone": 3,
    "In Person": 4,
    "Text": 5,
    "Email and Text": 6,
    "Phone and Text": 7,
}
SENT_OR_RECEIVED = {"Neither": 0, "Sent": 1, "Received": 2}

_API_KEY_SCOPE = "ledgerlink.od_api_key"  # where the gate leaves the authenticated key for the endpoints
_JSON = "application/json"
_T = TypeVar("_T")


class ApiError(Exception):
    """An answer the API gives before the office is asked (a missing or malformed field)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def _not_supported(field: str) -> ApiError:
    return ApiError(400, f"{field} is not supported by this Open Dental peer (only its default value).")


def json_response(
    status_code: int, document: JsonValue, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(serialize.dumps(document), status_code=status_code, headers=headers, media_type=_JSON)


def error_response(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """Open Dental answers a refusal "with explanation": the explanation is the body, a JSON string."""
    return json_response(status_code, message, headers)


# --- reading Open Dental's loosely typed input ---------------------------------------------------------

_INTEGER = re.compile(r"-?\d{1,18}")
_AMOUNT = re.compile(r"-?\d{1,12}(?:\.\d+)?")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def parse_integer(value: object, name: str) -> int:
    """A key or number sent as a JSON number or as a string of digits, as Open Dental accepts both."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    raise _bad_request(f"{name} is invalid.")


def parse_amount(value: object, name: str) -> Decimal:
    """Money sent as a JSON number (read as `Decimal`, never float) or a string; exact to the cent.

    Open Dental would store a third decimal in its double; the peer refuses it, because a connector that
    sends one has a bug that a silently rounded ledger would hide.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str) and _AMOUNT.fullmatch(value.strip()):
        amount = Decimal(value.strip())
    else:
        raise _bad_request(f"{name} is invalid.")
    try:
        exact = amount.quantize(CENT)
    except InvalidOperation as exc:  # NaN, infinity or a number too large to hold cents
        raise _bad_request(f"{name} is invalid.") from exc
    if exact != amount or abs(exact) >= Decimal(10) ** 11:
        raise _bad_request(f"{name} is invalid.")
    return exact


def parse_date(value: object, name: str) -> date:
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise _bad_request(f"{name} is not a valid date. Use yyyy-MM-dd.")


def parse_date_time(value: object, name: str) -> datetime:
    if isinstance(value, str) and _DATE_TIME.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise _bad_request(f"{name} is not a valid date and time. Use yyyy-MM-dd HH:mm:ss.")


def parse_choice(value: object, name: str, choices: Mapping[str, int]) -> int:
    """One of an enum's documented names (stored as its number)."""
    if isinstance(value, str) and value in choices:
        return choices[value]
    raise _bad_request(f"{name} must be one of: " + ", ".join(f'"{choice}"' for choice in choices) + ".")


def parse_flag(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _bad_request(f"{name} must be true or false.")


def parse_text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    raise _bad_request(f"{name} is invalid.")


class Body:
    """A request's JSON object, read field by field with Open Dental's messages."""

    def __init__(self, fields: Mapping[str, object]) -> None:
        self.fields = fields

    def __contains__(self, name: str) -> bool:
        return self.fields.get(name) is not None

    def required(self, name: str) -> object:
        value = self.fields.get(name)
        if value is None or value == "":
            raise _bad_request(f"{name} is required.")
        return value

    def integer(self, name: str) -> int:
        return parse_integer(self.required(name), name)

    def optional_integer(self, name: str) -> int | None:
        return parse_integer(self.fields[name], name) if name in self else None

    def text(self, name: str, default: str = "") -> str:
        return parse_text(self.fields[name], name) if name in self else default

    def only_default(self, name: str, default: object, parse: Callable[[object, str], object]) -> None:
        """Accept a field the office cannot store only when it holds the value Open Dental stores anyway."""
        if name in self and parse(self.fields[name], name) != default:
            raise _not_supported(name)


async def read_body(request: Request) -> Body:
    try:
        raw = await request.body()
    except ClientDisconnect as exc:  # nobody to answer; not a server error worth a traceback
        raise ApiError(400, "The client disconnected before sending its body.") from exc
    if not raw.strip():
        return Body({})
    try:
        document = json.loads(raw, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_request("The request body is not valid JSON.") from exc
    if not isinstance(document, dict):
        raise _bad_request("The request body must be a JSON object.")
    return Body(document)


def page_window(request: Request) -> tuple[int, int]:
    """Open Dental's `Offset` / `Limit` paging: (offset, limit), at most 100 items per request."""
    query = request.query_params
    offset = parse_integer(query["Offset"], "Offset") if "Offset" in query else 0
    limit = parse_integer(query["Limit"], "Limit") if "Limit" in query else PAGE_LIMIT
    if offset < 0 or limit < 0:
        raise _bad_request("Offset and Limit cannot be negative.")
    return offset, min(limit, PAGE_LIMIT)


def page(items: list[_T], request: Request) -> list[_T]:
    offset, limit = page_window(request)
    return items[offset : offset + limit]


# --- shared state -------------------------------------------------------------------------------------


class DefinitionNames:
    """DefNum -> ItemName per category, for the `payType` / `adjType` fields of every answer.

    Read from the office once and again only when an unknown DefNum shows up: a definition added later is
    then found, and no request pays a query for a name. Used from worker threads; each category's mapping
    is replaced whole, never mutated, so readers need no lock.
    """

    def __init__(self, office: OpenDentalOffice) -> None:
        self._office = office
        self._by_category: dict[int, dict[int, OdDefinition]] = {}

    def get(self, category: int, def_num: int) -> OdDefinition | None:
        known = self._by_category.get(category)
        if known is None or def_num not in known:
            known = {d.def_num: d for d in self._office.definitions(category)}
            self._by_category[category] = known
        return known.get(def_num)

    def name(self, category: int, def_num: int) -> str:
        found = self.get(category, def_num)
        return found.item_name if found is not None else ""

    def by_name(self, category: int, item_name: str) -> OdDefinition | None:
        definitions = self._office.definitions(category)
        self._by_category[category] = {d.def_num: d for d in definitions}
        return next((d for d in definitions if d.item_name == item_name), None)


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated key of a request."""

    customer_key: str
    requests_per_second: float | None
    user_num: int


class PaymentBatcher:
    """Writes concurrent `POST /payments` together: one `create_payments` transaction for a group.

    Open Dental handles each request on its own; doing the same here would make the peer, not the
    connector, the bottleneck of a 500-requests-a-second benchmark (each payment re-reads the office's
    preferences and commits alone). Grouping is invisible to a client: every request still gets its own
    payment or its own refusal (a refused entry does not affect the others), and only after the
    transaction holding its payment has committed. Under light load each request is written alone at
    once; while `writers` transactions are running, new requests queue and go together in the next one.

    A failure of the transaction itself (not a refusal) fails every request of the group with a 500: on
    MyISAM part of the group may have been written, which is then exactly the uncertainty a client of a
    real office would face.
    """

    MAX_GROUP = 250  # keeps one transaction short however far the queue has grown

    def __init__(self, state: PeerState, writers: int) -> None:
        self._state = state
        self._writers = writers
        self._running = 0
        self._queue: list[tuple[NewOdPayment, int, asyncio.Future[JsonObject]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def create(self, new: NewOdPayment, user_num: int) -> JsonObject:
        """The `POST /payments` answer for `new`; raises the office's refusal."""
        future: asyncio.Future[JsonObject] = asyncio.get_running_loop().create_future()
        self._queue.append((new, user_num, future))
        if self._running < self._writers:
            self._start()
        return await future

    def _start(self) -> None:
        group, self._queue = self._queue[: self.MAX_GROUP], self._queue[self.MAX_GROUP :]
        self._running += 1
        task = asyncio.create_task(self._write(group))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _write(self, group: list[tuple[NewOdPayment, int, asyncio.Future[JsonObject]]]) -> None:
        try:
            by_user: dict[int, list[tuple[NewOdPayment, asyncio.Future[JsonObject]]]] = {}
            for new, user_num, future in group:
                by_user.setdefault(user_num, []).append((new, future))
            for user_num, entries in by_user.items():
                news = [new for new, _ in entries]
                try:
                    answers = await self._state.run(partial(self._write_in_thread, news, user_num))
                except Exception as exc:
                    answers = [exc] * len(entries)
                for (_, future), answer in zip(entries, answers, strict=True):
                    if future.done():  # the request went away
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            for _, _, future in group:
                if not future.done():  # only if this task was cancelled (the server is stopping)
                    future.cancel()
            self._running -= 1
            if self._queue and self._running < self._writers:
                self._start()

    def _write_in_thread(self, news: list[NewOdPayment], user_num: int) -> list[JsonObject | Exception]:
        names = self._state.names
        return [
            made
            if isinstance(made, OdError)
            else serialize.payment(made, names.name(DEF_CAT_PAYMENT_TYPES, made.pay_type))
            for made in self._state.office.create_payments(news, user_num=user_num)
        ]


class PeerState:
    """Everything the gate, the endpoints and `/_peer` share for one app."""

    def __init__(self, config: PeerConfig, office: OpenDentalOffice, *, owns_office: bool) -> None:
        self.config = config
        self.office = office
        self.owns_office = owns_office
        self.keys = {(key.developer_key, key.customer_key): key for key in config.keys}
        self.throttle = Throttle(config.rate_tolerance_ms / 1000.0)
        self.stats = PeerStats()
        self.faults = FaultInjector(config.faults)
        self.names = DefinitionNames(office)
        self.payments = PaymentBatcher(self, config.payment_writers)
        self._limiter: anyio.CapacityLimiter | None = None

    def authenticate(self, header: str | None) -> Caller | None:
        """`Authorization: ODFHIR {DeveloperKey}/{CustomerKey}`; with no keys configured, any such header."""
        if header is None or not header.startswith("ODFHIR "):
            return None
        developer_key, slash, customer_key = header[len("ODFHIR ") :].strip().partition("/")
        if not (developer_key and slash and customer_key):
            return None
        if not self.keys:
            return Caller(
                customer_key, self.config.default_requests_per_second, ApiKey.model_fields["user_num"].default
            )
        key = self.keys.get((developer_key, customer_key))
        if key is None:
            return None
        return Caller(key.customer_key, key.requests_per_second, key.user_num)

    async def run(self, work: Callable[[], _T]) -> _T:
        """Run office work in a worker thread, at most `office_threads` at once."""
        if self._limiter is None:  # created on the server's loop, where it will be used
            self._limiter = anyio.CapacityLimiter(self.config.office_threads)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)


# --- the gate -------------------------------------------------------------------------------------------


class OpenDentalGate:
    """Authentication, throttle, faults and accounting for every `/api/v1` request (see module docstring)."""

    def __init__(self, app: ASGIApp, state: PeerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        arrival = time.monotonic()
        state = self.state
        caller = state.authenticate(_header(scope, b"authorization"))
        if caller is None:
            state.stats.unauthorized += 1
            await error_response(401, "Invalid or missing Authorization header.")(scope, receive, send)
            return
        counters = state.stats.key(caller.customer_key)
        counters.requests += 1
        if not state.throttle.admit(caller.customer_key, caller.requests_per_second, arrival):
            counters.rate_limit_violations += 1
            counters.throttled += 1
            await self._too_many_requests(scope, receive, send)
            return
        faults = state.faults
        if faults.latency_s > 0:
            await asyncio.sleep(faults.latency_s)
        if faults.error():
            counters.errors += 1
            await error_response(503, "Service Unavailable")(scope, receive, send)
            return
        if faults.throttle():
            counters.throttled += 1
            await self._too_many_requests(scope, receive, send)
            return
        scope[_API_KEY_SCOPE] = caller
        if scope["method"] in ("POST", "PUT") and faults.drop_after_commit():
            if await self._drop_after_commit(scope, receive, send):
                counters.dropped += 1
                raise DroppedConnection(f"{scope['method']} {scope['path']} committed; connection dropped")
            return
        await self.app(scope, receive, send)

    async def _too_many_requests(self, scope: Scope, receive: Receive, send: Send) -> None:
        retry_after = self.state.faults.faults.retry_after_s
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        await error_response(429, "Too many requests.", headers)(scope, receive, send)

    async def _drop_after_commit(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Let the endpoint run to the end (the write commits); if it succeeded, pass on only the start of
        its response. Returns whether the connection must now be dropped (a refused write is answered
        normally: nothing was committed, so there is nothing for the client to be unsure about)."""
        dropping = False

        async def start_then_nothing(message: Message) -> None:
            nonlocal dropping
            if message["type"] == "http.response.start":
                dropping = 200 <= message["status"] < 300
                await send(message)
            elif not dropping:
                await send(message)

        await self.app(scope, receive, start_then_nothing)
        return dropping


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _caller(request: Request) -> Caller:
    caller: Caller = request.scope[_API_KEY_SCOPE]
    return caller


# --- Open Dental's endpoints ----------------------------------------------------------------------------


class OpenDentalApi:
    """The endpoints ledgerlink uses. Each parses its input on the event loop, then does all its office
    work, serialization included, in one worker-thread call."""

    def __init__(self, state: PeerState) -> None:
        self.state = state
        self.office = state.office

    def install(self, app: FastAPI) -> None:
        routes: list[tuple[str, Callable[[Request], Any], str]] = [
            ("/payments", self.list_payments, "GET"),
            ("/payments", self.create_payment, "POST"),
            ("/payments/Refund", self.refund_payment, "POST"),
            ("/payments/{PayNum}", self.update_payment, "PUT"),
            ("/definitions", self.list_definitions, "GET"),
            ("/patients", self.list_patients, "GET"),
            ("/patients/{PatNum}", self.get_patient, "GET"),
            ("/adjustments", self.list_adjustments, "GET"),
            ("/adjustments", self.create_adjustment, "POST"),
            ("/tasks", self.create_task, "POST"),
            ("/commlogs", self.create_commlog, "POST"),
        ]
        for path, endpoint, method in routes:
            app.router.add_route(API_PREFIX + path, endpoint, methods=[method], include_in_schema=False)

    # payments

    async def list_payments(self, request: Request) -> Response:
        query = request.query_params
        pat_num = parse_integer(query["PatNum"], "PatNum") if "PatNum" in query else None
        pay_type = parse_integer(query["PayType"], "PayType") if "PayType" in query else None
        date_entry = parse_date(query["DateEntry"], "DateEntry") if "DateEntry" in query else None
        offset, limit = page_window(request)

        def work() -> list[JsonValue]:
            if pat_num is not None and self.office.patient(pat_num) is None:
                raise OdNotFound("Patient not found.")
            if pay_type is None:  # the database pages
                payments = self.office.payments(
                    pat_num=pat_num, date_entry_from=date_entry, limit=limit, offset=offset
                )
            else:  # PayType is filtered here, so paging is too
                matching = self.office.payments(pat_num=pat_num, date_entry_from=date_entry)
                payments = [p for p in matching if p.pay_type == pay_type][offset : offset + limit]
            now = self.office.now()
            return [
                serialize.payment(
                    p, self.state.names.name(DEF_CAT_PAYMENT_TYPES, p.pay_type), server_date_time=now
                )
                for p in payments
            ]

        return json_response(200, await self.state.run(work))

    async def create_payment(self, request: Request) -> Response:
        body = await read_body(request)
        pay_amt = parse_amount(body.required("PayAmt"), "PayAmt")
        pat_num = body.integer("PatNum")
        new = NewOdPayment(
            pat_num=pat_num,
            pay_amt=pay_amt,
            pay_type=body.optional_integer("PayType"),
            pay_date=parse_date(body.fields["PayDate"], "PayDate") if "PayDate" in body else None,
            pay_note=body.text("PayNote"),
            clinic_num=body.optional_integer("ClinicNum"),
            is_patient_preferred=(
                parse_flag(body.fields["isPatientPreferred"], "isPatientPreferred")
                if "isPatientPreferred" in body
                else False
            ),
        )
        body.only_default("CheckNum", "", parse_text)
        body.only_default("BankBranch", "", parse_text)
        body.only_default("isPrepayment", False, parse_flag)
        body.only_default("payPlanNum", 0, parse_integer)
        if body.fields.get("procNums"):
            raise _not_supported("procNums")
        return json_response(201, await self.state.payments.create(new, _caller(request).user_num))

    async def refund_payment(self, request: Request) -> Response:
        pay_num = (await read_body(request)).integer("PayNum")
        user_num = _caller(request).user_num

        def work() -> JsonObject:
            refund = self.office.refund_payment(pay_num, user_num=user_num)
            return serialize.payment(refund, self.state.names.name(DEF_CAT_PAYMENT_TYPES, refund.pay_type))

        return json_response(201, await self.state.run(work))

    async def update_payment(self, request: Request) -> Response:
        pay_num = parse_integer(request.path_params["PayNum"], "PayNum")
        body = await read_body(request)
        pay_note = parse_text(body.fields["PayNote"], "PayNote") if "PayNote" in body else None
        for unsupported in ("PayType", "CheckNum", "BankBranch", "ProcessStatus"):
            if unsupported in body:
                raise _not_supported(unsupported)

        def work() -> JsonObject:
            if pay_note is not None:
                pay = self.office.update_payment_note(pay_num, pay_note)
            else:  # a PUT without fields changes nothing (fields left out keep their values)
                found = self.office.payment(pay_num)
                if found is None:
                    raise OdNotFound("Payment not found.")
                pay = found
            return serialize.payment(pay, self.state.names.name(DEF_CAT_PAYMENT_TYPES, pay.pay_type))

        return json_response(200, await self.state.run(work))

    # reference data

    async def list_definitions(self, request: Request) -> Response:
        query = request.query_params
        if "Category" not in query:
            raise _bad_request("Category is required.")
        category = parse_integer(query["Category"], "Category")
        include_hidden = (
            parse_flag(query["includeHidden"], "includeHidden") if "includeHidden" in query else False
        )

        def work() -> list[JsonValue]:
            definitions = self.office.definitions(category)
            shown = [d for d in definitions if include_hidden or not d.is_hidden]
            return [serialize.definition(d) for d in page(shown, request)]

        return json_response(200, await self.state.run(work))

    async def get_patient(self, request: Request) -> Response:
        pat_num = parse_integer(request.path_params["PatNum"], "PatNum")

        def work() -> JsonObject:
            patient = self.office.patient(pat_num)
            if patient is None:
                raise OdNotFound("Patient not found.")
            return serialize.patient(patient)

        return json_response(200, await self.state.run(work))

    async def list_patients(self, request: Request) -> Response:
        """`GET /patients` (Patients GET multiple) with the filters Open Dental documents that a connector
        uses: ChartNumber, LName and FName (from the start of the name, ignoring case) and Birthdate
        (yyyy-MM-dd, exact). The filters given all apply; at least one is required here."""
        query = request.query_params
        chart_number = query.get("ChartNumber", "")
        last_name = query.get("LName", "")
        first_name = query.get("FName", "")
        birthdate = parse_date(query["Birthdate"], "Birthdate") if query.get("Birthdate") else None
        if not (chart_number or last_name or first_name or birthdate):
            raise _bad_request(
                "This Open Dental peer searches patients by ChartNumber, LName, FName or Birthdate."
            )

        def work() -> list[JsonValue]:
            if last_name or first_name or birthdate:
                matches = self.office.patients_matching(
                    last_name=last_name, first_name=first_name, birthdate=birthdate
                )
                if chart_number:
                    charted = {p.pat_num for p in self.office.patients_by_chart_number(chart_number)}
                    matches = [p for p in matches if p.pat_num in charted]
            else:
                matches = self.office.patients_by_chart_number(chart_number)
            return [serialize.patient(p) for p in page(matches, request)]

        return json_response(200, await self.state.run(work))

    # notes for staff and adjustments

    async def list_adjustments(self, request: Request) -> Response:
        """`GET /adjustments?PatNum=&AdjType=` (Open Dental 22.2.21): a patient's adjustments. A connector
        needs it to complete a payment whose fee adjustment was lost with an answer."""
        query = request.query_params
        if "PatNum" not in query:
            raise OdBadRequest("PatNum is required.")
        pat_num = parse_integer(query["PatNum"], "PatNum")
        adj_type = parse_integer(query["AdjType"], "AdjType") if "AdjType" in query else None

        def work() -> list[JsonValue]:
            if self.office.patient(pat_num) is None:
                raise OdNotFound("Patient not found.")
            made = [a for a in self.office.adjustments(pat_num) if adj_type is None or a.adj_type == adj_type]
            return [
                serialize.adjustment(a, self.state.names.name(DEF_CAT_ADJ_TYPES, a.adj_type))
                for a in page(made, request)
            ]

        return json_response(200, await self.state.run(work))

    async def create_adjustment(self, request: Request) -> Response:
        body = await read_body(request)
        pat_num = body.integer("PatNum")
        adj_type = body.integer("AdjType")
        adj_amt = parse_amount(body.required("AdjAmt"), "AdjAmt")
        adj_date = parse_date(body.required("AdjDate"), "AdjDate")
        adj_note = body.text("AdjNote")  # a field named "Note" is ignored, as Open Dental does (§9.6)
        body.only_default("ProcNum", 0, parse_integer)
        user_num = _caller(request).user_num

        def work() -> JsonObject:
            patient = self.office.patient(pat_num)
            if patient is not None:  # else the office answers "Patient not found."
                body.only_default("ProvNum", patient.pri_prov, parse_integer)
                body.only_default("ClinicNum", patient.clinic_num, parse_integer)
                body.only_default("ProcDate", self.office.today(), parse_date)
            adj_num = self.office.create_adjustment(
                pat_num, adj_type, adj_amt, adj_date, adj_note, user_num=user_num
            )
            made = next(a for a in self.office.adjustments(pat_num) if a.adj_num == adj_num)
            return serialize.adjustment(made, self.state.names.name(DEF_CAT_ADJ_TYPES, made.adj_type))

        return json_response(201, await self.state.run(work))

    async def create_task(self, request: Request) -> Response:
        body = await read_body(request)
        task_list_num = body.integer("TaskListNum")
        descript = parse_text(body.required("Descript"), "Descript")
        user_num = body.integer("UserNum")
        key_num = body.optional_integer("KeyNum") or 0
        object_type = body.text("ObjectType", "None")
        if object_type not in ("None", "Patient"):
            raise _bad_request('ObjectType must be "None" or "Patient".')
        if (object_type == "Patient") != (key_num != 0):
            raise _bad_request('KeyNum is required with ObjectType "Patient", and only with it.')
        priority_def_num = body.optional_integer("PriorityDefNum")
        for unsupported in ("DateTimeEntry", "TaskStatus"):
            if unsupported in body:
                raise _not_supported(unsupported)
        acting_user_num = _caller(request).user_num

        def work() -> JsonObject:
            task_num = self.office.create_task(
                task_list_num,
                descript,
                user_num,
                pat_num=key_num,
                priority_def_num=priority_def_num,
                acting_user_num=acting_user_num,
            )
            made = next(t for t in self.office.tasks(task_list_num=task_list_num) if t.task_num == task_num)
            return serialize.task(made)

        return json_response(201, await self.state.run(work))

    async def create_commlog(self, request: Request) -> Response:
        body = await read_body(request)
        pat_num = body.integer("PatNum")
        note = parse_text(body.required("Note"), "Note")
        comm_type_num = body.optional_integer("CommType")
        comm_type_name = body.text("commType") or None
        mode = parse_choice(body.fields["Mode_"], "Mode_", COMM_MODES) if "Mode_" in body else None
        sent = (
            parse_choice(body.fields["SentOrReceived"], "SentOrReceived", SENT_OR_RECEIVED)
            if "SentOrReceived" in body
            else None
        )
        comm_date_time = (
            parse_date_time(body.fields["CommDateTime"], "CommDateTime") if "CommDateTime" in body else None
        )
        user_num = _caller(request).user_num

        def work() -> JsonObject:
            comm_type = comm_type_num
            if comm_type is None and comm_type_name is not None:  # CommType wins when both are given
                found = self.state.names.by_name(DEF_CAT_COMMLOG_TYPES, comm_type_name)
                if found is None:
                    raise OdBadRequest(
                        "commType is invalid. Must be a definition.ItemName where definition.Category=27."
                    )
                comm_type = found.def_num
            options: dict[str, Any] = {
                "comm_type": comm_type,
                "user_num": user_num,
                "comm_date_time": comm_date_time,
            }
            if mode is not None:
                options["mode"] = mode
            if sent is not None:
                options["sent_or_received"] = sent
            commlog_num = self.office.create_commlog(pat_num, note, **options)
            made = next(c for c in self.office.commlogs(pat_num) if c.commlog_num == commlog_num)
            return serialize.commlog(made, self.state.names.name(DEF_CAT_COMMLOG_TYPES, made.comm_type))

        return json_response(201, await self.state.run(work))


# --- the app --------------------------------------------------------------------------------------------


def _install_error_answers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ApiError):
            return error_response(exc.status_code, exc.message)
        if isinstance(exc, OdNotFound):
            return error_response(404, exc.message)
        assert isinstance(exc, OdError)
        return error_response(400, exc.message)

    for error in (ApiError, OdBadRequest, OdNotFound):
        app.add_exception_handler(error, answer)


def _install_peer_routes(app: FastAPI, state: PeerState) -> None:
    @app.get("/_peer/stats")
    async def stats() -> dict[str, object]:
        return state.stats.snapshot()

    @app.post("/_peer/reset-stats", status_code=204)
    async def reset_stats() -> None:
        state.stats.reset()

    @app.get("/_peer/faults")
    async def get_faults() -> Faults:
        return state.faults.faults

    @app.put("/_peer/faults")
    async def put_faults(faults: Faults) -> Faults:
        state.faults.replace(faults)
        return faults


def create_app(config: PeerConfig, *, office: OpenDentalOffice | None = None) -> FastAPI:
    """The peer as an ASGI app. With `office`, the app serves that (open) office and leaves it open;
    otherwise it opens `config.database_url` (installing the schema if `create_schema`) and closes it when
    the server shuts down."""
    owns_office = office is None
    if office is None:
        office = OpenDentalOffice.open(
            config.database_url, create=config.create_schema, storage_engine=config.storage_engine
        )
    state = PeerState(config, office, owns_office=owns_office)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if state.owns_office:
            await anyio.to_thread.run_sync(state.office.close)

    app = FastAPI(
        title="Open Dental API peer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.state.peer = state
    OpenDentalApi(state).install(app)
    _install_peer_routes(app, state)
    _install_error_answers(app)
    app.add_middleware(OpenDentalGate, state=state)
    hide_deliberate_drops_from_logs()
    return app


def peer_state(app: FastAPI) -> PeerState:
    """The state of an app made by `create_app` (its office, stats and fault knobs)."""
    state: PeerState = app.state.peer
    return state
