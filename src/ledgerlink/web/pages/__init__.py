"""The dashboard's pages, one module each; `MODULES` is the order their routes are added in."""

from __future__ import annotations

from types import ModuleType

from ledgerlink.web.pages import audit, imports, patients, people, reconcile, reports, settings, today

MODULES: tuple[ModuleType, ...] = (today, reports, reconcile, patients, imports, settings, people, audit)
