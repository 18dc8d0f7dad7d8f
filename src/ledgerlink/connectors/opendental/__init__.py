"""The Open Dental connector: writes payments back through Open Dental's REST API (docs/connectors/opendental.md)."""

from ledgerlink.connectors.opendental.connector import OpenDentalConnector
from ledgerlink.connectors.opendental.settings import OpenDentalSettings, seal_settings

__all__ = ["OpenDentalConnector", "OpenDentalSettings", "seal_settings"]
