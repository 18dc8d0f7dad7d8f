"""The pull API's service layer: for PMSs that download transactions and report them loaded themselves.

A practice's "pull" connection is driven by its PMS instead of a connector: `download` decides what is due
with the engine's rules and hands it out, `acknowledge` records what the PMS loaded or failed to load,
`runs` keeps the sync run (and its seed-000 report) each download belongs to, and `alerts` is the feed
the PMS shows as tasks. The HTTP routes are in `ledgerlink.api.pull`; docs/pull-api.md is for vendors.
"""
