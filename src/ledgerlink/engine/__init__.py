"""The writeback engine: claim due writebacks, ask the connector to post them, record the outcomes."""
