"""Creating a trigger from the admin UI with the partner's own credentials: an HMAC scheme
with the partner's secret (write-only: never shown, the signed call goes through), a secret
we issue (shown once), the partner's JWTs (the audience required, next to its field), and a
new partner secret set from the edit page."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson

from gateway.services import Services
from tests.support import auth
from tests.triggers_support import VEHICLE, stored_with_get
from tests.ui_support import Client, csrf, form_fields, log_in, make_user, replaced

BODY = orjson.dumps(VEHICLE)


def _motive(secret: str) -> dict[str, str]:
    signature = hmac.new(secret.encode(), BODY, hashlib.sha1).hexdigest()
    return {"X-KT-Webhook-Signature": signature, "Content-Type": "application/json"}


async def _create(client: Client, *fields: tuple[str, str]) -> Any:
    token = await csrf(client, "/admin/triggers/new")
    data = [("csrf", token), ("name", "motive"), ("entity_type", "vehicle"), ("methods", "POST")]
    data += [("format", "json"), *fields]
    return await client.post("/admin/triggers", data=data)


async def _only_trigger(client: Client) -> dict[str, Any]:
    listed = await (await client.get("/api/v1/triggers", headers=auth())).json()
    [trigger] = listed["items"]
    return dict(trigger)


async def test_an_hmac_trigger_with_the_partners_secret_is_created_and_verifies_its_calls(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    form = await (await client.get("/admin/triggers/new")).text()
    assert 'name="auth.preset"' in form and 'value="motive"' in form
    created = await _create(
        client, ("auth.mode", "hmac"), ("auth.preset", "motive"), ("auth.secret", "kt-secret-1")
    )
    page = await created.text()
    assert created.status == 201, page
    assert "kt-secret-1" not in page  # the partner's secret is never shown back
    assert "X-KT-Webhook-Signature: &lt;signature of payload.json&gt;" in page  # the curl
    trigger = await _only_trigger(client)
    assert trigger["auth"] == {"mode": "hmac", "preset": "motive"}
    hook = f"/hooks/{trigger['id']}"
    assert (await client.post(hook, data=BODY, headers=_motive("kt-secret-1"))).status == 201
    assert (await client.post(hook, data=BODY, headers=_motive("guess"))).status == 401


async def test_a_secret_the_gateway_issues_is_shown_once_on_the_created_page(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    created = await _create(client, ("auth.mode", "hmac"), ("auth.preset", "motive"))
    page = await created.text()
    assert created.status == 201 and 'id="trigger-secret"' in page
    secret = page.split('id="trigger-secret" class="mono">')[1].split("<")[0]
    trigger = await _only_trigger(client)
    response = await client.post(f"/hooks/{trigger['id']}", data=BODY, headers=_motive(secret))
    assert response.status == 201, await response.text()


async def test_a_partner_jwt_trigger_without_an_audience_is_refused_next_to_the_field(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    jwks = "https://idp.example.com/.well-known/jwks.json"
    refused = await _create(client, ("auth.mode", "partner_jwt"), ("auth.jwks_url", jwks))
    page = await refused.text()
    assert refused.status == 422, page
    assert 'data-field="auth.audience"' in page
    assert f'value="{jwks}"' in page  # what was typed is kept
    listed = await (await client.get("/api/v1/triggers", headers=auth())).json()
    assert listed["items"] == []
    created = await _create(
        client,
        ("auth.mode", "partner_jwt"),
        ("auth.jwks_url", jwks),
        ("auth.audience", "rabbot-gateway"),
    )
    assert created.status == 201, await created.text()
    trigger = await _only_trigger(client)
    assert trigger["auth"]["mode"] == "partner_jwt"
    assert trigger["auth"]["audience"] == "rabbot-gateway"


async def test_a_new_partner_secret_set_on_the_edit_page_replaces_the_old_one(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    await _create(
        client, ("auth.mode", "hmac"), ("auth.preset", "motive"), ("auth.secret", "old-secret")
    )
    trigger = await _only_trigger(client)
    base = f"/admin/triggers/{trigger['id']}"
    form = await (await client.get(f"{base}/edit")).text()
    assert 'name="auth.secret"' in form and "old-secret" not in form
    token = await csrf(client, f"{base}/edit")
    data = [("csrf", token), ("name", "motive"), ("methods", "POST"), ("format", "json")]
    saved = await client.post(f"{base}/edit", data=[*data, ("auth.secret", "new-secret")])
    assert saved.status == 200, await saved.text()
    hook = f"/hooks/{trigger['id']}"
    assert (await client.post(hook, data=BODY, headers=_motive("old-secret"))).status == 401
    assert (await client.post(hook, data=BODY, headers=_motive("new-secret"))).status == 201


async def test_a_signed_trigger_stored_with_get_is_renamed_on_the_edit_page(
    client: Client, services: Services
) -> None:
    """A trigger stored with GET before GET was refused to body-signed ones: the edit page
    sends its methods as they are, which is no change of them, so a rename is saved (it was
    a 422 asking to leave GET out); unticking GET still saves too."""
    await make_user(services)
    await log_in(client)
    await _create(
        client, ("auth.mode", "hmac"), ("auth.preset", "motive"), ("auth.secret", "kt-secret")
    )
    trigger = await _only_trigger(client)
    await stored_with_get(client, trigger)
    base = f"/admin/triggers/{trigger['id']}"
    token = await csrf(client, f"{base}/edit")
    data = [("csrf", token), ("methods", "GET"), ("methods", "POST"), ("format", "json")]
    saved = await client.post(f"{base}/edit", data=[*data, ("name", "motive-fleet")])
    assert saved.status == 200, await saved.text()
    shown = await _only_trigger(client)
    assert (shown["name"], shown["methods"]) == ("motive-fleet", ["GET", "POST"])
    token = await csrf(client, f"{base}/edit")
    data = [("csrf", token), ("methods", "POST"), ("format", "json"), ("name", "motive-fleet")]
    assert (await client.post(f"{base}/edit", data=data)).status == 200
    assert (await _only_trigger(client))["methods"] == ["POST"]


def _retype_note(page: str) -> bool:
    return 'data-retype="auth.secret"' in page and "digite-o de novo" in page


async def test_a_partners_secret_typed_in_a_refused_new_trigger_form_is_asked_again(
    client: Client, services: Services
) -> None:
    """The new-trigger form refused for another field (no entity type) does not show the
    partner's secret back: it says at the field to type it again, and the corrected form
    sent with the field left empty is refused there, not a trigger with a secret the gateway
    made up (every call the partner signs refused)."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/triggers/new")
    data = [("csrf", token), ("name", "samsara"), ("methods", "POST"), ("format", "json")]
    data += [("auth.mode", "hmac"), ("auth.preset", "motive"), ("auth.secret", "kt-partner")]
    refused = await client.post("/admin/triggers", data=data)
    page = await refused.text()
    assert refused.status == 422 and "kt-partner" not in page and _retype_note(page)
    fields = replaced(form_fields(page, "/admin/triggers"), entity_type="vehicle")
    again = await client.post("/admin/triggers", data=fields)
    page = await again.text()
    assert again.status == 422, page
    assert "the secret typed before was not kept" in page and 'data-field="auth.secret"' in page
    assert (await (await client.get("/api/v1/triggers", headers=auth())).json())["items"] == []
    fields = replaced(form_fields(page, "/admin/triggers"), **{"auth.secret": "kt-partner"})
    created = await client.post("/admin/triggers", data=fields)
    assert created.status == 201, await created.text()
    hook = f"/hooks/{(await _only_trigger(client))['id']}"
    assert (await client.post(hook, data=BODY, headers=_motive("kt-partner"))).status == 201


async def test_a_new_partner_secret_typed_in_a_refused_edit_is_asked_again_not_saved_without(
    client: Client, services: Services
) -> None:
    """The edit refused for a rate limit typo drops the partner's new secret: the page says
    to type it again, and the fixed form without it is refused at the secret rather than
    "saved" with the old secret still the one checked."""
    await make_user(services)
    await log_in(client)
    await _create(
        client, ("auth.mode", "hmac"), ("auth.preset", "motive"), ("auth.secret", "old-secret")
    )
    trigger = await _only_trigger(client)
    base = f"/admin/triggers/{trigger['id']}/edit"
    form = form_fields(await (await client.get(base)).text(), base)
    typo = replaced(form, **{"auth.secret": "new-secret", "rate_limit.per_second": "dez"})
    refused = await client.post(base, data=typo)
    page = await refused.text()
    assert refused.status == 422 and "new-secret" not in page and _retype_note(page)
    fixed = replaced(form_fields(page, base), **{"rate_limit.per_second": "10"})
    again = await client.post(base, data=fixed)
    page = await again.text()
    assert again.status == 422 and "the secret typed before was not kept" in page
    saved = await client.post(
        base, data=replaced(form_fields(page, base), **{"auth.secret": "new-secret"})
    )
    assert saved.status == 200, await saved.text()
    hook = f"/hooks/{trigger['id']}"
    assert (await client.post(hook, data=BODY, headers=_motive("old-secret"))).status == 401
    assert (await client.post(hook, data=BODY, headers=_motive("new-secret"))).status == 201


def _field_errors(page: str) -> dict[str, str]:
    return dict(re.findall(r'class="field-error"[^>]*data-field="([^"]+)">(.*?)</div>', page))


async def test_an_hmac_trigger_without_a_scheme_is_refused_at_the_partners_scheme(
    client: Client, services: Services
) -> None:
    """The refusal is at the form's "Partner's scheme" select, as Required: it named
    `/auth/algorithm`, a field the form does not have, above the form."""
    await make_user(services)
    await log_in(client)
    refused = await _create(client, ("auth.mode", "hmac"))
    page = await refused.text()
    assert refused.status == 422, page
    errors = _field_errors(page)
    assert list(errors) == ["auth.preset"], errors
    assert "Obrigatório" in errors["auth.preset"] and "motive" in errors["auth.preset"]
    assert 'class="alert"' not in page and "algorithm is required" not in page


async def test_a_partner_jwt_trigger_without_its_keys_is_refused_at_both_key_fields_in_words(
    client: Client, services: Services
) -> None:
    """Neither a JWKS URL nor a public key: both fields say one of them is required (it was
    the validator's `oneOf` text above the form); both given: the key is refused beside it."""
    await make_user(services)
    await log_in(client)
    audience = ("auth.audience", "rabbot")
    refused = await _create(client, ("auth.mode", "partner_jwt"), audience)
    page = await refused.text()
    assert refused.status == 422, page
    errors = _field_errors(page)
    assert sorted(errors) == ["auth.jwks_url", "auth.public_key_pem"], errors
    assert all("JWKS URL" in text and "public key" in text for text in errors.values())
    assert 'class="alert"' not in page and "oneOf" not in page
    jwks = ("auth.jwks_url", "https://idp.example.com/jwks.json")
    both = await _create(
        client, ("auth.mode", "partner_jwt"), audience, jwks, ("auth.public_key_pem", "PEM")
    )
    page = await both.text()
    assert both.status == 422 and list(_field_errors(page)) == ["auth.public_key_pem"], page
    assert "not both" in page and "oneOf" not in page
