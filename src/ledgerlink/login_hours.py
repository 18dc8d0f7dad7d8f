"""Login hours: when a user's clerk key works, as weekday + time windows on the practice's wall clock.

Stored as `[{"days": [0..6] (Monday=0), "start": "HH:MM", "end": "HH:MM"}]`; an empty list means any
time. A window whose end is not after its start crosses midnight: "Fri 22:00-06:00" runs from Friday 22:00
to Saturday 06:00, so the days name where a window *starts*. Times are compared on the practice's local
wall clock (zoneinfo), so "08:00" stays 08:00 on both sides of a daylight-saving change. "24:00" as an end
means the end of the day.

People type windows as `Mon-Fri 08:00-18:00` or `Sat 09:00-13:00` (days may also be listed:
`Mon,Wed,Fri 07:30-12:00`); `parse_window` reads that form and `describe` writes it back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ledgerlink.clock import time_zone
from ledgerlink.errors import InvalidInput

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {name.lower(): index for index, name in enumerate(DAY_NAMES)}
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
_HUMAN = re.compile(
    r"^\s*(?P<days>[A-Za-z,\- ]+?)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$"
)
FIELD = "login_hours"


@dataclass(frozen=True, slots=True)
class Window:
    days: tuple[int, ...]  # sorted, Monday=0
    start: int  # minutes after midnight
    end: int  # minutes after midnight; 1440 is the end of the day

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def as_json(self) -> dict[str, Any]:
        return {"days": list(self.days), "start": _clock(self.start), "end": _clock(self.end)}

    def covers(self, weekday: int, minute: int) -> bool:
        if not self.crosses_midnight:
            return weekday in self.days and self.start <= minute < self.end
        if weekday in self.days and minute >= self.start:
            return True
        return (weekday - 1) % 7 in self.days and minute < self.end


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _minutes(text: str, where: str) -> int:
    text = text.strip()
    if len(text) == 4 and text[1] == ":":
        text = "0" + text  # 8:00 -> 08:00
    if not _TIME.match(text):
        raise InvalidInput(f"{where}: {text!r} is not a time of day; use HH:MM such as 08:00", field=FIELD)
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _window(days: list[int], start: str, end: str, where: str) -> Window:
    if not days:
        raise InvalidInput(f"{where}: a window needs at least one day", field=FIELD)
    start_minute, end_minute = _minutes(start, where), _minutes(end, where)
    if start_minute == 1440:
        raise InvalidInput(f"{where}: 24:00 can only end a window", field=FIELD)
    if start_minute == end_minute:
        raise InvalidInput(
            f"{where}: start and end are both {start}; for a whole day write 00:00-24:00", field=FIELD
        )
    return Window(tuple(sorted(set(days))), start_minute, end_minute)


def validate_windows(raw: Any) -> list[dict[str, Any]]:
    """The stored form of `raw` (a list of window objects), or InvalidInput saying which window is wrong."""
    if not isinstance(raw, list):
        raise InvalidInput("login hours are a list of windows (an empty list means any time)", field=FIELD)
    windows: list[dict[str, Any]] = []
    for number, item in enumerate(raw, start=1):
        where = f"window {number}"
        if not isinstance(item, dict) or set(item) != {"days", "start", "end"}:
            raise InvalidInput(
                f'{where}: write it as {{"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}}',
                field=FIELD,
            )
        days, start, end = item["days"], item["start"], item["end"]
        if not isinstance(days, list) or not all(
            isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 6 for day in days
        ):
            raise InvalidInput(f"{where}: days are numbers 0 (Monday) to 6 (Sunday)", field=FIELD)
        if not isinstance(start, str) or not isinstance(end, str):
            raise InvalidInput(f'{where}: start and end are times such as "08:00"', field=FIELD)
        windows.append(_window(days, start, end, where).as_json())
    return windows


def _windows(stored: list[dict[str, Any]]) -> list[Window]:
    return [
        Window(tuple(item["days"]), _minutes(item["start"], "stored"), _minutes(item["end"], "stored"))
        for item in stored
    ]


def _days(text: str, where: str) -> list[int]:
    days: list[int] = []
    for part in text.replace(" ", "").split(","):
        first, _, last = part.partition("-")
        try:
            begin = _DAY_INDEX[first.lower()[:3]] if len(first) >= 3 else -1
            finish = _DAY_INDEX[last.lower()[:3]] if last else begin
        except KeyError:
            begin = finish = -1
        if begin < 0:
            raise InvalidInput(
                f"{where}: {part!r} is not a day or a range of days; use Mon, Tue, ... Sun such as Mon-Fri",
                field=FIELD,
            )
        days.extend((begin + step) % 7 for step in range((finish - begin) % 7 + 1))
    return days


def parse_window(text: str) -> dict[str, Any]:
    """One window from its human form, e.g. `Mon-Fri 08:00-18:00`; InvalidInput quoting the text if not."""
    where = f"login hours {text.strip()!r}"
    match = _HUMAN.match(text)
    if match is None:
        raise InvalidInput(f"{where}: write days then hours, such as 'Mon-Fri 08:00-18:00'", field=FIELD)
    return _window(_days(match["days"], where), match["start"], match["end"], where).as_json()


def parse_windows(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Windows as people type them, one per text (blank ones ignored); none, "any" or "any time": any time."""
    windows = [text.strip() for text in texts if text.strip()]
    if [w.lower() for w in windows] in ([], ["any"], ["any time"]):
        return []
    return [parse_window(window) for window in windows]


def _describe_days(days: tuple[int, ...]) -> str:
    runs: list[str] = []
    index = 0
    while index < len(days):
        end = index
        while end + 1 < len(days) and days[end + 1] == days[end] + 1:
            end += 1
        first, last = DAY_NAMES[days[index]], DAY_NAMES[days[end]]
        runs.append(first if index == end else f"{first}-{last}")
        index = end + 1
    return ",".join(runs)


def describe(stored: list[dict[str, Any]]) -> str:
    """The windows in their human form, `Mon-Fri 08:00-18:00; Sat 09:00-13:00`, or `any time`."""
    if not stored:
        return "any time"
    return "; ".join(f"{_describe_days(w.days)} {_clock(w.start)}-{_clock(w.end)}" for w in _windows(stored))


def allowed_at(stored: list[dict[str, Any]], when: datetime, timezone: str) -> bool:
    """Whether the aware instant `when` falls in one of the windows on `timezone`'s wall clock."""
    if not stored:
        return True
    local = when.astimezone(time_zone(timezone))
    minute = local.hour * 60 + local.minute
    return any(window.covers(local.weekday(), minute) for window in _windows(stored))
