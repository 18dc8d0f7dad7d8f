"""An Open Dental connection's settings, as stored on the connection (JSON) and checked before use.

The two API keys are secrets: they are stored sealed (`ledgerlink.secrets.SecretBox`), held here as
`SecretStr` so that no repr, log line or error message shows them, and opened only by the connector when
it builds the `Authorization` header.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ledgerlink.connectors.sandbox.connector import DEFAULT_PAYMENT_TYPE_NAMES
from ledgerlink.domain.transactions import PaymentType
from ledgerlink.secrets import SecretBox

REMOTE_API = "https://api.opendental.com/api/v1"
SECRET_FIELDS = ("developer_key", "customer_key")


class OpenDentalSettings(BaseModel):
    """Everything ledgerlink needs to write one office's payments through Open Dental's REST API.

    Documented for offices in docs/connectors/opendental.md; the defaults are the safe choice for an office
    that has only entered its keys.
    """

    model_config = ConfigDict(extra="forbid")

    # Remote API (needs the office's eConnector); Local API http://localhost:30222/api/v1 or API Service
    # :30223 on the office network. Any URL is accepted: integrators put proxies and test peers in front.
    base_url: str = REMOTE_API
    developer_key: SecretStr = Field(min_length=1)
    customer_key: SecretStr = Field(min_length=1)
    # Open Dental throttles per customer key by plan: 0.2 (free), 1 (paid), 2 (enterprise) requests/second.
    requests_per_second: float = Field(default=1.0, gt=0, le=100)
    account_number: Literal["patnum", "chartnumber"] = "patnum"
    payment_type_names: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PAYMENT_TYPE_NAMES))
    clinic_num: int | None = Field(default=None, ge=0)  # None: Open Dental uses the patient's clinic
    is_patient_preferred: bool = False  # False: Open Dental spreads the payment over the family (FIFO)
    # Open Dental's API has no partial refund; "negative_payment" posts one (how Open Dental's own manual
    # records a refund), "task" leaves it to staff. See docs/connectors/opendental.md for the reasoning.
    partial_refunds: Literal["negative_payment", "task"] = "negative_payment"
    # Adjustment types (definition Category 1) for gross-plus-fee fee entries: a '+' type for the fee and,
    # because Open Dental requires an adjustment's sign to match its type, a '-' type to take it back on a
    # void. The defaults are Open Dental's stock types.
    fee_adjustment_type_name: str = Field(default="Misc Pos Adjustment", min_length=1)
    fee_reversal_adjustment_type_name: str = Field(default="Misc Neg Adjustment", min_length=1)
    task_list_num: int | None = Field(default=None, gt=0)  # where alerts land (Tasks POST TaskListNum)
    task_user_num: int | None = Field(default=None, gt=0)  # the Open Dental user the tasks are from
    commlog_on_patient: bool = True  # an alert about a known patient also leaves a commlog on them
    timeout_s: float = Field(default=15.0, gt=0, le=120)
    # True selects the direct-database mode instead (connectors/opendental/direct_db.py, its own settings):
    # the registry routes such a connection there, so here it is always False.
    unsafe_direct_db: bool = False

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = value.strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise ValueError("must be an http:// or https:// URL, e.g. " + REMOTE_API)
        return url

    @field_validator("payment_type_names", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """The CLI gives every setting as text: a JSON object is accepted for the mapping."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError('must be a JSON object such as {"online": "Credit Card"}') from None
        return value

    @field_validator("payment_type_names")
    @classmethod
    def _known_payment_types(cls, value: dict[str, str]) -> dict[str, str]:
        known = {t.value for t in PaymentType}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown payment types {unknown}; the types are {sorted(known)}")
        empty = sorted(k for k, name in value.items() if not name.strip())
        if empty:
            raise ValueError(f"empty Open Dental payment type name for {empty}")
        return {k: name.strip() for k, name in value.items()}

    @field_validator("fee_adjustment_type_name", "fee_reversal_adjustment_type_name")
    @classmethod
    def _trimmed(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an Open Dental adjustment type")
        return value.strip()

    @property
    def has_sealed_keys(self) -> bool:
        return any(
            SecretBox.is_sealed(getattr(self, name).get_secret_value().strip()) for name in SECRET_FIELDS
        )

    def opened_keys(self, box: SecretBox | None) -> tuple[str, str]:
        """The plain developer and customer keys (stored values may be sealed)."""
        values = []
        for name in SECRET_FIELDS:
            stored: str = getattr(self, name).get_secret_value().strip()
            if SecretBox.is_sealed(stored):
                if box is None:
                    raise ValueError(f"{name} is sealed, and no secret box was given to open it")
                stored = box.open(stored)
            values.append(stored.strip())
        return values[0], values[1]


def seal_settings(
    raw: dict[str, Any], box: SecretBox, fields: tuple[str, ...] = SECRET_FIELDS
) -> dict[str, Any]:
    """A copy of raw connection settings with the secret `fields` (the API keys by default) sealed, ready
    to be stored.

    Values are trimmed first: pasted keys often carry spaces (seed 002).
    """
    sealed = dict(raw)
    for name in fields:
        value = sealed.get(name)
        if isinstance(value, str) and value.strip():
            sealed[name] = box.seal(value.strip())
    return sealed
