"""Builds the connector a connection names. New PMS kinds register here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ledgerlink.connectors.base import PmsConnector
from ledgerlink.connectors.sandbox import SandboxConnector, SandboxSettings
from ledgerlink.errors import InvalidInput


def sandbox_settings(raw: dict[str, Any], data_dir: Path) -> SandboxSettings:
    values = dict(raw)
    path = Path(values.get("path") or "sandbox.db")
    values["path"] = path if path.is_absolute() else data_dir / "sandbox" / path
    try:
        return SandboxSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"bad sandbox settings: {problems}", field="settings") from None


def open_connector(kind: str, settings: dict[str, Any], data_dir: Path) -> PmsConnector:
    if kind == "sandbox":
        return SandboxConnector(sandbox_settings(settings, data_dir))
    raise InvalidInput(f"unknown connector kind {kind!r}", field="kind")
