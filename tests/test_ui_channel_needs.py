"""The admin UI's partner and action forms say a channel's refusal on the form: a new auth for
the partner a push channel sends through, or a method an SMS channel cannot send with, is a
409 shown above the form the admin typed in (it was an error page, the typing lost)."""

from __future__ import annotations

from gateway.services import Services
from tests.fcm_double import Fcm, fcm
from tests.flow_support import get, push_channel, sms_channel
from tests.partner_double import running_partner
from tests.ui_support import Client, form_fields, log_in, make_user, replaced

__all__ = ["fcm"]  # the fixture


async def test_the_credentials_form_says_a_push_channel_needs_the_partners_service_account(
    client: Client, services: Services, fcm: Fcm
) -> None:
    await push_channel(client, fcm)
    partner_id = (await get(client, "/api/v1/channels/push"))["partner_id"]
    await make_user(services)
    await log_in(client)
    page = await (await client.get(f"/admin/partners/{partner_id}")).text()
    action = f"/admin/partners/{partner_id}/credentials"
    typed = replaced(form_fields(page, action), auth__type="bearer", auth__token="t0ken")
    response = await client.post(action, data=typed, allow_redirects=False)
    html = await response.text()
    assert response.status == 409, html
    assert 'data-testid="partner-credentials"' in html
    assert 'role="alert"' in html and "Conflito" in html
    assert "partner FCM is used by channel push, which needs it so" in html
    assert 'value="bearer" selected' in html  # what was typed stays
    stored = await get(client, f"/api/v1/partners/{partner_id}")
    assert stored["auth"]["type"] == "google_service_account"


async def test_the_action_edit_form_says_an_sms_channel_needs_a_post_or_put(
    client: Client, services: Services
) -> None:
    async with running_partner() as sms:
        await sms_channel(client, sms.url)
        action_id = (await get(client, "/api/v1/channels/sms"))["action_id"]
        await make_user(services)
        await log_in(client)
        path = f"/admin/actions/{action_id}/edit"
        page = await (await client.get(path)).text()
        typed = replaced(form_fields(page, path), method="DELETE")
        response = await client.post(path, data=typed, allow_redirects=False)
        html = await response.text()
        assert response.status == 409, html
        assert 'data-testid="action-edit"' in html
        assert 'role="alert"' in html and "Conflito" in html
        assert "action sms is used by channel sms, which needs it so" in html
        assert 'value="DELETE" selected' in html
        assert (await get(client, f"/api/v1/actions/{action_id}"))["method"] == "POST"
