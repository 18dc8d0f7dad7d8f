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
        "The PMS cannot take this entry automatically with the connection's settings; the task left in "
        "the PMS says exactly what to enter. Post it by hand, then Clear it here."
    ),
    LoadErrorCode.MAY_BE_IN_PMS: (
        "An earlier attempt may have reached the PMS, and the entry can no longer be written as it was "
        "(its settings or patient changed). Look for it on the patient's ledger: Clear it if it is there; "
        "otherwise fix the cause and Retry (ledgerlink looks for it again before posting)."
    ),
    LoadErrorCode.INVALID_PATIENT_ID: (
        "The patient has no PMS account number, or the PMS does not know it. "
        "Fix the patient's account number, then Retry."
    ),
    LoadErrorCode.ORIGINAL_NOT_FOUND: (
        "This refund, void or chargeback names a payment ledgerlink has never seen. "
        "Import the original payment, then Retry, or post it by hand and Clear."
    ),
    LoadErrorCode.ORIGINAL_NOT_POSTED: (
        "The payment this reverses was never posted to the PMS. "
        "Fix and post the original first, then Retry, or post by hand and Clear."
    ),
    LoadErrorCode.REFUND_EXCEEDS_ORIGINAL: (
        "The refunds of this payment add up to more than was posted. Check the ledger, post by hand and Clear."
    ),
    LoadErrorCode.PMS_REJECTED: "The PMS refused the entry. Read the message, fix the cause, then Retry.",
    LoadErrorCode.PMS_UNREACHABLE: (
        "The PMS did not answer after several tries. ledgerlink keeps retrying; Retry to try now."
    ),
    LoadErrorCode.PMS_CONFIGURATION: "The PMS connection is set up wrongly. Fix the connection settings, then Retry.",
}
