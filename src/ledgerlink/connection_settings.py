"""A connection's settings and writeback rules, checked, changed and audited the same way from the HTTP API
and the dashboard.

Secrets never leave the server: a settings value that is stored sealed, or whose name says it is a
secret, is shown as `MASK`, and `MASK` sent back in a change keeps the stored value. Settings are checked
against the connector's own settings model before anything is stored, and sealed with the installation's
key (`registry.settings_to_store`). Every problem is an `InvalidInput` naming its field (`settings.<name>`,
`rules.<name>`, `name`), so each surface can put the message where the user typed the value.
"""

from __future__ import annotations

import enum
import re
from datetime import date, time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.audit import record_audit
from ledgerlink.connectors.opendental.direct_db import DirectDbSettings
from ledgerlink.connectors.opendental.settings import SECRET_FIELDS, OpenDentalSettings
from ledgerlink.connectors.registry import is_direct_db, settings_to_store
from ledgerlink.connectors.sandbox import SandboxSettings
from ledgerlink.domain.rules import AmountMode, Timing, TypeHandling
from ledgerlink.errors import Conflict, InvalidInput
from ledgerlink.practices import PULL_KIND, parse_type_handling
from ledgerlink.secrets import SecretBox
from ledgerlink.store.models import Connection

_Choice = TypeVar("_Choice", bound=enum.StrEnum)

MASK = "********"
# Setting names that hold secrets even when a value is stored plain (the direct mode's database URL, and
# any name that says key, secret, password or token).
_SECRET_NAMES = frozenset({*SECRET_FIELDS, "database_url"})
_SECRET_WORDS = ("key", "secret", "password", "token")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HH_MM = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
RULE_FIELDS = ("start_date", "amount_mode", "timing", "daily_time", "chargebacks_enabled", "type_handling")


class BadSettings(InvalidInput):
    """Settings the connector's model refused; `problems` maps each field (`settings.<name>`) to why."""

    def __init__(self, message: str, problems: dict[str, str]) -> None:
        super().__init__(message, field=next(iter(problems), "settings"))
        self.problems = problems


def is_secret_setting(name: str, value: Any) -> bool:
    lowered = name.lower()
    return (
        (isinstance(value, str) and SecretBox.is_sealed(value))
        or lowered in _SECRET_NAMES
        or any(word in lowered for word in _SECRET_WORDS)
    )


def masked(settings: dict[str, Any]) -> dict[str, Any]:
    return {name: MASK if is_secret_setting(name, value) else value for name, value in settings.items()}


def settings_model(kind: str, raw: dict[str, Any]) -> type[BaseModel] | None:
    """The model a connection's settings are checked against; None for a pull connection (no settings)."""
    if kind == PULL_KIND:
        return None
    if kind == "sandbox":
        return SandboxSettings
    if is_direct_db(kind, raw):
        return DirectDbSettings
    if kind == "opendental":
        return OpenDentalSettings
    raise InvalidInput(f"connector {kind!r} has no settings model", field="kind")


def checked_settings(kind: str, raw: dict[str, Any], data_dir: Path, *, sent: set[str]) -> dict[str, Any]:
    """`raw` checked against the connector's settings model, then as stored (secrets sealed).

    Checked without opening the connector: that would connect to the PMS inside the request. A sandbox
    office's file `sent` by a user must stay inside the data directory (a relative path): nobody chooses
    files elsewhere on the server from the API or the dashboard (one set from the CLI on the server stays).
    """
    model = settings_model(kind, raw)
    if model is None:
        if raw:
            raise InvalidInput(
                "a pull connection takes no settings: the PMS presents the practice's keys instead",
                field="settings",
            )
        return {}
    if kind == "sandbox":
        path = raw.get("path") if "path" in sent else None
        if isinstance(path, str) and (Path(path).is_absolute() or ".." in Path(path).parts):
            raise InvalidInput(
                "the sandbox file must be a relative path inside the data directory (no '..')",
                field="settings.path",
            )
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            problems.setdefault(f"settings.{where}" if where else "settings", str(error["msg"]))
        listed = "; ".join(f"{field.removeprefix('settings.')}: {msg}" for field, msg in problems.items())
        raise BadSettings(f"bad {kind} settings: {listed}", problems) from None
    return settings_to_store(kind, raw, data_dir)


def _is_address(name: str) -> bool:
    """A setting that says where requests (and the credentials with them) go: base_url, a host..."""
    lowered = name.lower()
    return lowered.endswith("url") or lowered in ("host", "server", "address")


def _check_credentials_follow_address(connection: Connection, change: dict[str, Any]) -> None:
    """Stored credentials go only where they were typed for: a new address for the PMS needs its secrets
    typed again, or whoever may edit settings could point the connection at their own server and receive
    the office's keys with the next request."""
    moved = [
        key
        for key, value in change.items()
        if _is_address(key)
        and not is_secret_setting(key, value)
        and value != MASK
        and value != connection.settings.get(key)
    ]
    if not moved:
        return
    kept = sorted(
        key
        for key, value in connection.settings.items()
        if is_secret_setting(key, value) and (key not in change or change[key] == MASK)
    )
    if kept:
        raise InvalidInput(
            f"changing {moved[0]} sends the stored credentials to a new place: type "
            f"{', '.join(kept)} again with it",
            field=f"settings.{kept[0]}",
        )


def merge_settings(connection: Connection, change: dict[str, Any], data_dir: Path) -> list[str]:
    """Merge `change` into the connection's settings (None removes, `MASK` keeps), check and seal the
    result and store it; returns the names of the settings that changed. A new PMS address must come with
    its secrets typed again."""
    merged = dict(connection.settings)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        elif value == MASK:
            if key not in merged:
                raise InvalidInput(
                    f"{MASK!r} keeps a stored secret, and there is none; send the secret itself",
                    field=f"settings.{key}",
                )
        else:
            merged[key] = value
    stored = checked_settings(connection.kind, merged, data_dir, sent=set(change))
    _check_credentials_follow_address(connection, change)
    names = set(stored) | set(connection.settings)
    changed = sorted(name for name in names if stored.get(name) != connection.settings.get(name))
    connection.settings = stored
    return changed


def parse_start_date(text: str | None) -> date | None:
    """A YYYY-MM-DD start date (None or empty: no start date). Only that: no timestamps or other forms."""
    if text is None or not text.strip():
        return None
    try:
        if not _ISO_DATE.fullmatch(text.strip()):
            raise ValueError
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field="rules.start_date") from None


def parse_daily_time(text: str) -> time:
    """The practice-local HH:MM of the daily writeback."""
    try:
        if not _HH_MM.fullmatch(text.strip()):
            raise ValueError
        return time.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a time of day; use HH:MM such as 18:30", field="rules.daily_time"
        ) from None


def _choice(kind: type[_Choice], text: str, what: str, field: str) -> _Choice:
    try:
        return kind(text)
    except ValueError:
        raise InvalidInput(f"{what} is one of {', '.join(m.value for m in kind)}", field=field) from None


def parse_amount_mode(text: str) -> AmountMode:
    return _choice(AmountMode, text, "the amount", "rules.amount_mode")


def parse_timing(text: str) -> Timing:
    return _choice(Timing, text, "the timing", "rules.timing")


def merge_type_handling(stored: dict[str, Any], change: dict[str, TypeHandling | None]) -> dict[str, str]:
    """The per-payment-type rules with `change` merged in (None puts a type back to automatic)."""
    merged = dict(stored)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value.value
    try:
        return parse_type_handling(merged)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, field="rules.type_handling") from None


def apply_rules(connection: Connection, new: dict[str, Any]) -> dict[str, Any]:
    """Set the rules in `new` (field -> checked value, fields of `RULE_FIELDS`); returns
    {field: {"previous", "new"}} of those that changed."""
    changes: dict[str, Any] = {}
    for field, value in new.items():
        if field not in RULE_FIELDS:
            raise InvalidInput(f"{field!r} is not a writeback rule", field=f"rules.{field}")
        stored_value = value.value if isinstance(value, AmountMode | Timing) else value
        previous = getattr(connection, field)
        if previous != stored_value:
            changes[field] = {"previous": _plain(previous), "new": _plain(stored_value)}
            setattr(connection, field, stored_value)
    return changes


def _plain(value: Any) -> Any:
    """A value as the audit log's JSON holds it."""
    return value.isoformat() if isinstance(value, date | time) else value


async def update_connection(
    session: AsyncSession,
    connection: Connection,
    *,
    actor: str,
    data_dir: Path,
    name: str | None = None,
    settings: dict[str, Any] | None = None,
    rules: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Change a connection's name, settings (merged, see `merge_settings`) and rules (see `apply_rules`),
    and audit what changed (settings by name only: their values may be secrets). Returns the changes."""
    changes: dict[str, Any] = {}
    if name is not None:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput("a connection needs a name of 1 to 100 characters", field="name")
        if name != connection.name:
            taken = await session.scalar(
                select(Connection.id).where(
                    Connection.practice_id == connection.practice_id, Connection.name == name
                )
            )
            if taken is not None:
                raise Conflict(f"the practice already has a connection named {name!r}", field="name")
            changes["name"] = {"previous": connection.name, "new": name}
            connection.name = name
    if settings is not None:
        changed = merge_settings(connection, settings, data_dir)
        if changed:
            changes["settings"] = changed
    if rules is not None:
        changes.update(apply_rules(connection, rules))
    if changes:
        await record_audit(
            session,
            connection.practice_id,
            actor,
            "connection.update",
            f"connection:{connection.id}",
            changes,
        )
    return changes


async def practice_connections(session: AsyncSession, practice_id: int) -> list[Connection]:
    """The practice's connections, oldest first."""
    query = select(Connection).where(Connection.practice_id == practice_id).order_by(Connection.id)
    return list(await session.scalars(query))


async def find_connection(session: AsyncSession, practice_id: int, connection_id: int) -> Connection | None:
    """The practice's connection `connection_id`; None for a missing one and for another practice's."""
    return await session.scalar(
        select(Connection).where(Connection.id == connection_id, Connection.practice_id == practice_id)
    )
