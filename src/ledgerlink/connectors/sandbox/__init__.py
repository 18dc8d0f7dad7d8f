"""The sandbox PMS: an Open Dental office in process (`OpenDentalOffice` on SQLite or MariaDB), for the demo,
tests and trials."""

from ledgerlink.connectors.sandbox.connector import SandboxConnector, SandboxSettings, open_sandbox_office

__all__ = ["SandboxConnector", "SandboxSettings", "open_sandbox_office"]
