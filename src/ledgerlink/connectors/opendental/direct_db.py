"""UNSAFE direct-database mode: ledgerlink writes Open Dental's tables itself, for offices without the API.

Open Dental calls direct writers "Dangerous Integrations" (research: opendental.md section 0): the rows it
writes carry no valid SecurityHash (Open Dental salts it inside a closed library), so Open Dental shows
integrity warnings on them, and nothing Open Dental does on a write beyond the rows themselves (aging,
signals to other workstations) happens. It exists for offices that cannot use the API, behind
`unsafe_direct_db: true`, and says so loudly whenever it is opened.

What it writes is exactly what `OpenDentalOffice` writes, the same code the sandbox and the API peer use:
for a payment, the payment row, its paysplit and a securitylog row in ONE transaction with every NOT NULL
column given (strict sql_mode safe). On InnoDB a crash rolls the three back together. On MyISAM (older
offices) there are no transactions: a crash between the rows can leave a payment without its split, which
Open Dental's database maintenance later flags (PaymentMissingPaySplit deletes split-less payments). The
engine's exactly-once protocol still holds on MyISAM: the payment carries its marker, so a lookup after the
crash finds it instead of posting again. See docs/connectors/opendental.md.
"""

from __future__ import annotations

from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ledgerlink.clock import time_zone
from ledgerlink.connectors.opendental.settings import seal_settings
from ledgerlink.connectors.sandbox.connector import (
    DEFAULT_PAYMENT_TYPE_NAMES,
    SandboxConnector,
    SandboxSettings,
)
from ledgerlink.errors import InvalidInput
from ledgerlink.log import get_logger
from ledgerlink.opendental.office import OpenDentalOffice
from ledgerlink.secrets import SecretBox

log = get_logger(__name__)

WARNING = (
    "UNSAFE: this connection writes Open Dental's database directly (unsafe_direct_db). Open Dental flags "
    "rows written this way (no valid SecurityHash) and does not support it; use the API where you can."
)


class DirectDbSettings(BaseModel):
    """An Open Dental connection in direct-database mode (`unsafe_direct_db: true`)."""

    model_config = ConfigDict(extra="forbid")

    unsafe_direct_db: bool  # True, or this is not the direct mode (the registry checks before choosing it)
    # The office's Open Dental database, e.g. mysql+pymysql://user:password@server/opendental. Stored sealed.
    database_url: SecretStr
    account_number: Literal["patnum", "chartnumber"] = "patnum"
    payment_type_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PAYMENT_TYPE_NAMES))
    fee_adjustment_type_name: str = Field(default="Misc Pos Adjustment", min_length=1)
    fee_reversal_adjustment_type_name: str = Field(default="Misc Neg Adjustment", min_length=1)
    task_list_num: int = Field(default=1, gt=0)
    timezone: str | None = None  # the office's zone: its "today" bounds PayDate; None: this machine's
    batch_size: int = Field(default=100, ge=1, le=1000)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return value if value is None else time_zone(value).key

    def opened_url(self, box: SecretBox | None) -> str:
        stored = self.database_url.get_secret_value().strip()
        if box is not None:
            stored = box.open(stored)  # a plain value comes back as it is
        try:
            backend = make_url(stored).get_backend_name()
        except ArgumentError:
            raise InvalidInput(
                "bad opendental settings: database_url is not a database URL, "
                "e.g. mysql+pymysql://user:password@server/opendental",
                field="settings",
            ) from None
        if backend != "mysql":
            raise InvalidInput(
                f"bad opendental settings: database_url: Open Dental runs on MariaDB/MySQL, not {backend}",
                field="settings",
            )
        return stored


def seal_direct_settings(raw: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """The direct mode's one secret is its database URL (it carries the password)."""
    return seal_settings(raw, box, ("database_url",))


class DirectDbConnector(SandboxConnector):
    """The office logic shared with the sandbox, on the office's own database, with no fault knobs, no
    schema changes and no payment types added: a real office's database is used exactly as it is."""

    def __init__(self, settings: DirectDbSettings, box: SecretBox | None) -> None:
        url = settings.opened_url(box)
        log.warning("opendental.unsafe_direct_db", warning=WARNING)
        zone = ZoneInfo(settings.timezone) if settings.timezone else None
        office = OpenDentalOffice.open(url, create=False, tz=zone)
        try:
            office.count("payment")  # reachable, and an Open Dental database
        except SQLAlchemyError as exc:
            office.close()
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            raise InvalidInput(
                f"the Open Dental database could not be opened ({reason})", field="settings"
            ) from None
        sandbox = SandboxSettings(
            database_url=url,
            account_number=settings.account_number,
            timezone=settings.timezone,
            payment_type_names=settings.payment_type_names,
            fee_adjustment_type_name=settings.fee_adjustment_type_name,
            fee_reversal_adjustment_type_name=settings.fee_reversal_adjustment_type_name,
            task_list_num=settings.task_list_num,
            batch_size=settings.batch_size,
        )
        super().__init__(sandbox, office=office)
