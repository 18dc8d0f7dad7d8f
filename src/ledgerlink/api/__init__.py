"""The HTTP API (`ledgerlink serve`): FastAPI under uvicorn, versioned under /v1. See docs/api.md."""
