"""Load error codes: the words a writeback failure is shown with, in the CLI, the API and the dashboard."""

from __future__ import annotations

import enum


class LoadErrorCode(enum.StrEnum):
    INVALID_PATIENT_ID = "INVALID_PATIENT_ID"
    ORIGINAL_NOT_FOUND = "ORIGINAL_NOT_FOUND"
    ORIGINAL_NOT_POSTED = "ORIGINAL_NOT_POSTED"
    REFUND_EXCEEDS_ORIGINAL = "REFUND_EXCEEDS_ORIGINAL"
    PMS_REJECTED = "PMS_REJECTED"
    PMS_UNREACHABLE = "PMS_UNREACHABLE"
    PMS_CONFIGURATION = "PMS_CONFIGURATION"
    MAY_BE_IN_PMS = "MAY_BE_IN_PMS"
    HELD_FOR_STAFF = "HELD_FOR_STAFF"

    @property
    def explanation(self) -> str:
        """What the code means for the front desk, and what to do about it."""
        return _EXPLANATIONS[self]


_EXPLANATIONS = {
    LoadErrorCode.HELD_FOR_STAFF: (
        "The PMS cannot take this entry automatically; a task in the PMS says exactly what to enter. "
        "Post it by hand, then Clear it."
    ),
    LoadErrorCode.MAY_BE_IN_PMS: (
        "An earlier attempt may already be in the PMS. Look for it on the patient's ledger: if it is "
        "there, Clear it; if not, fix the cause and Retry (ledgerlink looks again before posting)."
    ),
    LoadErrorCode.INVALID_PATIENT_ID: (
        "The patient has no PMS account number, or the PMS does not know it. "
        "Fix the patient's account number, then Retry."
    ),
    LoadErrorCode.ORIGINAL_NOT_FOUND: (
        "This refund, void or chargeback is for a payment ledgerlink never received, so it cannot tell "
        "which ledger entry to reverse. Import the original payment, then Retry; or post it by hand in "
        "the PMS, then Clear it."
    ),
    LoadErrorCode.ORIGINAL_NOT_POSTED: (
        "The payment this reverses never reached the PMS. Get the original payment posted first, then "
        "Retry this one, or post it by hand and Clear it."
    ),
    LoadErrorCode.REFUND_EXCEEDS_ORIGINAL: (
        "The refunds of this payment add up to more than was posted for it. Check the patient's ledger, "
        "post what is right by hand, then Clear it."
    ),
    LoadErrorCode.PMS_REJECTED: (
        "The PMS refused this entry for the reason shown with it. Fix what it names, then Retry."
    ),
    LoadErrorCode.PMS_UNREACHABLE: (
        "The PMS did not answer. ledgerlink keeps trying by itself; Retry to try again now."
    ),
    LoadErrorCode.PMS_CONFIGURATION: (
        "The link to the PMS is set up wrongly (for example a payment type the PMS does not have). Ask "
        "your administrator to fix the connection settings, then Retry."
    ),
}
