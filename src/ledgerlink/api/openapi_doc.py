"""The API's OpenAPI document as published in docs/openapi.json: `python -m ledgerlink.api.openapi_doc`.

Generated from the routes themselves, so the file cannot drift from the code unnoticed (a test compares it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ledgerlink.api.app import create_app


def openapi_document() -> dict[str, Any]:
    # The store is opened only when the app starts serving; building the document touches nothing.
    return create_app("sqlite+aiosqlite:///:memory:", Path(".")).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
