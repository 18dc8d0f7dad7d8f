"""Structured logs (structlog) to stderr. Events carry ids and counts only: never patient names, birth
dates or card data, so logs can be shipped anywhere."""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Whatever `sys.stderr` is when a line is written: a test runner or a CLI harness swaps it (and may
    close the one it swapped in), and a logger holding the old object would then fail to log."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "WARNING") -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.WARNING
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger; used as a library (no `configure_logging` call), ledgerlink logs warnings and worse to
    stderr, never structlog's default of everything to stdout, which would mix logs into command output."""
    if not structlog.is_configured():
        configure_logging()
    return structlog.get_logger(name)  # type: ignore[no-any-return]
