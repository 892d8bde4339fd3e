"""The admin UI on a phone (a 375 px wide viewport, as `base.html` declares `width=device-width`)
in a real browser: the page never scrolls sideways, so the header stays put; a form fits the
screen, no field nor fieldset past its right edge; a table wider than the screen scrolls inside
its own box, and keeps a name readable rather than one syllable a line (docs/admin-ui.md,
*Keyboard, empty pages, odd data*)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.partner_double import Partner, partner
from tests.test_ui_browser import Ui, ui
from tests.test_ui_browser_every_page import seed_odd_data
from tests.ui_support import make_user

__all__ = ["partner", "ui"]  # the fixtures

PHONE = {"width": 375, "height": 800}

# What sticks out past the screen's right edge, and how wide the document is.
MEASURE = """() => ({
  width: window.innerWidth,
  document: document.documentElement.scrollWidth,
  header: Math.round(document.querySelector('header.top').getBoundingClientRect().right),
  over: [...document.querySelectorAll(
      'main form input:not([type=hidden]), main form select, main form textarea, main fieldset')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
    .map(e => (e.name || e.tagName) + '@' + Math.round(e.getBoundingClientRect().right)),
  tables: [...document.querySelectorAll('main table')].map(table => {
    const box = table.parentElement;
    const names = [...table.querySelectorAll('td.name')];
    return {
      box: box.className,
      right: Math.round(box.getBoundingClientRect().right),
      scrolls: box.scrollWidth > box.clientWidth,
      narrowest_name: Math.min(...names.map(td => td.getBoundingClientRect().width)),
    };
  }),
})"""


async def _measure(ui: Ui, path: str) -> dict[str, Any]:
    await ui.goto(path)
    measured: dict[str, Any] = await ui.page.evaluate(MEASURE)
    return measured


@pytest.mark.parametrize(
    "path",
    [
        "/admin/triggers/new",
        "/admin/schedules/new",
        "/admin/geofences/new",
        "/admin/notification-settings",
        "/admin/fleet-settings",
    ],
)
async def test_a_form_page_fits_a_375px_phone(ui: Ui, path: str) -> None:
    await make_user(ui.services)
    await ui.page.set_viewport_size(PHONE)
    await ui.log_in()
    found = await _measure(ui, path)
    assert found["document"] <= found["width"] and found["over"] == [], found


async def test_a_wide_table_scrolls_in_its_own_box_not_the_page(ui: Ui, partner: Partner) -> None:
    await seed_odd_data(ui.api, partner)
    await ui.page.set_viewport_size(PHONE)
    await ui.log_in()
    scrolled = []
    for path in ("/admin/deliveries", "/admin/triggers", "/admin/rejected", "/admin/events"):
        found = await _measure(ui, path)
        assert found["document"] <= found["width"], (path, found)
        assert found["header"] <= found["width"], (path, found)
        for table in found["tables"]:
            assert table["box"] == "table-scroll", (path, table)
            assert table["right"] <= found["width"], (path, table)
            if table["narrowest_name"] != float("inf"):  # a name keeps 9rem (144 px)
                assert table["narrowest_name"] >= 140, (path, table)
            scrolled.append(table["scrolls"])
    assert any(scrolled)  # the deliveries' table is wider than a phone: its box scrolls
    await ui.shot("events-375")
