"""Asking a connection's PMS which of its patients may be ours: `suggest_accounts` (patients/accounts.py)
with the connector opened and closed around it, a time limit, and every way the PMS can fail to answer
turned into `SuggestionsUnavailable` with a message for staff.

`GET /v1/patients/{id}/suggestions` and the dashboard's patient page both answer with it. Names and birth
dates are compared, never logged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from ledgerlink.connectors.base import PmsError
from ledgerlink.connectors.registry import open_connector
from ledgerlink.errors import InvalidInput, LedgerlinkError
from ledgerlink.patients.accounts import Suggestion, suggest_accounts
from ledgerlink.store.models import Connection, Patient

SUGGESTION_TIMEOUT_S = 15.0  # a PMS that does not answer must not hold the request


class SuggestionsUnavailable(LedgerlinkError):
    """The PMS could not be asked (it did not answer, refused, or the connection cannot be opened)."""

    code = "PMS_UNAVAILABLE"

    def __init__(self, message: str, *, settings_problem: bool = False) -> None:
        super().__init__(message, field="connection_id")
        self.settings_problem = settings_problem  # the connection's settings are at fault, not the PMS


async def pms_suggestions(
    session: AsyncSession,
    connection: Connection,
    patient: Patient,
    data_dir: Path,
    *,
    timeout_s: float = SUGGESTION_TIMEOUT_S,
) -> list[Suggestion]:
    """The PMS's patients that may be `patient`, best first; `SuggestionsUnavailable` when it cannot be
    asked. A pull connection is refused by `open_connector` (`InvalidInput`, as a settings problem)."""
    try:
        connector = open_connector(connection.kind, connection.settings, data_dir)
    except InvalidInput as exc:
        raise SuggestionsUnavailable(
            f"The PMS could not be asked for suggestions: {exc.message}", settings_problem=True
        ) from None
    try:
        async with asyncio.timeout(timeout_s):
            return await suggest_accounts(session, connector, connection, patient)
    except PmsError as exc:
        raise SuggestionsUnavailable(f"The PMS could not be asked for suggestions: {exc.message}") from None
    except TimeoutError:
        raise SuggestionsUnavailable(
            f"The PMS did not answer within {timeout_s:g} seconds. Try again later."
        ) from None
    except (OSError, httpx.HTTPError, SQLAlchemyError) as exc:
        raise SuggestionsUnavailable(
            f"The PMS could not be asked for suggestions ({type(exc).__name__}). Try again later."
        ) from None
    finally:
        await connector.close()
