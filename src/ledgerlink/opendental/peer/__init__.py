"""The Open Dental API peer: Open Dental's REST API over an `OpenDentalOffice`, for tests and benchmarks.

`create_app(config)` builds the ASGI app; `server.running_peer(config)` runs it under uvicorn on loopback.
See docs/connectors/opendental-peer.md.
"""

from ledgerlink.opendental.peer.app import create_app
from ledgerlink.opendental.peer.config import ApiKey, Faults, PeerConfig

__all__ = ["ApiKey", "Faults", "PeerConfig", "create_app"]
