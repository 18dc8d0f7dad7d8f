"""Money: amounts are read into integer cents exactly, or refused with a reason; never rounded, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledgerlink.domain.money import MAX_CENTS, AmountError, cents_to_decimal, format_cents, parse_amount


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("19.99", 1999),
        ("0.01", 1),
        ("0", 0),
        ("7", 700),
        ("7.5", 750),
        (".50", 50),
        ("100.00", 10000),
        ("  42.10  ", 4210),
        ("0019.99", 1999),
    ],
)
def test_plain_amounts_are_read_into_exact_cents(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


def test_parsed_amounts_are_ints() -> None:
    assert type(parse_amount("19.99")) is int


def test_amounts_that_are_inexact_as_binary_floats_stay_exact() -> None:
    # float("0.29") * 100 is 28.999999999999996: a float path would post 28 cents.
    assert parse_amount("0.29") == 29
    assert parse_amount("1.15") == 115
    assert parse_amount("4.35") == 435


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("1,234.50", 123450),
        ("1,234,567.89", 123456789),
        ("$19.99", 1999),
        ("$1,234.56", 123456),
        (" $ 1,234.56 ", 123456),
    ],
)
def test_thousands_separators_and_dollar_sign_from_spreadsheets_are_accepted(text: str, cents: int) -> None:
    assert parse_amount(text) == cents


@pytest.mark.parametrize(
    ("text", "cents"),
    [("(12.34)", -1234), ("($1,234.50)", -123450), ("-5", -500), ("-$5.00", -500)],
)
def test_negatives_are_read_when_allowed_including_accounting_parentheses(text: str, cents: int) -> None:
    assert parse_amount(text, allow_negative=True) == cents


@pytest.mark.parametrize("text", ["-5", "-0.01", "(12.34)", "($1.00)"])
def test_negative_amounts_are_refused_by_default(text: str) -> None:
    with pytest.raises(AmountError, match="negative"):
        parse_amount(text)


def test_negative_zero_is_zero() -> None:
    assert parse_amount("-0.00") == 0
    assert parse_amount("(0.00)") == 0


@pytest.mark.parametrize("text", ["1.999", "0.001", "19.995", "1.500"])
def test_more_than_two_decimals_is_refused_not_rounded(text: str) -> None:
    with pytest.raises(AmountError, match="more than two decimal places"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["", "   ", "$", ","])
def test_empty_amount_is_refused(text: str) -> None:
    with pytest.raises(AmountError, match="empty"):
        parse_amount(text)


@pytest.mark.parametrize(
    "text", ["abc", "12abc", "1.2.3", "--5", "(-5)", "()", "12 USD", "0x10", "(5", "1/2"]
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(AmountError, match="not an amount"):
        parse_amount(text, allow_negative=True)


@pytest.mark.parametrize("text", ["NaN", "nan", "sNaN", "Infinity", "inf", "-Infinity", "-inf", "(Infinity)"])
def test_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(AmountError, match="not an amount"):
        parse_amount(text, allow_negative=True)


def test_largest_accepted_amount_is_just_below_the_limit() -> None:
    assert parse_amount("99,999,999,999.99") == MAX_CENTS - 1
    assert parse_amount("(99999999999.99)", allow_negative=True) == -(MAX_CENTS - 1)


@pytest.mark.parametrize("text", ["100000000000.00", "1" + "0" * 40, "99,999,999,999,999.00"])
def test_huge_amounts_are_refused(text: str) -> None:
    with pytest.raises(AmountError, match="too large"):
        parse_amount(text)


def test_huge_negative_amounts_are_refused() -> None:
    with pytest.raises(AmountError, match="too large"):
        parse_amount("-100000000000", allow_negative=True)


@pytest.mark.parametrize("text", ["1e999999", "1e20", "1e3", "1_000", "١٢٣", "0x10", "12.5.0"])
def test_only_plain_decimal_notation_is_an_amount(text: str) -> None:
    with pytest.raises(AmountError, match="not an amount"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["12,50", "1,2", "1,23.45", "12,3456"])
def test_commas_that_are_not_thousands_separators_are_refused(text: str) -> None:
    with pytest.raises(AmountError, match="not an amount"):
        parse_amount(text)


def test_decimal_comma_gets_a_hint() -> None:
    with pytest.raises(AmountError, match="use a dot for decimals"):
        parse_amount("12,50")


def test_error_names_the_offending_text() -> None:
    with pytest.raises(AmountError, match="'12abc'"):
        parse_amount(" 12abc ")


@pytest.mark.parametrize(
    ("cents", "text"),
    [
        (0, "$0.00"),
        (1, "$0.01"),
        (99, "$0.99"),
        (1999, "$19.99"),
        (100000, "$1,000.00"),
        (123456789, "$1,234,567.89"),
        (-1, "-$0.01"),
        (-1234567, "-$12,345.67"),
    ],
)
def test_format_cents_reads_like_a_printed_report(cents: int, text: str) -> None:
    assert format_cents(cents) == text


def test_format_cents_with_another_symbol() -> None:
    assert format_cents(123450, symbol="€") == "€1,234.50"
    assert format_cents(-5, symbol="") == "-0.05"


@pytest.mark.parametrize("cents", [0, 1, 99, 1999, -1999, 123456789, MAX_CENTS - 1])
def test_format_then_parse_is_the_identity(cents: int) -> None:
    assert parse_amount(format_cents(cents), allow_negative=True) == cents


@pytest.mark.parametrize(
    ("cents", "value"),
    [
        (0, "0.00"),
        (1, "0.01"),
        (1999, "19.99"),
        (-1999, "-19.99"),
        (100, "1.00"),
        (MAX_CENTS - 1, "99999999999.99"),
    ],
)
def test_cents_to_decimal_is_exact_with_two_places(cents: int, value: str) -> None:
    result = cents_to_decimal(cents)
    assert isinstance(result, Decimal)
    assert result == Decimal(value)
    assert str(result) == value


@pytest.mark.parametrize("cents", [0, 5, 1999, -1999, MAX_CENTS - 1])
def test_cents_to_decimal_round_trips_through_parse_amount(cents: int) -> None:
    assert parse_amount(str(cents_to_decimal(cents)), allow_negative=True) == cents
