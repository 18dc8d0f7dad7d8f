"""Alerts out of the PMS: a digest of failed and unmatched writebacks by e-mail and signed webhooks.

`targets` manages where a practice's digest goes, `digest` builds and sends it (`send_digests`), `notice`
is what one message says in each form, and `email` and `webhooks` carry it. docs/alerts.md explains the
whole for operators and for receivers of the webhooks.
"""
