"""Column presets: which headers of a PMS patient export hold which patient field, and what its statuses mean.

Headers are compared after `normalise_header`, so "First Name", "first_name" and "FIRSTNAME" are the same.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Field(enum.StrEnum):
    """A patient field a column can be mapped to (the targets of a column map)."""

    PATIENT_ID = "patient_id"  # the payment platform's patient id (Patient.patient_ref)
    FIRST_NAME = "first_name"
    LAST_NAME = "last_name"
    BIRTH_DATE = "birth_date"
    EMAIL = "email"
    PHONE = "phone"
    ACCOUNT_NUMBER = "account_number"  # the PMS account number on the connection
    STATUS = "status"
    # Open Dental's own ids; `account_number_source` picks which of them is the account number.
    PATNUM = "patnum"
    CHARTNUMBER = "chartnumber"


class PatientStatus(enum.Enum):
    ACTIVE = "active"
    INACTIVE = "inactive"
    DELETED = "deleted"  # never imported


def normalise_header(text: str) -> str:
    """A header as compared: lower case, without spaces, underscores or hyphens ("E-mail" is "email")."""
    return text.strip().lower().replace(" ", "").replace("_", "").replace("-", "")


def normalise_status(text: str) -> str:
    return text.strip().lower().replace(" ", "")


ACCOUNT_NUMBER_SOURCES = ("patnum", "chartnumber")

_YES_NO: Mapping[str, PatientStatus] = {
    "active": PatientStatus.ACTIVE,
    "inactive": PatientStatus.INACTIVE,
    "1": PatientStatus.ACTIVE,
    "0": PatientStatus.INACTIVE,
    "yes": PatientStatus.ACTIVE,
    "no": PatientStatus.INACTIVE,
    "y": PatientStatus.ACTIVE,
    "n": PatientStatus.INACTIVE,
    "true": PatientStatus.ACTIVE,
    "false": PatientStatus.INACTIVE,
}

# Open Dental's patient.PatStatus, by name as its UI and reports show it and by its stored number.
_PAT_STATUS_NAMES = ("Patient", "NonPatient", "Inactive", "Archived", "Deleted", "Deceased", "Prospective")
_PAT_STATUS_MEANING = {
    "Patient": PatientStatus.ACTIVE,
    "NonPatient": PatientStatus.ACTIVE,
    "Inactive": PatientStatus.INACTIVE,
    "Archived": PatientStatus.INACTIVE,
    "Deleted": PatientStatus.DELETED,
    "Deceased": PatientStatus.INACTIVE,
    "Prospective": PatientStatus.ACTIVE,
}
_OPEN_DENTAL_STATUSES: Mapping[str, PatientStatus] = {
    **{normalise_status(name): _PAT_STATUS_MEANING[name] for name in _PAT_STATUS_NAMES},
    **{str(number): _PAT_STATUS_MEANING[name] for number, name in enumerate(_PAT_STATUS_NAMES)},
}


@dataclass(frozen=True)
class ColumnPreset:
    """How one kind of export names its columns.

    `headers` lists, per field, the headers that may hold it; when several are present, the first one with
    a value in a row wins (Open Dental's mobile phone before the home phone). Without a patient id in a row,
    the patient's ref is `ref_prefix` + the `ref_field` value (Open Dental: "od-<PatNum>"), or else
    "imp-<account number>".
    """

    name: str
    description: str
    headers: Mapping[Field, tuple[str, ...]]
    statuses: Mapping[str, PatientStatus]
    status_help: str
    # account_number_source -> the field that then is the account number; empty: the account_number column.
    account_number_sources: Mapping[str, Field] = field(default_factory=dict)
    ref_field: Field | None = None
    ref_prefix: str = ""

    @property
    def fields(self) -> frozenset[Field]:
        return frozenset(self.headers)


GENERIC = ColumnPreset(
    name="generic",
    description="Any spreadsheet with the columns patient_id, first_name, last_name, birth_date, email, "
    "phone, account_number and status",
    headers={
        Field.PATIENT_ID: ("patient_id", "patient_ref", "platform_patient_id"),
        Field.FIRST_NAME: ("first_name", "given_name"),
        Field.LAST_NAME: ("last_name", "surname", "family_name"),
        Field.BIRTH_DATE: ("birth_date", "birthdate", "date_of_birth", "dob"),
        Field.EMAIL: ("email", "email_address"),
        Field.PHONE: ("phone", "mobile_phone", "cell_phone", "home_phone", "phone_number"),
        Field.ACCOUNT_NUMBER: (
            "account_number",
            "account",
            "account_no",
            "acct_number",
            "3rd Party Software Acct Number",
            "pms_account_number",
        ),
        Field.STATUS: ("status", "active"),
    },
    statuses=_YES_NO,
    status_help="active/inactive, 1/0, yes/no or true/false",
)

OPEN_DENTAL = ColumnPreset(
    name="opendental",
    description="An Open Dental patient export (PatNum, LName, FName, Birthdate, Email, HmPhone, "
    "WirelessPhone, ChartNumber, PatStatus)",
    headers={
        Field.PATIENT_ID: ("patient_id",),
        Field.PATNUM: ("PatNum",),
        Field.CHARTNUMBER: ("ChartNumber",),
        Field.FIRST_NAME: ("FName",),
        Field.LAST_NAME: ("LName",),
        Field.BIRTH_DATE: ("Birthdate",),
        Field.EMAIL: ("Email",),
        Field.PHONE: ("WirelessPhone", "HmPhone", "WkPhone"),
        Field.STATUS: ("PatStatus",),
    },
    statuses=_OPEN_DENTAL_STATUSES,
    status_help="Patient, NonPatient, Inactive, Archived, Deleted, Deceased, Prospective or 0-6",
    account_number_sources={"patnum": Field.PATNUM, "chartnumber": Field.CHARTNUMBER},
    ref_field=Field.PATNUM,
    ref_prefix="od-",
)

PRESETS: dict[str, ColumnPreset] = {preset.name: preset for preset in (GENERIC, OPEN_DENTAL)}
