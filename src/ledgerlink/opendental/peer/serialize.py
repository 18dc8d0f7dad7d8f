"""Open Dental's JSON shapes, as its API sends them (research/opendental.md §9.2).

Open Dental's API is not consistent about types, and a connector tested against a peer that "cleans it up"
would break on the real thing, so the shapes here copy the documented examples field by field:

- on a payment `PayNum`, `PayType`, `PatNum` and `DepositNum` are JSON numbers while `PayAmt` and
  `ClinicNum` are strings; on an adjustment `AdjAmt` is a number; a commlog's `CommType` is a string;
- booleans are the strings "true" / "false", enums are their C# names ("API", "OfficeProcessed", "Patient");
- dates are "yyyy-MM-dd", date-times "yyyy-MM-dd HH:mm:ss", and "no date" is "0001-01-01".

Money never becomes a float here: amounts arrive as `Decimal` and leave as the decimal text Open Dental's
C# `double` would print ("339" for 339.00, "129.9" for 129.90). Because the standard `json` module cannot
write a `Decimal` as a number, `dumps` is a small encoder for the flat documents this module builds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal

from ledgerlink.opendental.office import OdAdjustment, OdCommlog, OdDefinition, OdPatient, OdPayment, OdTask

JsonValue = str | int | bool | None | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
JsonObject = dict[str, JsonValue]

NO_DATE = "0001-01-01"
NO_DATE_TIME = "0001-01-01 00:00:00"

# Open Dental's C# enums, indexed by their stored value (OpenDentBusiness/TableTypes).
CREDIT_CARD_SOURCES = (
    "None",
    "XServer",
    "XWeb",
    "PayConnect",
    "XServerPayConnect",
    "XWebPortalLogin",
    "PaySimple",
    "PaySimpleACH",
    "PayConnectPortal",
    "PayConnectPortalLogin",
    "CareCredit",
    "EdgeExpressRCM",
    "EdgeExpressCNP",
    "API",
    "EdgeExpressPaymentPortal",
    "EdgeExpressPaymentPortalGuest",
    "PayConnectPaymentPortal",
    "PayConnectPaymentPortalGuest",
    "PaySimplePaymentPortal",
    "PaySimplePaymentPortalGuest",
    "PaySimplePaymentPortalACH",
    "XWebPaymentPortal",
    "XWebPaymentPortalGuest",
)
PAT_STATUSES = ("Patient", "NonPatient", "Inactive", "Archived", "Deleted", "Deceased", "Prospective")
TASK_STATUSES = ("New", "Viewed", "Done")
TASK_OBJECT_TYPES = ("None", "Patient", "Appointment")
COMM_ITEM_MODES = ("None", "Email", "Mail", "Phone", "InPerson", "Text", "EmailAndText", "PhoneAndText")
COMM_SENT_OR_RECEIVED = ("Neither", "Sent", "Received")


def enum_name(names: Sequence[str], value: int) -> str:
    """The C# name of an enum value; an unknown value is printed as its number, as .NET does."""
    return names[value] if 0 <= value < len(names) else str(value)


def amount_text(amount: Decimal) -> str:
    """An amount as C#'s `double.ToString()` prints it: no trailing zeros, no exponent ("339", "-129.99")."""
    if amount == 0:
        return "0"
    return format(amount.normalize(), "f")


def amount_number(amount: Decimal) -> str:
    """An amount as Newtonsoft writes a `double` JSON number: always with a decimal point ("-25.0")."""
    text = amount_text(amount)
    return text if "." in text else text + ".0"


def date_text(value: date | None) -> str:
    return value.isoformat() if value is not None else NO_DATE


def date_time_text(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def flag(value: bool) -> str:
    return "true" if value else "false"


class JsonNumber(str):
    """Text written into the JSON unquoted: an exact decimal number (a money amount the API sends as a
    number), which `json.dumps` could only write by going through a float."""

    __slots__ = ()


def dumps(document: JsonValue) -> bytes:
    """Encode a document built by this module (str, JsonNumber, int, bool, None, lists and dicts)."""
    return _encode(document).encode()


_encode_string = json.JSONEncoder(ensure_ascii=False).encode


def _encode(value: JsonValue) -> str:
    if isinstance(value, str):
        return str(value) if isinstance(value, JsonNumber) else _encode_string(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_encode_string(key)}:{_encode(item)}" for key, item in value.items()) + "}"
    return "[" + ",".join(_encode(item) for item in value) + "]"


def payment(pay: OdPayment, pay_type_name: str, *, server_date_time: datetime | None = None) -> JsonObject:
    """A payment as `GET /payments` lists it and `POST /payments` returns it.

    `serverDateTime` appears on list items only (the documented GET example), so callers pass it there.
    CheckNum, BankBranch, DepositNum, Receipt, IsRecurringCC, ProcessStatus, RecurringChargeDate and
    IsCcCompleted are the values every API payment has: the office does not store others.
    """
    document: JsonObject = {
        "PayNum": pay.pay_num,
        "PayType": pay.pay_type,
        "payType": pay_type_name,
        "PayDate": pay.pay_date.isoformat(),
        "PayAmt": amount_text(pay.pay_amt),
        "CheckNum": "",
        "BankBranch": "",
        "PayNote": pay.pay_note,
        "PatNum": pay.pat_num,
        "ClinicNum": str(pay.clinic_num),
        "DateEntry": pay.date_entry.isoformat(),
        "DepositNum": 0,
        "Receipt": "",
        "IsRecurringCC": "false",
        "PaymentSource": enum_name(CREDIT_CARD_SOURCES, pay.payment_source),
        "ProcessStatus": "OfficeProcessed",
        "RecurringChargeDate": NO_DATE,
        "IsCcCompleted": "false",
    }
    if server_date_time is not None:
        document["serverDateTime"] = date_time_text(server_date_time)
    return document


def patient(pat: OdPatient) -> JsonObject:
    """The fields of `GET /patients/{PatNum}` that the office keeps (a subset of Open Dental's 40-odd)."""
    return {
        "PatNum": pat.pat_num,
        "LName": pat.last_name,
        "FName": pat.first_name,
        "MiddleI": "",
        "Preferred": "",
        "PatStatus": enum_name(PAT_STATUSES, pat.pat_status),
        "Birthdate": date_text(pat.birthdate),
        "Guarantor": pat.guarantor,
        "PriProv": pat.pri_prov,
        "ChartNumber": pat.chart_number,
        "ClinicNum": pat.clinic_num,
    }


def definition(defn: OdDefinition) -> JsonObject:
    return {
        "DefNum": defn.def_num,
        "Category": defn.category,
        "ItemName": defn.item_name,
        "ItemValue": defn.item_value,
        "IsHidden": flag(defn.is_hidden),
    }


def adjustment(adj: OdAdjustment, adj_type_name: str) -> JsonObject:
    """An adjustment as `POST /adjustments` returns it: AdjAmt is a JSON number, unlike a payment's PayAmt."""
    return {
        "AdjNum": adj.adj_num,
        "AdjDate": adj.adj_date.isoformat(),
        "AdjAmt": JsonNumber(amount_number(adj.adj_amt)),
        "PatNum": adj.pat_num,
        "AdjType": adj.adj_type,
        "adjType": adj_type_name,
        "ProvNum": adj.prov_num,
        "AdjNote": adj.adj_note,
        "ProcDate": adj.proc_date.isoformat(),
        "ProcNum": 0,
        "DateEntry": adj.date_entry.isoformat(),
        "ClinicNum": adj.clinic_num,
    }


def task(made: OdTask) -> JsonObject:
    """A task as `POST /tasks` returns it, in the order of the documented Tasks GET example."""
    stamp = date_time_text(made.date_time_entry)
    return {
        "TaskNum": made.task_num,
        "TaskListNum": made.task_list_num,
        "DateTask": NO_DATE,
        "KeyNum": made.key_num,
        "Descript": made.descript,
        "TaskStatus": enum_name(TASK_STATUSES, made.task_status),
        "IsRepeating": "false",
        "DateType": "None",
        "FromNum": 0,
        "ObjectType": enum_name(TASK_OBJECT_TYPES, made.object_type),
        "DateTimeEntry": stamp,
        "UserNum": made.user_num,
        "DateTimeFinished": NO_DATE_TIME,
        "PriorityDefNum": made.priority_def_num,
        "ReminderGroupId": "",
        "ReminderType": "NoReminder",
        "ReminderFrequency": 0,
        "DateTimeOriginal": stamp,
        "SecDateTEdit": stamp,
        "DescriptOverride": "",
        "IsReadOnly": "false",
    }


def commlog(made: OdCommlog, comm_type_name: str) -> JsonObject:
    """A commlog as `POST /commlogs` returns it (the documented example). CommType is a string here."""
    return {
        "CommlogNum": made.commlog_num,
        "PatNum": made.pat_num,
        "CommDateTime": date_time_text(made.comm_date_time),
        "CommType": str(made.comm_type),
        "commType": comm_type_name,
        "Note": made.note,
        "Mode_": enum_name(COMM_ITEM_MODES, made.mode),
        "SentOrReceived": enum_name(COMM_SENT_OR_RECEIVED, made.sent_or_received),
    }
