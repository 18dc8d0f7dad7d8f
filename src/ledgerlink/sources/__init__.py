"""Transaction ingest from the payment platform side: the HTTP API, processor webhooks and export files."""
