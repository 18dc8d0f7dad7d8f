"""Configuration from the environment. Every setting is documented in the README's Configuration table."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "ledgerlink"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEDGERLINK_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    """Where the SQLite database and the sandbox PMS files live."""

    database_url: str | None = None
    """SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db. Default: SQLite in `data_dir`."""

    log_level: str = "WARNING"
    """Level of the structured logs on stderr (DEBUG, INFO, WARNING, ERROR)."""

    # Alerts out of the PMS (docs/alerts.md): the digest of failed and unmatched writebacks.
    digest_interval_seconds: int = Field(default=900, ge=10)
    """How often a worker sends each practice the digest of its new alerts."""

    dashboard_url: str | None = None
    """The dashboard's address as staff reach it (https://ledgerlink.example.com); digests link to it.
    Unset: digests show the path only (/writebacks?status=failed)."""

    smtp_host: str | None = None
    """SMTP server for e-mail digests. Unset: e-mail targets are reported as not configured."""

    smtp_port: int = Field(default=25, ge=1, le=65535)
    """SMTP port (587 for submission with STARTTLS)."""

    smtp_username: str | None = None
    """SMTP login; unset: no authentication."""

    smtp_password: SecretStr | None = None
    """SMTP password (never printed)."""

    smtp_from: str = "ledgerlink@localhost"
    """The From address of e-mail digests."""

    smtp_starttls: bool = False
    """Upgrade the SMTP connection with STARTTLS (certificate verified) before logging in."""

    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    """How long one SMTP conversation may take."""

    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long one webhook request may take before it counts as failed (and is tried again)."""

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'ledgerlink.db'}"

    @property
    def sandbox_dir(self) -> Path:
        return self.data_dir / "sandbox"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
