"""The Settings page: the practice (name, time zone, locale) and, per PMS connection, its connector settings
and its writeback rules (seed 004: per payment type on/off and automatic/manual, instant or daily, net or
gross, start date; chargebacks).

One form per section, each posted on its own: `POST /settings/practice`,
`POST /settings/connections/{id}/settings` and `POST /settings/connections/{id}/rules`. A form with a
mistake is shown again (400) with every message next to its field and nothing saved; a saved form
redirects back with a notice. The checks, the sealing of secrets and the audit entries are the API's own
(`practices.update_practice`, `connection_settings`). Secrets are never written into the page: a stored
one shows as "set" and an empty box keeps it.
"""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import available_timezones

from fastapi import APIRouter, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from starlette.datastructures import FormData

from ledgerlink.api.auth import database
from ledgerlink.connection_settings import (
    BadSettings,
    find_connection,
    is_secret_setting,
    merge_type_handling,
    parse_amount_mode,
    parse_daily_time,
    parse_start_date,
    parse_timing,
    practice_connections,
    settings_model,
    update_connection,
)
from ledgerlink.domain.rules import AmountMode, Timing, TypeHandling
from ledgerlink.domain.transactions import PaymentType
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.practices import check_practice_field, update_practice
from ledgerlink.store.models import Connection, Practice
from ledgerlink.web.params import whole_number
from ledgerlink.web.rendering import redirect, render
from ledgerlink.web.staff import Administrator, Staff, checked_form

router = APIRouter(include_in_schema=False)
ConnectionId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]

PAYMENT_TYPE_WORDS = {
    PaymentType.TERMINAL: "Card terminal payments (in the office)",
    PaymentType.PAYMENT_PLAN: "Payment plans (recurring auto-debit)",
    PaymentType.INSURANCE: "Insurance payments",
    PaymentType.MEMBERSHIP: "Membership payments",
    PaymentType.COLLECTION: "Balance collections (portal, text-to-pay)",
    PaymentType.ONLINE: "Online payments",
}
HANDLING_CHOICES = (
    (TypeHandling.AUTOMATIC.value, "Automatic"),
    (TypeHandling.MANUAL.value, "Manual: staff post by hand"),
    (TypeHandling.OFF.value, "Off: not written back"),
)
AMOUNT_CHOICES = (
    (AmountMode.NET.value, "Net: the payment after fees (what reaches the bank)"),
    (AmountMode.GROSS.value, "Gross: the payment before fees"),
    (AmountMode.GROSS_PLUS_FEE.value, "Gross, plus the fee as a separate entry"),
)
TIMING_CHOICES = (
    (Timing.INSTANT.value, "Instant: as soon as a payment arrives"),
    (Timing.DAILY.value, "Daily: once a day at the time below"),
)
LOCALE_SUGGESTIONS = ("en_US", "en_CA", "fr_CA", "es_US", "en_GB", "en_AU")


@functools.cache
def zones() -> list[str]:
    """The IANA zones offered in the time zone field; read from tzdata once, when the page is first shown."""
    return sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


KIND_WORDS = {
    "sandbox": "Sandbox PMS (for trying ledgerlink)",
    "opendental": "Open Dental (REST API)",
    "pull": "PMS downloads payments itself (pull API)",
}
# The settings most offices need; the rest of a connector's settings sit under "More settings".
_MAIN_SETTINGS = frozenset(
    {"base_url", "developer_key", "customer_key", "account_number", "clinic_num", "path", "database_url"}
)
_SETTING_WORDS = {
    "base_url": "API address",
    "developer_key": "Developer key",
    "customer_key": "Customer key",
    "account_number": "Patient account number is",
    "clinic_num": "Clinic number",
    "path": "Sandbox office file",
    "database_url": "Database URL",
    "payment_type_names": "PMS payment type names (JSON)",
    "requests_per_second": "Requests per second",
    "timeout_s": "Timeout (seconds)",
    "latency_ms": "Simulated latency (ms)",
}
# Switching a connection into Open Dental's unsafe direct-database mode is for the CLI on the server.
_NOT_ON_THE_PAGE = frozenset({"unsafe_direct_db"})


@dataclass
class SettingField:
    """One connector setting as its form shows it."""

    name: str
    label: str
    value: str  # never a secret's value
    secret: bool
    is_set: bool
    required: bool
    help: str
    choices: tuple[str, ...] = ()
    text_only: bool = True  # False: a number, flag, list or mapping, read as JSON

    @property
    def options(self) -> list[tuple[str, str]]:
        """A choice's options; empty is the default."""
        return [("", "Default"), *((choice, choice) for choice in self.choices)]


@dataclass
class ConnectionView:
    connection: Connection
    fields: list[SettingField]
    name: str
    rules: dict[str, Any]
    mode_note: str = ""
    main: list[SettingField] = field(default_factory=list)
    more: list[SettingField] = field(default_factory=list)


def _optional_args(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [arg for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _is_text(annotation: Any) -> bool:
    """Whether a setting takes text as typed (a string, path, secret or one of some words)."""
    args = _optional_args(annotation)
    return all(
        arg in (str, Path, SecretStr)
        or (get_origin(arg) is Literal and all(isinstance(v, str) for v in get_args(arg)))
        for arg in args
    )


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def setting_fields(connection: Connection) -> list[SettingField]:
    """The connector's settings, with their stored values (secrets only as "set")."""
    model = settings_model(connection.kind, connection.settings)
    if model is None:
        return []
    fields = []
    for name, info in model.model_fields.items():
        if name in _NOT_ON_THE_PAGE:
            continue
        stored = connection.settings.get(name)
        secret = info.annotation is SecretStr or is_secret_setting(name, stored)
        literal = next((arg for arg in _optional_args(info.annotation) if get_origin(arg) is Literal), None)
        default = info.get_default(call_default_factory=True)
        required = default is PydanticUndefined
        if required:
            hint = "Required."
        elif default is None:
            hint = "Optional."
        elif literal is not None:
            hint = f"Default: {_shown(default)}."
        else:
            hint = f"Leave empty for the default: {_shown(default)}."
        fields.append(
            SettingField(
                name=name,
                label=_SETTING_WORDS.get(name, name.replace("_", " ").capitalize()),
                value="" if secret else _shown(stored),
                secret=secret,
                is_set=stored is not None and stored != "",
                required=required,
                help=(
                    "A secret: stored encrypted and never shown. Leave empty to keep it. " if secret else ""
                )
                + hint,
                choices=tuple(get_args(literal)) if literal is not None else (),
                text_only=_is_text(info.annotation),
            )
        )
    return fields


def _rules_values(connection: Connection) -> dict[str, Any]:
    return {
        "start_date": connection.start_date.isoformat() if connection.start_date else "",
        "amount_mode": connection.amount_mode,
        "timing": connection.timing,
        "daily_time": connection.daily_time.strftime("%H:%M"),
        "chargebacks_enabled": connection.chargebacks_enabled,
        "type": {
            t.value: connection.type_handling.get(t.value, TypeHandling.AUTOMATIC.value) for t in PaymentType
        },
    }


def _view(connection: Connection) -> ConnectionView:
    fields = setting_fields(connection)
    note = ""
    if connection.kind == "opendental" and str(connection.settings.get("unsafe_direct_db", "")).lower() in (
        "true",
        "1",
        "yes",
    ):
        note = "Direct-database mode (unsafe): set from the command line on the server."
    return ConnectionView(
        connection=connection,
        fields=fields,
        name=connection.name,
        rules=_rules_values(connection),
        mode_note=note,
        main=[f for f in fields if f.name in _MAIN_SETTINGS or f.required],
        more=[f for f in fields if f.name not in _MAIN_SETTINGS and not f.required],
    )


def _practice_values(practice: Practice) -> dict[str, str]:
    return {
        "name": practice.name,
        "timezone": practice.timezone,
        "locale": practice.locale,
        "patient_capacity": "" if practice.patient_capacity is None else str(practice.patient_capacity),
    }


async def _page(
    request: Request,
    staff: Staff,
    *,
    status: int = 200,
    failed: str = "",
    errors: dict[str, str] | None = None,
    submitted: FormData | None = None,
) -> HTMLResponse:
    """The page; after a refused form, that form shows what was typed and the errors next to the fields."""
    async with database(request).sessions() as session:
        practice = await session.get(Practice, staff.practice.id)
        assert practice is not None
        connections = await practice_connections(session, practice.id)
    views = [_view(c) for c in connections]
    practice_values = _practice_values(practice)
    if submitted is not None:
        typed = {key: str(value) for key, value in submitted.items() if key != "csrf_token"}
        if failed == "practice":
            practice_values.update(typed)
        for view in views:
            if failed == f"settings-{view.connection.id}":
                view.name = typed.get("name", view.name)
                for setting in view.fields:
                    if not setting.secret:
                        setting.value = typed.get(f"setting.{setting.name}", setting.value)
            if failed == f"rules-{view.connection.id}":
                view.rules = {
                    **{k: typed.get(k, "") for k in ("start_date", "amount_mode", "timing", "daily_time")},
                    "chargebacks_enabled": "chargebacks_enabled" in typed,
                    "type": {t.value: typed.get(f"type.{t.value}", "") for t in PaymentType},
                }
    return render(
        request,
        "settings.html",
        staff,
        status=status,
        errors=errors or {},
        failed=failed,
        practice=practice_values,
        views=views,
        payment_types=[(t.value, PAYMENT_TYPE_WORDS[t]) for t in PaymentType],
        handling_choices=HANDLING_CHOICES,
        amount_choices=AMOUNT_CHOICES,
        timing_choices=TIMING_CHOICES,
        kind_words=KIND_WORDS,
        zones=zones(),
        locales=LOCALE_SUGGESTIONS,
    )


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(request: Request, staff: Administrator) -> Response:
    return await _page(request, staff)


@router.post("/settings/practice", response_class=HTMLResponse)
async def save_practice(request: Request, staff: Administrator) -> Response:
    form = await checked_form(request, staff)
    wanted: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in ("name", "timezone", "locale", "patient_capacity"):
        text = str(form.get(name) or "").strip()
        try:
            value: Any = text
            if name == "patient_capacity":
                value = _whole_number(text, name) if text else None
            wanted[name] = check_practice_field(name, value)
        except InvalidInput as exc:
            errors[name] = exc.message
    if errors:
        return await _page(request, staff, status=400, failed="practice", errors=errors, submitted=form)
    async with database(request).sessions.begin() as session:
        practice = await session.get(Practice, staff.practice.id, with_for_update=True)
        assert practice is not None
        changes = await update_practice(session, practice, wanted, actor=staff.actor)
    return redirect("/settings#practice", "Practice settings saved." if changes else "Nothing was changed.")


def _whole_number(text: str, name: str) -> int:
    value = whole_number(text)
    if value is None:
        raise InvalidInput("write a whole number, such as 5000, or leave it empty for no limit", field=name)
    return value


def _settings_change(fields: list[SettingField], stored: dict[str, Any], form: FormData) -> dict[str, Any]:
    """What the form changes: a typed secret replaces the stored one (empty keeps it); an emptied setting
    goes back to its default; a number, flag or mapping is read as JSON, as an API client would send it."""
    change: dict[str, Any] = {}
    for setting in fields:
        text = str(form.get(f"setting.{setting.name}") or "")
        if setting.secret:
            if text.strip():
                change[setting.name] = text.strip()
            continue
        if text.strip() == _shown(stored.get(setting.name)).strip():
            continue
        if not text.strip():
            change[setting.name] = None
        elif setting.text_only:
            change[setting.name] = text.strip()
        else:
            try:
                change[setting.name] = json.loads(text)
            except ValueError:
                change[setting.name] = text.strip()
    return change


async def _owned(request: Request, staff: Staff, connection_id: int) -> Connection:
    async with database(request).sessions() as session:
        connection = await find_connection(session, staff.practice.id, connection_id)
    if connection is None:
        raise HTTPException(404)
    return connection


@router.post("/settings/connections/{connection_id}/settings", response_class=HTMLResponse)
async def save_connection_settings(
    request: Request, staff: Administrator, connection_id: ConnectionId
) -> Response:
    form = await checked_form(request, staff)
    failed = f"settings-{connection_id}"
    errors: dict[str, str] = {}
    try:
        async with database(request).sessions.begin() as session:
            current = await find_connection(session, staff.practice.id, connection_id)
            if current is None:
                raise HTTPException(404)
            name_before = current.name
            change = _settings_change(setting_fields(current), current.settings, form)
            changes = await update_connection(
                session,
                current,
                actor=staff.actor,
                data_dir=request.app.state.data_dir,
                name=str(form.get("name") or ""),
                settings=change,
            )
    except BadSettings as exc:
        errors = {_setting_key(where): message for where, message in exc.problems.items()}
    except (InvalidInput, Conflict) as exc:
        errors = {_setting_key(exc.field or "settings"): exc.message}
    if errors:
        return await _page(request, staff, status=400, failed=failed, errors=errors, submitted=form)
    notice = f"Settings of {name_before} saved." if changes else "Nothing was changed."
    return redirect(f"/settings#connection-{connection_id}", notice)


def _setting_key(where: str) -> str:
    """The form field a service error names: `settings.base_url` is the box `setting.base_url`."""
    if where.startswith("settings."):
        return "setting." + where.removeprefix("settings.").split(".")[0]
    return where


@router.post("/settings/connections/{connection_id}/rules", response_class=HTMLResponse)
async def save_rules(request: Request, staff: Administrator, connection_id: ConnectionId) -> Response:
    form = await checked_form(request, staff)
    connection = await _owned(request, staff, connection_id)
    text = {name: str(form.get(name) or "").strip() for name in ("start_date", "amount_mode", "timing")}
    new: dict[str, Any] = {"chargebacks_enabled": form.get("chargebacks_enabled") is not None}
    errors: dict[str, str] = {}
    parsers: dict[str, Callable[[], Any]] = {
        "start_date": lambda: parse_start_date(text["start_date"]),
        "amount_mode": lambda: parse_amount_mode(text["amount_mode"]),
        "timing": lambda: parse_timing(text["timing"]),
        "daily_time": lambda: parse_daily_time(str(form.get("daily_time") or "")),
    }
    for name, parse in parsers.items():
        try:
            new[name] = parse()
        except InvalidInput as exc:
            errors[name] = exc.message
    handling: dict[str, TypeHandling | None] = {}
    for payment_type in PaymentType:
        key = f"type.{payment_type.value}"
        try:
            chosen = TypeHandling(str(form.get(key) or ""))
            # Automatic is the default: stored as no entry, so an unchanged form changes nothing.
            handling[payment_type.value] = None if chosen is TypeHandling.AUTOMATIC else chosen
        except ValueError:
            errors[key] = "choose automatic, manual or off"
    if errors:
        return await _page(
            request, staff, status=400, failed=f"rules-{connection_id}", errors=errors, submitted=form
        )
    async with database(request).sessions.begin() as session:
        current = await find_connection(session, staff.practice.id, connection_id)
        if current is None:
            raise HTTPException(404)
        # Merged with the rules as stored now, inside the transaction: a save made meanwhile is kept.
        new["type_handling"] = merge_type_handling(current.type_handling, handling)
        changes = await update_connection(
            session, current, actor=staff.actor, data_dir=request.app.state.data_dir, rules=new
        )
    notice = f"Writeback rules of {connection.name} saved." if changes else "Nothing was changed."
    return redirect(f"/settings#connection-{connection_id}", notice)
