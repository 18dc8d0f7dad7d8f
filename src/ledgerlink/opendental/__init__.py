"""Open Dental as a system: its schema and the business rules it applies when a payment is written.

`OpenDentalOffice` (office.py) holds Open Dental's own behaviour for the few operations ledgerlink needs
(a payment with its splits, a refund, an adjustment, a task, a commlog), on SQLite or MariaDB. It is the one
implementation behind three things: the sandbox PMS (in process), the Open Dental API peer (peer/, an ASGI
app serving Open Dental's REST API over it) and the unsafe direct-database connector mode.
"""
