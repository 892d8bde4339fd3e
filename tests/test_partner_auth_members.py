"""A partner's `auth` document is held to the members its type knows, as every nested admin
document is: a misspelt `scopes` or a header `prefix` is a `422` naming it (with a hint), not
saved and never sent. OAuth2 client credentials take what real IdPs need in the token request:
an `audience` (Auth0) and `extra_params` (Azure AD v1's `resource`). A partner saved before with
a member its type does not know keeps working."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp.test_utils import TestClient

from gateway.actions.catalog import auth_context
from gateway.auth.secretbox import SecretBox
from gateway.web.state import services_key
from tests.partner_double import Partner, create_action, create_partner, partner
from tests.support import auth

__all__ = ["partner"]  # the fixture

Client = TestClient[Any, Any]
BASE = "https://erp.example.com/api"
OAUTH2 = {
    "type": "oauth2_client_credentials",
    "token_url": "https://erp.example.com/oauth/token",
    "client_id": "rabbot",
    "client_secret": "s3cr3t",
}
TOKEN = {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600}


async def _problems(client: Client, auth_doc: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post(
        "/api/v1/partners",
        json={"name": "ERP", "base_url": BASE, "auth": auth_doc},
        headers=auth(),
    )
    body = await response.json()
    assert response.status == 422, body
    return list(body["errors"])


@pytest.mark.parametrize(
    ("auth_doc", "pointer", "hint"),
    [
        ({**OAUTH2, "scopes": "frota"}, "/auth/scopes", "scope"),
        ({**OAUTH2, "client_authentication": "body"}, "/auth/client_authentication", None),
        ({**OAUTH2, "audiance": "https://api"}, "/auth/audiance", "audience"),
        ({**OAUTH2, "extra_param": {"resource": "x"}}, "/auth/extra_param", "extra_params"),
        (
            {"type": "header", "name": "X-Key", "value": "k", "prefix": "Token "},
            "/auth/prefix",
            None,
        ),
        ({"type": "bearer", "token": "k", "scheme": "Token"}, "/auth/scheme", None),
        ({"type": "bearer", "tokn": "k", "token": "k"}, "/auth/tokn", "token"),
        ({"type": "basic", "username": "u", "password": "p", "passwd": "p"}, "/auth/passwd", None),
        ({"type": "query", "name": "apikey", "value": "k", "vaule": "k"}, "/auth/vaule", "value"),
        ({"type": "none", "token": "k"}, "/auth/token", None),
        (
            {
                "type": "geotab",
                "url": "https://g/apiv1",
                "database": "d",
                "username": "u",
                "password": "p",
                "databse": "d",
            },
            "/auth/databse",
            "database",
        ),
    ],
)
async def test_a_member_the_auth_type_does_not_know_is_a_422_naming_it_with_a_hint(
    client: Client, auth_doc: dict[str, Any], pointer: str, hint: str | None
) -> None:
    (problem,) = await _problems(client, auth_doc)
    assert problem["pointer"] == pointer, problem
    assert problem["keyword"] == "additionalProperties"
    assert problem["message"].startswith(f"{pointer}: unknown field"), problem
    if hint is not None:
        assert problem["message"].endswith(f"(did you mean {hint!r}?)"), problem


async def test_an_oauth2_token_request_carries_the_audience_and_the_extra_params(
    client: Client, partner: Partner
) -> None:
    erp = await create_partner(
        client,
        partner.url,
        auth={
            **OAUTH2,
            "token_url": f"{partner.url}/oauth/token",
            "client_auth": "body",
            "audience": "https://api.erp.example.com",
            "extra_params": {"resource": "api://erp", "tenant": "frota sul"},
        },
    )
    assert erp["auth"] == {"type": "oauth2_client_credentials", "configured": True}
    action = await create_action(client, erp["id"], mode="proxy", method="GET", path="/api")
    partner.respond_with(200, TOKEN, times=1)
    invoked = await client.post(
        f"/api/v1/actions/{action['id']}/invoke", headers=auth(), json={"payload": {}}
    )
    assert invoked.status == 200, await invoked.text()
    token_request, call = partner.requests
    assert token_request.path == "/oauth/token"
    assert dict(parse_qsl(token_request.body.decode())) == {
        "grant_type": "client_credentials",
        "audience": "https://api.erp.example.com",
        "resource": "api://erp",
        "tenant": "frota sul",
        "client_id": "rabbot",
        "client_secret": "s3cr3t",
    }
    assert call.headers["Authorization"] == "Bearer tok-1"


@pytest.mark.parametrize(
    ("extra_params", "pointer", "keyword"),
    [
        ({"client_secret": "other"}, "/auth/extra_params/client_secret", "reserved"),
        ({"grant_type": "password"}, "/auth/extra_params/grant_type", "reserved"),
        ({"audience": "x"}, "/auth/extra_params/audience", "reserved"),
        ({"resource": ""}, "/auth/extra_params/resource", "minLength"),
        ({"resource": 1}, "/auth/extra_params/resource", "type"),
        ({"resource": "a\nb"}, "/auth/extra_params/resource", "pattern"),
        (["resource"], "/auth/extra_params", "type"),
        ({f"p{n}": "v" for n in range(21)}, "/auth/extra_params", "type"),
    ],
)
async def test_extra_params_are_names_to_text_that_do_not_set_the_grants_own(
    client: Client, extra_params: Any, pointer: str, keyword: str
) -> None:
    (problem,) = await _problems(client, {**OAUTH2, "extra_params": extra_params})
    assert (problem["pointer"], problem["keyword"]) == (pointer, keyword), problem


async def test_a_partner_saved_before_with_an_unknown_auth_member_keeps_calling(
    client: Client, partner: Partner
) -> None:
    """Saved before the members were checked: read as it always was, the member ignored."""
    erp = await create_partner(client, partner.url, auth={"type": "none"})
    proxy = await create_action(client, erp["id"], mode="proxy")
    stored = {"type": "header", "name": "X-Api-Key", "value": "k-1", "prefix": "Token "}
    services = client.app[services_key]
    sealed = SecretBox(services.keyring).seal(stored, context=auth_context(erp["id"]))
    await services.store.db["partners"].update_one(
        {"name": "ERP"}, {"$set": {"auth_sealed": sealed, "auth_type": "header"}}
    )
    invoked = await client.post(
        f"/api/v1/actions/{proxy['id']}/invoke", json={"payload": {}}, headers=auth()
    )
    assert invoked.status == 200, await invoked.text()
    (request,) = partner.requests
    assert request.headers["X-Api-Key"] == "k-1"
