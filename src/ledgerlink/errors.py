"""Errors that reach users: each has a code to act on and a message in plain words (no stack traces)."""

from __future__ import annotations


class LedgerlinkError(Exception):
    code = "ERROR"
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(LedgerlinkError):
    code = "NOT_FOUND"
    exit_code = 3


class Conflict(LedgerlinkError):
    code = "CONFLICT"
    exit_code = 4


class InvalidInput(LedgerlinkError):
    code = "INVALID_INPUT"
    exit_code = 2


class SyncAlreadyRunning(Conflict):
    code = "SYNC_ALREADY_RUNNING"
