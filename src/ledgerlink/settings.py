"""Configuration from the environment. Every setting is documented in the README's Configuration table."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
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
