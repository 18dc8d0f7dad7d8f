"""Persistence: SQLAlchemy models, the database set-up and the queries the engine and surfaces use."""
