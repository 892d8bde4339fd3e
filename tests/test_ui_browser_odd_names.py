"""Names as tenants write them, in a real browser: one with a direction override (U+202E)
turns no text of ours around it, and one long without a space breaks instead of pushing the
other columns, or the page, past a 1280 px screen."""

from __future__ import annotations

import base64
from typing import Any

from tests.flow_support import drain
from tests.partner_double import (
    Partner,
    create_action,
    create_partner,
    partner,
    post,
    upload_mapping,
)
from tests.test_ui_browser import Ui, ui
from tests.ui_support import POLLED_MAPPING, make_user

__all__ = ["partner", "ui"]  # the fixtures

RLO = "\u202e"
OVERRIDDEN = f"{RLO}abc.exe rtl"  # shown as "ltr exe.cba": the override is the name's own
LONG = "W" * 90 + "long"  # 94 characters, no space: an allowed name

# Where a run of text is drawn: the box of the characters [start, end) of a text node.
_TEXT_BOX = """([node, start, end]) => {
  const range = document.createRange();
  range.setStart(node, start);
  range.setEnd(node, end);
  const r = range.getBoundingClientRect();
  return {left: r.left, right: r.right};
}"""


async def _box(element: Any) -> dict[str, float]:
    box: dict[str, float] = await element.evaluate(
        "e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right}; }"
    )
    return box


async def _text_after(element: Any) -> dict[str, float]:
    """The box of the text that follows `element` in its parent (` · POST /x`)."""
    box: dict[str, float] = await element.evaluate(
        f"e => ({_TEXT_BOX})([e.nextSibling, 0, e.nextSibling.length])"
    )
    return box


async def test_a_name_with_a_direction_override_turns_no_text_around_it(ui: Ui) -> None:
    await make_user(ui.services)
    erp = await create_partner(ui.api, "http://127.0.0.1:9", name=OVERRIDDEN)
    await create_action(ui.api, erp["id"], name=OVERRIDDEN, method="POST", path="/x")
    await ui.log_in()
    await ui.goto(f"/admin/partners/{erp['id']}")
    # The action's line: its name, then ` · POST /x` after it, to its right and in order.
    link = ui.page.locator("h2 + ul li a").first
    assert await link.inner_text() == OVERRIDDEN
    after = await _text_after(link)
    assert after["left"] >= (await _box(link))["right"] - 1, "the method went left of the name"
    # The heading: the name, then its status badge to its right.
    name = ui.page.locator("h1 bdi")
    badge = ui.page.locator("h1 .badge")
    assert await name.inner_text() == OVERRIDDEN
    assert (await _box(badge))["left"] >= (await _box(name))["right"] - 1, "the badge moved"
    # A sentence of ours naming it: "Gatilho <name> criado" keeps "criado" after the name.
    await ui.goto("/admin/triggers/new")
    await ui.page.fill("#f-name", OVERRIDDEN)
    await ui.page.select_option("#f-entity_type", "vehicle")
    await ui.page.get_by_role("button", name="Criar").click()
    await ui.page.get_by_test_id("issued").wait_for()
    heading = ui.page.locator("h1")
    text = await heading.evaluate("h => h.firstChild.data")
    assert text.startswith("Gatilho ") and text.endswith(" criado")
    start, end = text.index(RLO), text.rindex(" criado")
    boxes = await heading.evaluate(
        f"""(h, [start, end]) => [({_TEXT_BOX})([h.firstChild, 0, start]),
            ({_TEXT_BOX})([h.firstChild, start, end]),
            ({_TEXT_BOX})([h.firstChild, end, h.firstChild.length])]""",
        [start, end],
    )
    before, named, rest = boxes
    assert before["right"] <= named["left"] + 1 and named["right"] <= rest["left"] + 1, boxes
    await ui.shot("odd-name-override")


async def _fits(ui: Ui, path: str) -> None:
    """The page at `path` is no wider than the screen, and no column of its table sits past it."""
    await ui.goto(path)
    widths = await ui.page.evaluate(
        """() => ({page: document.documentElement.scrollWidth,
                   screen: document.documentElement.clientWidth,
                   right: Math.max(...[...document.querySelectorAll('th, td, h1')]
                                  .map(c => c.getBoundingClientRect().right))})"""
    )
    assert widths["screen"] == 1280 and widths["page"] <= 1280, (path, widths)
    assert widths["right"] <= 1280, (path, widths)


async def test_a_long_name_without_spaces_breaks_and_keeps_every_column_on_screen(ui: Ui) -> None:
    await make_user(ui.services)
    trigger = await post(ui.api, "/api/v1/triggers", {"name": LONG, "entity_type": "vehicle"})
    erp = await create_partner(ui.api, "http://127.0.0.1:9", name=LONG)
    await ui.log_in()
    await _fits(ui, "/admin/triggers")
    # Every column's heading is on screen, the last one (Created) included.
    last = ui.page.locator("table th").last
    assert (await _box(last))["right"] <= 1280
    assert LONG in await ui.page.locator("table").inner_text()  # broken, not cut
    await _fits(ui, f"/admin/triggers/{trigger['id']}")
    await _fits(ui, "/admin/partners")
    await _fits(ui, f"/admin/partners/{erp['id']}")
    await ui.shot("odd-name-long")


async def test_a_partners_long_page_token_breaks_and_keeps_a_schedules_runs_on_screen(
    ui: Ui, partner: Partner
) -> None:
    """An opaque-cursor feed's page token (400 characters of url-safe base64) is shown in the
    schedule's runs, sent back as it is: it breaks rather than push the duration and error
    columns past the screen."""
    token = base64.urlsafe_b64encode(bytes(range(256)) + bytes(44)).decode()
    await make_user(ui.services)
    await upload_mapping(ui.api, POLLED_MAPPING)
    erp = await create_partner(ui.api, partner.url)
    feed = await create_action(ui.api, erp["id"], name="frota", method="GET", path="/veiculos")
    partner.respond_with(200, {"veiculos": [], "next": token})
    schedule = {
        "name": "frota",
        "action_id": feed["id"],
        "every": "1h",
        "target": {"entity_type": "vehicle", "mapping": "frota-api"},
        "cursor": {"from": "next", "param": "query.after"},
    }
    created = await post(ui.api, "/api/v1/schedules", schedule)
    await ui.services.schedule_runner.run_until_idle()
    await ui.log_in()
    await _fits(ui, f"/admin/schedules/{created['id']}")
    runs = ui.page.get_by_test_id("schedule-runs")
    assert token in await runs.inner_text()  # broken, not cut
    await ui.shot("odd-name-long-cursor")


# The ordinary words of a page (headings, badges, dates, numbers, event types: any text but a
# name's cell, a long value's cell or a facts list's value, which may break anywhere) that a
# line break cuts in two.
_CUT_WORDS = """() => {
  const cut = [];
  for (const el of document.querySelectorAll('th, td:not(.name):not(.long), .badge')) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walker.nextNode())) {
      if (node.parentElement.closest('td.name, td.long')) continue;
      for (const m of node.data.matchAll(/\\S+/g)) {
        const r = document.createRange();
        r.setStart(node, m.index);
        r.setEnd(node, m.index + m[0].length);
        const lines = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
        if (lines.size > 1) cut.push(el.tagName + ': ' + m[0]);
      }
    }
  }
  return cut;
}"""

SPACED = "Rastreador da frota de caminhões refrigerados da filial Campinas"  # 64, with spaces


async def _whole_words(ui: Ui, path: str) -> None:
    await ui.goto(path)
    for summary in await ui.page.locator("details summary").all():  # the dashboard's tables
        await summary.click()
    assert await ui.page.evaluate(_CUT_WORDS) == [], path
    # Each heading cell holds its words: nothing drawn past its box.
    past = await ui.page.evaluate(
        "() => [...document.querySelectorAll('th')].filter(h => h.scrollWidth > h.clientWidth)"
        ".map(h => h.textContent)"
    )
    assert past == [], (path, past)


async def test_ordinary_words_of_tables_are_never_cut_mid_letter_at_1280_px(ui: Ui) -> None:
    """Only a name's cell may break anywhere: the headings, statuses, dates and event types of
    a table keep their words whole (a dashboard's "pendente" was drawn "pendent|e")."""
    await make_user(ui.services)
    await ui.log_in()
    await _whole_words(ui, "/admin/")  # a fresh tenant's dashboard
    await post(ui.api, "/api/v1/triggers", {"name": SPACED, "entity_type": "vehicle"})
    await post(ui.api, "/api/v1/triggers", {"name": "gps", "entity_type": "vehicle"})
    for plate in ("ABC1D23", "XYZ9A87"):
        await post(ui.api, "/api/v1/entities/vehicle", {"plate": plate, "model": SPACED})
    await drain(ui.services)
    for path in ("/admin/", "/admin/triggers", "/admin/events", "/admin/entities/vehicle"):
        await _whole_words(ui, path)
    # The long name still breaks, in its own cell, with every column on screen.
    await _fits(ui, "/admin/triggers")


LONG_MAPPING = "m" + "a" * 99  # the longest mapping name


async def test_long_values_of_a_list_break_and_keep_every_column_on_a_1280_px_screen(
    ui: Ui,
) -> None:
    """A list's other cells of tenants' writing (a trigger's mapping, a partner's base URL, an
    action's path, a user's e-mail, a vehicle's make and model, each at its limit and without
    a space) break in their cells: the page stays on screen, and the name column keeps its
    short names whole (a plate is not wrapped)."""
    await make_user(ui.services)
    await make_user(ui.services, email="u" * 64 + "@" + "d" * 60 + ".com.br", role="viewer")
    mapping = f"name: {LONG_MAPPING}\ndirection: inbound\nentity_type: vehicle\nkey: [plate]\n"
    await upload_mapping(ui.api, mapping + "fields:\n  plate: {from: placa}\n")
    await post(ui.api, "/api/v1/triggers", {"name": "gps", "entity_type": "vehicle"})
    await post(
        ui.api,
        "/api/v1/triggers",
        {"name": "erp", "entity_type": "vehicle", "mapping": LONG_MAPPING},
    )
    erp = await create_partner(ui.api, "https://erp.example.com/" + "p" * 200, name="erp")
    await create_action(ui.api, erp["id"], name="push", method="POST", path="/" + "a" * 150)
    vehicle = {"plate": "ABC1D23", "make": "F" * 80, "model": "M" * 120}
    await post(ui.api, "/api/v1/entities/vehicle", vehicle)
    await ui.log_in()
    for path in (
        "/admin/triggers",
        "/admin/partners",
        "/admin/actions",
        "/admin/users",
        "/admin/entities/vehicle",
    ):
        await _fits(ui, path)
        assert await ui.page.evaluate(_CUT_WORDS) == [], path
    plate = ui.page.locator("td.name a", has_text="ABC1D23")
    assert await plate.evaluate("a => a.getClientRects().length") == 1  # one line
