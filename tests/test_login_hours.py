"""Login hours on the practice's wall clock: the human form, windows past midnight, and DST change days."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ledgerlink.errors import InvalidInput
from ledgerlink.login_hours import allowed_at, describe, parse_window, validate_windows

WEEKDAYS = [parse_window("Mon-Fri 08:00-18:00")]
CHICAGO = "America/Chicago"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_human_form_reads_ranges_lists_and_wrapping_days() -> None:
    assert parse_window("Mon-Fri 08:00-18:00") == {"days": [0, 1, 2, 3, 4], "start": "08:00", "end": "18:00"}
    assert parse_window("sat 9:00 - 13:00") == {"days": [5], "start": "09:00", "end": "13:00"}
    assert parse_window("Mon,Wed,Fri 07:30-12:00")["days"] == [0, 2, 4]
    assert parse_window("Fri-Mon 22:00-06:00")["days"] == [0, 4, 5, 6]
    assert parse_window("Sun 00:00-24:00") == {"days": [6], "start": "00:00", "end": "24:00"}


def test_describe_writes_the_human_form_back() -> None:
    windows = [parse_window("Mon-Fri 08:00-18:00"), parse_window("Sat 09:00-13:00")]
    assert describe(windows) == "Mon-Fri 08:00-18:00; Sat 09:00-13:00"
    assert describe([]) == "any time"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Mon-Fri", "write days then hours"),
        ("Funday 08:00-18:00", "'Funday' is not a day"),
        ("Mon 08:00-25:00", "'25:00' is not a time of day"),
        ("Mon 08:00-08:00", "start and end are both"),
        ("Mon 24:00-06:00", "24:00 can only end a window"),
    ],
)
def test_bad_human_form_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_window(text)
    assert says in caught.value.message
    assert caught.value.field == "login_hours"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"days": [0], "start": "08:00", "end": "18:00"}, "a list of windows"),
        ([{"days": [7], "start": "08:00", "end": "18:00"}], "window 1: days are numbers 0 (Monday)"),
        ([{"days": [], "start": "08:00", "end": "18:00"}], "at least one day"),
        ([{"days": [0], "start": "8am", "end": "18:00"}], "'8am' is not a time of day"),
        ([{"days": [0], "start": "08:00"}], "window 1: write it as"),
    ],
)
def test_stored_form_is_validated(raw: object, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_windows(raw)
    assert says in caught.value.message


def test_no_windows_means_any_time() -> None:
    assert allowed_at([], utc(2024, 6, 2, 3, 0), CHICAGO)


def test_inside_and_outside_on_the_practices_wall_clock() -> None:
    # Wednesday 2024-06-12; Chicago is UTC-5 in summer.
    assert allowed_at(WEEKDAYS, utc(2024, 6, 12, 13, 0), CHICAGO)  # 08:00 local: the first minute
    assert not allowed_at(WEEKDAYS, utc(2024, 6, 12, 12, 59), CHICAGO)  # 07:59 local
    assert allowed_at(WEEKDAYS, utc(2024, 6, 12, 22, 59), CHICAGO)  # 17:59 local
    assert not allowed_at(WEEKDAYS, utc(2024, 6, 12, 23, 0), CHICAGO)  # 18:00 local: the end is excluded
    # Saturday 10:00 local: the same instant is inside in UTC's Friday but outside on the practice's clock.
    assert not allowed_at(WEEKDAYS, utc(2024, 6, 15, 15, 0), CHICAGO)
    # Friday 20:00 local is Saturday 01:00 UTC: the practice's day (Friday) counts, and it is after hours.
    assert not allowed_at(WEEKDAYS, utc(2024, 6, 15, 1, 0), CHICAGO)
    assert allowed_at(WEEKDAYS, utc(2024, 6, 14, 22, 0), CHICAGO)  # Friday 17:00 local


def test_a_window_crossing_midnight_continues_into_the_next_day() -> None:
    night = [parse_window("Fri 22:00-06:00")]
    tz = "UTC"
    assert allowed_at(night, utc(2024, 6, 14, 22, 0), tz)  # Friday 22:00
    assert allowed_at(night, utc(2024, 6, 15, 5, 59), tz)  # Saturday 05:59
    assert not allowed_at(night, utc(2024, 6, 15, 6, 0), tz)  # Saturday 06:00
    assert not allowed_at(night, utc(2024, 6, 14, 21, 59), tz)  # Friday 21:59
    assert not allowed_at(night, utc(2024, 6, 14, 3, 0), tz)  # Friday 03:00 belongs to Thursday's night
    assert not allowed_at(night, utc(2024, 6, 15, 22, 30), tz)  # Saturday night is not listed


def test_sunday_night_window_wraps_into_monday() -> None:
    night = [parse_window("Sun 23:00-01:00")]
    assert allowed_at(night, utc(2024, 6, 17, 0, 30), "UTC")  # Monday 00:30
    assert not allowed_at(night, utc(2024, 6, 18, 0, 30), "UTC")  # Tuesday 00:30


def test_spring_forward_day_keeps_wall_clock_hours() -> None:
    # 2024-03-10: Chicago jumps from 02:00 CST to 03:00 CDT; 08:00 local is 13:00 UTC the day before, 12:00 after.
    sunday = [parse_window("Sun 08:00-12:00")]
    assert allowed_at(sunday, utc(2024, 3, 10, 13, 0), CHICAGO)  # 08:00 CDT
    assert not allowed_at(sunday, utc(2024, 3, 10, 12, 59), CHICAGO)  # 07:59 CDT
    assert not allowed_at(sunday, utc(2024, 3, 10, 17, 0), CHICAGO)  # 12:00 CDT (would be 11:00 CST)
    assert allowed_at(sunday, utc(2024, 3, 10, 16, 59), CHICAGO)  # 11:59 CDT
    # A window over the skipped hour still works either side of it.
    early = [parse_window("Sun 01:30-03:30")]
    assert allowed_at(early, utc(2024, 3, 10, 7, 45), CHICAGO)  # 01:45 CST
    assert allowed_at(early, utc(2024, 3, 10, 8, 15), CHICAGO)  # 03:15 CDT
    assert not allowed_at(early, utc(2024, 3, 10, 8, 30), CHICAGO)  # 03:30 CDT


def test_fall_back_day_allows_both_passes_of_the_repeated_hour() -> None:
    # 2024-11-03: Chicago's 01:00-02:00 happens twice (CDT, then CST).
    repeated = [parse_window("Sun 01:00-02:00")]
    assert allowed_at(repeated, utc(2024, 11, 3, 6, 30), CHICAGO)  # 01:30 CDT
    assert allowed_at(repeated, utc(2024, 11, 3, 7, 30), CHICAGO)  # 01:30 CST
    assert not allowed_at(repeated, utc(2024, 11, 3, 8, 0), CHICAGO)  # 02:00 CST
    sunday = [parse_window("Sun 08:00-12:00")]
    assert allowed_at(sunday, utc(2024, 11, 3, 14, 0), CHICAGO)  # 08:00 CST
    assert not allowed_at(sunday, utc(2024, 11, 3, 13, 0), CHICAGO)  # 07:00 CST (would be 08:00 CDT)
