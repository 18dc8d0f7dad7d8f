"""Numbers typed by a person or carried in a link: `str.isdigit()` is not enough (it accepts '²' and a
5,000-digit string, both of which `int()` or the database then refuses with a 500)."""

from __future__ import annotations

MAX_ID = 2**63 - 1  # the largest id the store's BIGINT columns hold


def whole_number(text: str | None, *, maximum: int = MAX_ID) -> int | None:
    """The value of `text` when it is plain ASCII digits no greater than `maximum`, else None."""
    text = (text or "").strip()
    if not text or len(text) > 19 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= maximum else None


def page_number(text: str | None) -> int:
    """A page number from a link: 1 for anything that is not a page number."""
    value = whole_number(text, maximum=10**6)
    return value if value else 1
