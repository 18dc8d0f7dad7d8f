"""Every page, checked in the browser for what the issue asks of all of them: readable on a tablet (no
page-wide sideways scrolling; wide tables scroll inside their own frame), usable by keyboard (the first Tab
reaches the skip link, and it moves focus to the content), and labelled for screen readers (every visible
form control has a label)."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Dashboard, sign_in

PAGES = (
    "/today",
    "/reports",
    "/reconcile",
    "/patients",
    "/imports",
    "/settings",
    "/people",
    "/audit",
    "/account",
)

# Visible inputs, selects and text areas with no label: neither <label for>, a wrapping <label>,
# aria-label nor aria-labelledby.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter((el) => el.type !== 'hidden' && el.offsetParent !== null)
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.getAttribute('aria-labelledby'))
  .map((el) => el.outerHTML.slice(0, 120))"""


def test_every_page_fits_a_tablet_and_labels_every_control(page: Any, dashboard: Dashboard) -> None:
    page.set_viewport_size({"width": 768, "height": 1024})  # a tablet in portrait
    sign_in(page, dashboard, "admin")
    page.wait_for_url("**/today")
    for path in PAGES:
        page.goto(dashboard.url + path)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow} px on a tablet"
        assert page.evaluate(UNLABELLED) == [], f"{path} has form controls without a label"
        assert page.locator("h1").count() == 1, f"{path} should have exactly one main heading"


def test_the_keyboard_reaches_the_content_first(page: Any, dashboard: Dashboard) -> None:
    sign_in(page, dashboard, "frontdesk")
    page.wait_for_url("**/today")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
