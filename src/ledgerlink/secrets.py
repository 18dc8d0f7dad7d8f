"""Secrets at rest (PMS API keys): sealed with Fernet (AES-128-CBC + HMAC-SHA256) before they are stored.

The key comes from `LEDGERLINK_SECRET_KEY` (a Fernet key: `ledgerlink` prints how to make one in the docs),
or, when unset, from `secret.key` in the data directory, created on first use with mode 0600. Sealed
values carry a prefix so a stored value is never mistaken for a plain one, and a value sealed with another
key fails with a clear error instead of being sent to a PMS as garbage.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from ledgerlink.errors import InvalidInput

PREFIX = "sealed:v1:"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> SecretBox:
        env = os.environ.get("LEDGERLINK_SECRET_KEY")
        if env:
            try:
                return cls(env.strip().encode())
            except ValueError:
                raise InvalidInput(
                    "LEDGERLINK_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes)",
                    field="LEDGERLINK_SECRET_KEY",
                ) from None
        path = data_dir / "secret.key"
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        return cls(path.read_bytes().strip())

    @staticmethod
    def is_sealed(value: str) -> bool:
        return value.startswith(PREFIX)

    def seal(self, value: str) -> str:
        if self.is_sealed(value):
            return value
        return PREFIX + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str) -> str:
        """The plain value of a sealed one (a plain value is returned as it is)."""
        if not self.is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise InvalidInput(
                "a stored secret cannot be opened with this installation's key "
                "(LEDGERLINK_SECRET_KEY or secret.key in the data directory changed?); set the secret again",
                field="settings",
            ) from None
