"""Bad secrets and settings get a clear error and change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledgerlink.connectors.registry import open_connector
from ledgerlink.errors import InvalidInput
from ledgerlink.secrets import SecretBox


def test_a_sealed_value_opens_only_with_its_own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGERLINK_SECRET_KEY", raising=False)
    box = SecretBox.for_data_dir(tmp_path / "a")
    sealed = box.seal("customer-key")
    assert sealed != "customer-key" and box.open(sealed) == "customer-key"
    assert (tmp_path / "a" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert box.seal(sealed) == sealed  # sealing twice changes nothing
    other = SecretBox.for_data_dir(tmp_path / "b")
    with pytest.raises(InvalidInput, match="cannot be opened with this installation's key"):
        other.open(sealed)


def test_a_malformed_secret_key_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERLINK_SECRET_KEY", "not-a-key")
    with pytest.raises(InvalidInput, match="LEDGERLINK_SECRET_KEY is not a Fernet key"):
        SecretBox.for_data_dir(tmp_path)
    assert not (tmp_path / "secret.key").exists()


def test_a_sandbox_with_an_unknown_time_zone_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="unknown time zone 'Mars/Base'"):
        open_connector("sandbox", {"path": "pms.db", "timezone": "Mars/Base"}, tmp_path)
    assert not (tmp_path / "sandbox" / "pms.db").exists()
