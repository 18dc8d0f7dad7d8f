"""Builds the connector a connection names. New PMS kinds register here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ledgerlink.connectors.base import PmsConnector
from ledgerlink.connectors.opendental import OpenDentalConnector, OpenDentalSettings, seal_settings
from ledgerlink.connectors.opendental.direct_db import (
    DirectDbConnector,
    DirectDbSettings,
    seal_direct_settings,
)
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.errors import InvalidInput
from ledgerlink.practices import PULL_KIND
from ledgerlink.secrets import SecretBox

M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], kind: str, values: dict[str, Any]) -> M:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"bad {kind} settings: {problems}", field="settings") from None


def sandbox_settings(raw: dict[str, Any], data_dir: Path) -> SandboxSettings:
    values = dict(raw)
    path = Path(values.get("path") or "sandbox.db")
    values["path"] = path if path.is_absolute() else data_dir / "sandbox" / path
    return _validated(SandboxSettings, "sandbox", values)


def opendental_settings(raw: dict[str, Any]) -> OpenDentalSettings:
    return _validated(OpenDentalSettings, "opendental", raw)


def is_direct_db(kind: str, raw: dict[str, Any]) -> bool:
    """An Open Dental connection in the unsafe direct-database mode (see connectors/opendental/direct_db)."""
    return kind == "opendental" and str(raw.get("unsafe_direct_db", "")).strip().lower() in (
        "true",
        "1",
        "yes",
    )


def settings_to_store(kind: str, raw: dict[str, Any], data_dir: Path) -> dict[str, Any]:
    """Connection settings as they should be stored: secrets sealed with the installation's key."""
    if is_direct_db(kind, raw):
        return seal_direct_settings(raw, SecretBox.for_data_dir(data_dir))
    if kind == "opendental":
        return seal_settings(raw, SecretBox.for_data_dir(data_dir))
    return dict(raw)


def open_connector(
    kind: str, settings: dict[str, Any], data_dir: Path, *, http: httpx.AsyncClient | None = None
) -> PmsConnector:
    """The connector for a connection; opening it makes no request. `http` is shared by HTTP connectors
    (many offices in one process need one connection pool, not one each)."""
    if kind == PULL_KIND:
        raise InvalidInput(
            "a pull connection has no connector to run: the PMS downloads its transactions and reports "
            "them loaded or failed itself, through the pull API (see docs/pull-api.md)",
            field="kind",
        )
    if kind == "sandbox":
        return SandboxConnector(sandbox_settings(settings, data_dir))
    if is_direct_db(kind, settings):
        direct = _validated(DirectDbSettings, "opendental (unsafe_direct_db)", settings)
        return DirectDbConnector(direct, SecretBox.for_data_dir(data_dir))
    if kind == "opendental":
        checked = opendental_settings(settings)
        box = SecretBox.for_data_dir(data_dir) if checked.has_sealed_keys else None
        return OpenDentalConnector(checked, secret_box=box, http=http)
    raise InvalidInput(f"unknown connector kind {kind!r}", field="kind")
