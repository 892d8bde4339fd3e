"""The event log in a real browser: from the menu, filtered by type, to one event and on to
its entity, whose page leads back to all of its events."""

from __future__ import annotations

from tests.flow_support import drain
from tests.partner_double import post
from tests.support import auth
from tests.test_ui_browser import Ui, ui
from tests.ui_support import make_user

__all__ = ["ui"]  # the fixture


async def test_an_admin_filters_the_event_log_and_follows_an_event_to_its_entity(ui: Ui) -> None:
    vehicle = await post(ui.api, "/api/v1/entities/vehicle", {"plate": "ABC1D23"})
    changed = await ui.api.patch(
        f"/api/v1/entities/vehicle/{vehicle['id']}", json={"model": "Axor"}, headers=auth()
    )
    assert changed.status == 200
    await drain(ui.services)
    await make_user(ui.services)
    await ui.log_in()
    await ui.page.get_by_role("link", name="Eventos", exact=True).click()
    rows = ui.page.locator("#events tbody tr")
    assert await rows.count() == 2
    await ui.page.fill("#q-type", "entity.updated")
    await ui.page.get_by_test_id("event-filters").get_by_role("button").click()
    await ui.page.wait_for_url("**/admin/events?type=entity.updated*")
    assert await rows.count() == 1
    assert "model" in await rows.first.inner_text()
    await ui.page.get_by_role("link", name="entity.updated").click()
    await ui.page.get_by_test_id("event-entity").click()
    await ui.page.wait_for_url(ui.url(f"/admin/entities/vehicle/{vehicle['id']}"))
    await ui.page.get_by_test_id("entity-events-link").click()
    assert await rows.count() == 2
    await ui.shot("events")
