"""The `ledgerlink` command line (Typer + Rich): thin commands that call the services."""

from ledgerlink.cli.app import app, main

__all__ = ["app", "main"]
