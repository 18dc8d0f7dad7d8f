"""The sandbox PMS: a small Open-Dental-like ledger in its own SQLite file, for the demo, tests and trials."""

from ledgerlink.connectors.sandbox.connector import SandboxConnector, SandboxSettings
from ledgerlink.connectors.sandbox.ledger import SandboxLedger

__all__ = ["SandboxConnector", "SandboxLedger", "SandboxSettings"]
