"""The Users page over HTTP: an admin adds a user who can then log in, gives another role or
removes them (their own browser's session ends at once), cannot demote or remove themselves;
problems stand next to their fields; a viewer sees the list and changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest

from gateway.config import Settings
from gateway.services import Services
from gateway.store.ui_accounts import EMAIL_STEP, account_email
from tests.support import cli_env
from tests.test_ui_access import _ui_user
from tests.ui_support import PASSWORD, Client, csrf, csrf_of, log_in, make_user

VERA = "vera@acme.com.br"
ANA = "ana@acme.com.br"


@asynccontextmanager
async def other_browser(client: Client, email: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A second person's browser on the same gateway, logged in as `email`."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(str(client.make_url("")), cookie_jar=jar) as browser:
        page = await (await browser.get("/admin/login")).text()
        form = {"csrf": csrf_of(page), "tenant": "acme", "email": email, "password": PASSWORD}
        answer = await browser.post("/admin/login", data=form, allow_redirects=False)
        assert answer.status == 303, await answer.text()
        yield browser


async def signed_in(browser: aiohttp.ClientSession) -> bool:
    return (await browser.get("/admin/", allow_redirects=False)).status == 200


async def _users(services: Services) -> dict[str, str]:
    return {u["email"]: u["role"] for u in await services.accounts.users("acme")}


async def test_an_admin_adds_a_user_who_can_then_log_in(client: Client, services: Services) -> None:
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/users")).text()
    assert "ana@acme.com.br" in page and "(você)" in page
    token = csrf_of(page)
    form = {"csrf": token, "email": "Vera@Acme.com.br", "role": "viewer", "password": PASSWORD}
    added = await client.post("/admin/users", data=form, allow_redirects=False)
    assert added.status == 303 and added.headers["Location"] == "/admin/users"
    assert await _users(services) == {"ana@acme.com.br": "admin", VERA: "viewer"}
    async with other_browser(client, VERA) as browser:
        assert "leitor" in await (await browser.get("/admin/")).text()


async def test_a_bad_new_user_is_refused_next_to_its_fields_and_nothing_is_stored(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/users")
    form = {"csrf": token, "email": "not an address", "role": "root", "password": "short"}
    refused = await client.post("/admin/users", data=form)
    page = await refused.text()
    assert refused.status == 422
    for field in ("email", "role", "password"):
        assert f'data-field="{field}"' in page
    assert 'value="not an address"' in page and "short" not in page  # no password echoed
    taken = {"csrf": token, "email": "ana@acme.com.br", "role": "admin", "password": PASSWORD}
    conflict = await client.post("/admin/users", data=taken)
    assert conflict.status == 409 and 'role="alert"' in await conflict.text()
    assert await _users(services) == {"ana@acme.com.br": "admin"}


async def test_a_new_user_whose_ascii_domain_is_no_valid_name_is_refused_and_a_final_dot_dropped(
    client: Client, services: Services
) -> None:
    """Only a non-ASCII domain went through IDNA: `ana@açme..com.br` was refused, and
    `ana@acme..com.br` stored; `ana@açao.com.br.` was a second account for the mailbox of
    `ana@xn--aao-2la.com.br`, which a login without the dot never found."""
    await make_user(services)
    await log_in(client)
    for email in (
        "bia@acme..com.br",
        "bia@-acme.com.br",
        "bia@acme-.com.br",
        "bia@" + "a" * 64 + ".com.br",
        "bia@xn--zz.com.br",
        "bia@acme_br.com",
    ):
        token = await csrf(client, "/admin/users")
        form = {"csrf": token, "email": email, "role": "viewer", "password": PASSWORD}
        refused = await client.post("/admin/users", data=form)
        assert refused.status == 422, email
        assert "is not a valid domain name" in await refused.text(), email
    token = await csrf(client, "/admin/users")
    form = {"csrf": token, "email": "bia@açao.com.br.", "role": "viewer", "password": PASSWORD}
    assert (await client.post("/admin/users", data=form, allow_redirects=False)).status == 303
    assert await _users(services) == {ANA: "admin", "bia@xn--aao-2la.com.br": "viewer"}
    assert (await log_in(client, email="bia@xn--aao-2la.com.br")).status == 303


async def test_a_new_role_or_a_removal_ends_that_users_session_at_once(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await make_user(services, email=VERA, role="viewer")
    await log_in(client)
    token = await csrf(client, "/admin/users")
    async with other_browser(client, VERA) as browser:
        assert await signed_in(browser)
        form = {"csrf": token, "email": VERA, "role": "admin"}
        changed = await client.post("/admin/users/role", data=form, allow_redirects=False)
        assert changed.status == 303
        assert not await signed_in(browser)
    assert (await _users(services))[VERA] == "admin"
    async with other_browser(client, VERA) as browser:
        assert "administrador" in await (await browser.get("/admin/")).text()
        form = {"csrf": token, "email": VERA}
        removed = await client.post("/admin/users/delete", data=form, allow_redirects=False)
        assert removed.status == 303
        assert not await signed_in(browser)
    assert VERA not in await (await client.get("/admin/users")).text()
    assert await _users(services) == {"ana@acme.com.br": "admin"}


async def test_an_admin_cannot_demote_or_remove_themselves(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/users")
    for path, form in (
        ("/admin/users/role", {"csrf": token, "email": "ana@acme.com.br", "role": "viewer"}),
        ("/admin/users/delete", {"csrf": token, "email": "Ana@acme.com.br"}),
    ):
        refused = await client.post(path, data=form)
        assert refused.status == 422
        assert "the account you are signed in with" in await refused.text()
    assert await _users(services) == {"ana@acme.com.br": "admin"}
    assert (await client.get("/admin/", allow_redirects=False)).status == 200


async def test_a_viewer_sees_the_users_but_no_forms_and_cannot_change_them(
    client: Client, services: Services
) -> None:
    await make_user(services, role="viewer")
    await make_user(services, email=VERA)
    await log_in(client)
    page = await (await client.get("/admin/users")).text()
    assert VERA in page and 'action="/admin/users' not in page
    token = await csrf(client, "/admin/users")
    form = {"csrf": token, "email": VERA}
    refused = await client.post("/admin/users/delete", data=form)
    assert refused.status == 403
    assert await _users(services) == {"ana@acme.com.br": "viewer", VERA: "admin"}


@pytest.mark.parametrize("change", ["role", "delete"])
async def test_two_admins_demoting_or_removing_each_other_at_once_leave_an_admin(
    client: Client, services: Services, change: str
) -> None:
    """Each checked that it was not changing itself, then wrote the other's new role (or
    removed the other): sent together, both changes landed and the tenant had no admin user
    left."""
    await make_user(services)
    await make_user(services, email=VERA)
    await log_in(client)
    ana_token = await csrf(client, "/admin/users")
    async with other_browser(client, VERA) as browser:
        vera_token = csrf_of(await (await browser.get("/admin/users")).text())
        answers = await asyncio.gather(
            client.post(
                f"/admin/users/{change}",
                data={"csrf": ana_token, "email": VERA, "role": "viewer"},
                allow_redirects=False,
            ),
            browser.post(
                f"/admin/users/{change}",
                data={"csrf": vera_token, "email": ANA, "role": "viewer"},
                allow_redirects=False,
            ),
        )
        outcomes = [(answer.status, answer.headers.get("Location")) for answer in answers]
    roles = await _users(services)
    admins = list(roles.values()).count("admin")
    assert admins >= 1, (outcomes, roles)
    # Each change answered as it went: done (back to the list), or refused (the list again
    # with the reason, or the login page: the session ended as its user was demoted).
    assert outcomes.count((303, "/admin/users")) == 2 - admins, (outcomes, roles)


async def test_users_stored_before_the_one_email_form_are_put_in_it_once_and_log_in(
    client: Client, services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    """An older gateway stored the domain as typed (`ana@açao.com.br`, by the command line), or
    in ASCII (a browser's Users page): the first start puts each in the one form, so the login
    finds it whatever the browser sends; one whose form another user has is left as it was."""
    await make_user(services, email="bia@xn--aao-2la.com.br")
    users = services.store.db["ui_users"]
    await make_user(services, email="ana@example.com")
    await users.update_one({"email": "ana@example.com"}, {"$set": {"email": "ana@açao.com.br"}})
    await make_user(services, email="carla@example.com")
    await users.update_one({"email": "carla@example.com"}, {"$set": {"email": "BIA@Açao.com.br"}})
    await services.store.db["migrations"].delete_many({"_id": EMAIL_STEP})
    await services.store.ensure_indexes()  # what every process runs at start
    assert set(await _users(services)) == {
        "ana@xn--aao-2la.com.br",
        "bia@xn--aao-2la.com.br",
        "BIA@Açao.com.br",  # taken by bia: kept, and said
    }
    assert "'BIA@Açao.com.br' of tenant 'acme' kept as stored" in caplog.text
    for typed in ("ana@açao.com.br", "ANA@xn--aao-2la.com.br", "bia@AÇAO.com.br"):
        assert (await log_in(client, email=typed)).status == 303, typed


async def test_a_user_the_rewrite_kept_as_stored_is_removed_and_changed_by_its_listed_email(
    client: Client, services: Services, settings: Settings, mongodb_uri: str
) -> None:
    """The same person added by the command line with the domain as typed and by a browser's
    Users page in ASCII: the start keeps the first as stored. Removing or changing that row
    from the list, or by the command line, acts on it: it removed or changed the other."""
    await make_user(services)
    await make_user(services, email="bia@xn--aao-2la.com.br", role="viewer")
    users = services.store.db["ui_users"]
    await make_user(services, email="tmp@example.com", role="viewer")
    await users.update_one({"email": "tmp@example.com"}, {"$set": {"email": "bia@açao.com.br"}})
    await services.store.db["migrations"].delete_many({"_id": EMAIL_STEP})
    await services.store.ensure_indexes()
    await log_in(client)
    token = await csrf(client, "/admin/users")
    form = {"csrf": token, "email": "bia@açao.com.br", "role": "admin"}
    changed = await client.post("/admin/users/role", data=form, allow_redirects=False)
    assert changed.status == 303
    assert await _users(services) == {
        ANA: "admin",
        "bia@xn--aao-2la.com.br": "viewer",
        "bia@açao.com.br": "admin",
    }
    env = cli_env(settings, mongodb_uri)
    cli = ("set-password", "--email", "bia@açao.com.br")
    changed = await _ui_user(env, *cli, stdin="another passphrase")
    assert changed.returncode == 0, changed.stderr
    assert "password of bia@açao.com.br of tenant acme set" in changed.stderr
    token = await csrf(client, "/admin/users")
    form = {"csrf": token, "email": "bia@açao.com.br"}
    removed = await client.post("/admin/users/delete", data=form, allow_redirects=False)
    assert removed.status == 303
    assert await _users(services) == {ANA: "admin", "bia@xn--aao-2la.com.br": "viewer"}
    assert (await log_in(client, email="bia@açao.com.br")).status == 303  # the one that works


def test_the_email_form_is_lower_case_then_nfc_and_its_own_form() -> None:
    """NFC then lower case was not one form: `J̌` (no capital precomposed) lower-cased is `j`
    and a caron, whose NFC is `ǰ`, the form of the same address typed in lower case."""
    for typed in ("J\u030cose@acme.com.br", "\u01f0ose@acme.com.br", "j\u030cose@ACME.com.br"):
        assert account_email(typed) == "\u01f0ose@acme.com.br", ascii(typed)
        assert account_email(account_email(typed)) == account_email(typed)


async def test_a_user_logs_in_with_the_email_the_users_page_lists_and_after_the_rewrite(
    client: Client, services: Services
) -> None:
    """Created as `J̌ose@…`, the user was stored `j` + caron and only an upper-case spelling
    logged in; one an older gateway stored as `maẗeus@…` was rewritten to NFC and its login
    looked for the other form. The rewrite runs again under its new name."""
    await make_user(services, email="J\u030cose@acme.com.br")
    [listed] = await _users(services)
    for typed in (
        listed,
        "\u01f0ose@acme.com.br",
        "j\u030cose@acme.com.br",
        "J\u030cOSE@acme.com.br",
    ):
        assert (await log_in(client, email=typed)).status == 303, ascii(typed)
    users = services.store.db["ui_users"]
    await make_user(services, email="tmp@example.com")
    await users.update_one(
        {"email": "tmp@example.com"}, {"$set": {"email": "mat\u0308eus@acme.com.br"}}
    )
    await services.store.db["migrations"].insert_one(
        {"_id": "ui_users.email.form"}
    )  # the old step's
    await services.store.db["migrations"].delete_many({"_id": EMAIL_STEP})
    await services.store.ensure_indexes()
    assert "ma\u1e97eus@acme.com.br" in await _users(services)
    for typed in (
        "MAT\u0308EUS@acme.com.br",
        "mat\u0308eus@acme.com.br",
        "ma\u1e97eus@acme.com.br",
    ):
        assert (await log_in(client, email=typed)).status == 303, ascii(typed)
