"""The admin UI's credentials form knows every type the API takes but a Google service
account: an `hmac` partner is re-keyed and moved to a new origin there; an OAuth2 client's
`audience`, `extra_params` and `client_auth` are offered, and a rotation of its secret that
leaves them empty keeps the stored ones (the form shows no stored member: credentials are
write-only). Checked on the wire: the partner double on 127.0.0.1 gets the request signed with
the new secret, the token request with the audience kept."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl

from gateway.services import Services
from tests.partner_double import Partner, create_action, partner
from tests.support import auth
from tests.ui_support import Client, form_fields, log_in, make_user, replaced

__all__ = ["partner"]  # the fixture


async def _partner_in_ui(client: Client, services: Services, auth_doc: dict[str, Any]) -> str:
    await make_user(services)
    body = {"name": "ERP", "base_url": "https://erp.example.com", "auth": auth_doc}
    created = await client.post("/api/v1/partners", json=body, headers=auth())
    assert created.status == 201, await created.text()
    await log_in(client)
    return str((await created.json())["id"])


async def _replace(client: Client, pid: str, **typed: str) -> tuple[int, str]:
    path = f"/admin/partners/{pid}"
    page = await (await client.get(path)).text()
    fields = replaced(form_fields(page, f"{path}/credentials"), **typed)
    saved = await client.post(f"{path}/credentials", data=fields, allow_redirects=False)
    return saved.status, page


async def _invoke(client: Client, pid: str) -> None:
    proxy = await create_action(client, pid, mode="proxy", path="/pedidos")
    response = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", headers=auth(), json={"payload": {"n": 1}}
    )
    assert response.status == 200, await response.text()


async def test_an_hmac_partner_is_rekeyed_and_moved_to_a_new_origin_in_the_ui(
    client: Client, services: Services, partner: Partner
) -> None:
    old = {"type": "hmac", "secret": "0ld-s3cr3t", "header": "X-Signature", "prefix": "sha256="}
    pid = await _partner_in_ui(client, services, old)
    status, page = await _replace(
        client,
        pid,
        base_url=partner.url,  # another origin: the credentials are typed again
        auth__type="hmac",
        auth__secret="n3w-s3cr3t",
        auth__header="X-Signature",
    )
    assert 'value="hmac"' in page and 'name="auth.secret"' in page
    assert status == 303, status
    await _invoke(client, pid)
    (sent,) = partner.requests
    # Signed with the new secret, the stored prefix kept (the field was left empty).
    mac = hmac.new(b"n3w-s3cr3t", sent.body, hashlib.sha256).hexdigest()
    assert sent.headers["X-Signature"] == f"sha256={mac}"


async def test_rotating_an_oauth2_secret_in_the_ui_keeps_audience_extra_params_and_client_auth(
    client: Client, services: Services, partner: Partner
) -> None:
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": f"{partner.url}/oauth/token",
        "client_id": "rabbot",
        "client_secret": "0ld-s3cr3t",
        "client_auth": "body",
        "audience": "https://api.erp.example.com",
        "extra_params": {"resource": "api://erp"},
    }
    pid = await _partner_in_ui(client, services, oauth)
    status, page = await _replace(
        client,
        pid,
        base_url=partner.url,
        auth__type="oauth2_client_credentials",
        auth__token_url=oauth["token_url"],
        auth__client_id="rabbot",
        auth__client_secret="n3w-s3cr3t",
    )
    assert 'name="auth.audience"' in page and 'name="auth.extra_params"' in page
    assert status == 303, status
    partner.respond_with(200, {"access_token": "t0k3n-abc", "token_type": "bearer"})
    await _invoke(client, pid)
    token_request = partner.requests[0]
    assert token_request.path == "/oauth/token"
    form = dict(parse_qsl(token_request.body.decode()))
    assert form["client_secret"] == "n3w-s3cr3t"  # in the body: client_auth kept
    assert form["audience"] == "https://api.erp.example.com"
    assert form["resource"] == "api://erp"
    assert "Authorization" not in token_request.headers


async def test_oauth2_members_typed_in_the_ui_replace_the_stored_ones(
    client: Client, services: Services, partner: Partner
) -> None:
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": f"{partner.url}/oauth/token",
        "client_id": "rabbot",
        "client_secret": "0ld-s3cr3t",
        "audience": "https://old.example.com",
    }
    pid = await _partner_in_ui(client, services, oauth)
    status, _ = await _replace(
        client,
        pid,
        base_url=partner.url,
        auth__type="oauth2_client_credentials",
        auth__token_url=oauth["token_url"],
        auth__client_id="rabbot",
        auth__client_secret="n3w-s3cr3t",
        auth__audience="https://new.example.com",
        auth__extra_params='{"tenant": "frota"}',
        auth__client_auth="basic",
    )
    assert status == 303, status
    partner.respond_with(200, {"access_token": "t0k3n-abc", "token_type": "bearer"})
    await _invoke(client, pid)
    form = dict(parse_qsl(partner.requests[0].body.decode()))
    assert form["audience"] == "https://new.example.com" and form["tenant"] == "frota"
    assert "client_secret" not in form and partner.requests[0].headers["Authorization"]


async def test_malformed_extra_params_in_the_ui_is_a_problem_at_that_field(
    client: Client, services: Services
) -> None:
    oauth = {
        "type": "oauth2_client_credentials",
        "token_url": "https://idp.example.com/token",
        "client_id": "rabbot",
        "client_secret": "0ld-s3cr3t",
    }
    pid = await _partner_in_ui(client, services, oauth)
    path = f"/admin/partners/{pid}"
    page = await (await client.get(path)).text()
    fields = replaced(
        form_fields(page, f"{path}/credentials"),
        auth__type="oauth2_client_credentials",
        auth__token_url=oauth["token_url"],
        auth__client_id="rabbot",
        auth__client_secret="n3w-s3cr3t",
        auth__extra_params='{"tenant": ',
    )
    saved = await client.post(f"{path}/credentials", data=fields, allow_redirects=False)
    assert saved.status == 422
    assert 'data-field="auth.extra_params"' in await saved.text()


async def test_an_hmac_partner_registered_in_the_ui_signs_as_typed(
    client: Client, services: Services, partner: Partner
) -> None:
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/partners")).text()
    fields = replaced(
        form_fields(page, "/admin/partners"),
        name="ERP",
        base_url=partner.url,
        auth__type="hmac",
        auth__secret=" s3cr3t ",
        auth__header="Authorization",
        auth__algorithm="sha512",
        auth__encoding="base64",
        auth__prefix="HMAC ",  # its space is the partner's: taken as typed
    )
    saved = await client.post("/admin/partners", data=fields, allow_redirects=False)
    assert saved.status == 303, await saved.text()
    pid = saved.headers["Location"].rsplit("/", 1)[-1].split("?")[0]
    await _invoke(client, pid)
    (sent,) = partner.requests
    mac = base64.b64encode(hmac.new(b" s3cr3t ", sent.body, hashlib.sha512).digest()).decode()
    assert sent.headers["Authorization"] == f"HMAC {mac}"
