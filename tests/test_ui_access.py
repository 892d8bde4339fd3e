"""The admin UI's doors, over HTTP: login (password, token), sessions, CSRF, roles, lockout,
tenant isolation and the security headers. Nothing refused changes anything."""

from __future__ import annotations

import asyncio
import gc
import html
import io
import re
import subprocess
import threading
import warnings
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import pytest
from aiohttp import web

from gateway.accounts import MAX_FAILURES
from gateway.auth import passwords
from gateway.config import Settings
from gateway.errors import InvalidPayload, NotFound
from gateway.services import Services
from gateway.ui.access import LOGIN_BURST
from gateway.ui.middleware import PRE_SESSION_COOKIE, SESSION_COOKIE
from gateway.web.state import services_key
from tests.support import admin_token, auth, cli_env, run_command
from tests.ui_support import (
    PASSWORD,
    Client,
    csrf,
    csrf_of,
    form_fields,
    log_in,
    log_in_from,
    make_user,
    replaced,
)


async def _trigger(client: Client, tenant: str = "acme", name: str = "gps") -> dict[str, Any]:
    body = {"name": name, "entity_type": "vehicle"}
    response = await client.post("/api/v1/triggers", json=body, headers=auth(tenant))
    assert response.status == 201
    result: dict[str, Any] = await response.json()
    return result


async def test_pages_need_a_session_and_send_the_visitor_to_log_in(client: Client) -> None:
    response = await client.get("/admin/triggers?limit=5", allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/admin/login?next=/admin/triggers%3Flimit%3D5"


async def test_a_user_logs_in_with_a_password_and_sees_their_tenant(
    client: Client, services: Services
) -> None:
    await make_user(services)
    response = await log_in(client)
    assert response.status == 303 and response.headers["Location"] == "/admin/"
    cookie = response.cookies["rabbot_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/admin"
    assert 0 < int(cookie["max-age"]) <= 8 * 3600
    page = await (await client.get("/admin/")).text()
    assert "ana@acme.com.br · acme" in page


async def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(
    client: Client, services: Services
) -> None:
    await make_user(services)
    wrong = await log_in(client, password="not the password")
    unknown = await log_in(client, email="nobody@acme.com.br")
    assert wrong.status == unknown.status == 401
    assert "wrong tenant, e-mail or password" in await wrong.text()
    assert "rabbot_session" not in wrong.cookies


async def test_repeated_failures_lock_the_login_even_for_the_right_password(
    client: Client, services: Services
) -> None:
    await make_user(services)
    for _ in range(MAX_FAILURES):
        assert (await log_in(client, password="guess guess guess")).status == 401
    locked = await log_in(client)
    assert locked.status == 429
    assert "too many failed logins" in await locked.text()
    assert "rabbot_session" not in locked.cookies


async def test_guesses_sent_at_once_to_two_processes_check_no_more_passwords_than_the_lockout(
    aiohttp_client: Any, make_app: Any, services: Services
) -> None:
    """Each attempt is counted in the database before its password is checked: a burst of
    guesses from many addresses, split between two processes, gets MAX_FAILURES checks, and
    the rest the lockout, not one check each (the count read before a check, written after)."""
    await make_user(services)
    clients = [await aiohttp_client(make_app(trusted_proxies=("127.0.0.0/8",))) for _ in "ab"]
    tokens = [await csrf(c, "/admin/login") for c in clients]

    async def guess(n: int) -> int:
        data = {"csrf": tokens[n % 2], "tenant": "acme", "email": "ana@acme.com.br"}
        data["password"] = f"wrong password {n}"
        headers = {"X-Forwarded-For": f"203.0.113.{n + 1}"}
        login = clients[n % 2].post("/admin/login", data=data, headers=headers)
        return (await login).status

    statuses = await asyncio.gather(*(guess(n) for n in range(8)))
    assert sorted(statuses) == [401] * MAX_FAILURES + [429] * (8 - MAX_FAILURES), statuses
    assert (await log_in(clients[0])).status == 429  # locked, the right password too


async def test_a_login_refused_before_its_check_is_not_counted_as_a_failure(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A login the process has no room to check (429 at once) was counted before its check:
    it is taken back, so an admin refused so is not locked out for it."""
    await make_user(services)
    monkeypatch.setattr(passwords, "_held", passwords.MAX_CHECKS)
    for _ in range(MAX_FAILURES):
        busy = await log_in(client)
        assert busy.status == 429 and "being checked" in await busy.text()
    monkeypatch.setattr(passwords, "_held", 0)
    assert await services.store.db["ui_login_throttle"].count_documents({}) == 0
    assert (await log_in(client)).status == 303


async def test_a_login_for_no_possible_tenant_or_e_mail_is_refused_alike_and_stores_nothing(
    client: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lockout's record is named by tenant and e-mail: one made of whatever a client
    posted (a body's worth of characters) was stored for a day. A tenant or an e-mail no user
    can have is refused as a wrong password, after a password check all the same (its
    answer's time says nothing either), and stores nothing."""
    checks: list[str] = []
    check = passwords.verify_password
    monkeypatch.setattr(passwords, "verify_password", lambda *a: checks.append("") or check(*a))
    await make_user(services)
    made_up = [
        ("a" * 100_000, "ana@acme.com.br"),
        ("acme", "a" * 100_000 + "@acme.com.br"),
        ("acme", "ana@" + "é" * 20_000),
        ("acme", "not an e-mail"),
        ("acme corp", "ana@acme.com.br"),
    ]
    for tenant, email in made_up:
        refused = await log_in(client, tenant, email, "guess guess guess")
        assert refused.status == 401
        assert "wrong tenant, e-mail or password" in await refused.text()
    assert len(checks) == len(made_up)
    assert await services.store.db["ui_login_throttle"].count_documents({}) == 0
    assert (await log_in(client, password="guess guess guess")).status == 401
    stored = await services.store.db["ui_login_throttle"].find().to_list(None)
    assert [d["_id"] for d in stored] == ["password:acme:ana@acme.com.br"]


async def test_logins_without_a_session_count_against_the_client_s_admin_rate_limit(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Each new e-mail is its own lockout key, so the admin limit is what bounds one client's
    password guesses (each a scrypt): counted per address, as the API's calls without a
    valid token are."""
    client = await aiohttp_client(make_app(admin_rate_limit=2))
    token = await csrf(client, "/admin/login")

    async def attempt(n: int) -> Any:
        data = {"csrf": token, "tenant": "acme", "email": f"x{n}@acme.com.br", "password": "x"}
        return await client.post("/admin/login", data=data, allow_redirects=False)

    answers = await asyncio.gather(*(attempt(n) for n in range(10)))
    statuses = sorted(a.status for a in answers)
    assert 401 in statuses and statuses.count(429) >= 5, statuses
    limited = next(a for a in answers if a.status == 429)
    assert "over the admin limit" in await limited.text()
    assert limited.headers["Retry-After"] == "1"


async def test_a_flood_of_logins_never_queues_the_default_executor_s_work(
    client: Client,
) -> None:
    """Password checks (scrypt, ~0.1-0.5 s of CPU each) run on threads of their own, two at a
    time: a client's flood of logins (past its few, a 429 at once) makes other logins wait
    their turn, never the work the event loop's default executor does meanwhile."""
    token = await csrf(client, "/admin/login")

    async def attempt(n: int) -> int:
        data = {"csrf": token, "tenant": "acme", "email": f"f{n}@acme.com.br", "password": "x"}
        response = await client.post("/admin/login", data=data, allow_redirects=False)
        return response.status

    flood = [asyncio.create_task(attempt(n)) for n in range(24)]
    await asyncio.sleep(0.3)  # the flood's checks are in flight
    started = asyncio.get_running_loop().time()
    await asyncio.to_thread(lambda: None)
    waited = asyncio.get_running_loop().time() - started
    statuses = await asyncio.gather(*flood)
    assert statuses.count(401) >= LOGIN_BURST and set(statuses) == {401, 429}, statuses
    assert waited < 0.25, waited


async def test_an_admin_token_pasted_in_opens_a_session_of_its_tenant_and_role(
    client: Client,
) -> None:
    token = await csrf(client, "/admin/login")
    response = await client.post(
        "/admin/login/token",
        data={"csrf": token, "token": admin_token("globex", "viewer")},
        allow_redirects=False,
    )
    assert response.status == 303
    page = await (await client.get("/admin/")).text()
    assert "token:tester · globex · leitor" in page


async def _paste(client: Client, token: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    page = await client.get("/admin/login", headers=headers)
    if page.status != 200:
        return page.status
    csrf_token = csrf_of(await page.text())
    response = await client.post(
        "/admin/login/token",
        data={"csrf": csrf_token, "token": token},
        headers=headers,
        allow_redirects=False,
    )
    return response.status


async def test_junk_tokens_from_the_same_address_never_lock_out_a_valid_token(
    client: Client,
) -> None:
    """Behind a proxy every browser has its address: a stranger's junk tokens lock the
    address's token guesses, never an admin pasting a valid token."""
    stranger = [await _paste(client, "junk") for _ in range(MAX_FAILURES + 1)]
    assert stranger == [401] * MAX_FAILURES + [429], stranger
    assert await _paste(client, admin_token("acme")) == 303


async def test_behind_a_trusted_proxy_each_client_has_its_own_budget_and_lockout(
    aiohttp_client: Any, make_app: Any
) -> None:
    client = await aiohttp_client(make_app(admin_rate_limit=1, trusted_proxies=("127.0.0.0/8",)))

    async def api(forwarded_for: str) -> int:
        headers = {"Authorization": "Bearer junk", "X-Forwarded-For": forwarded_for}
        return (await client.get("/api/v1/triggers", headers=headers)).status

    # What the client wrote before the proxy's hop is not believed: 203.0.113.9 is the client.
    stranger = [await api(f"198.51.100.{n}, 203.0.113.9") for n in range(6)]
    assert stranger[0] == 401 and stranger[-1] == 429, stranger
    assert await api("198.51.100.7") == 401
    stranger = [await _paste(client, "junk", "203.0.113.9") for _ in range(MAX_FAILURES + 1)]
    assert 429 in stranger, stranger
    assert await _paste(client, "junk", "198.51.100.8") == 401


async def test_a_client_naming_itself_in_a_forwarded_header_the_proxy_passed_is_not_believed(
    aiohttp_client: Any, make_app: Any
) -> None:
    """nginx & co. append to X-Forwarded-For and pass the client's own `Forwarded` through:
    a made-up `for=` per request neither buys a fresh budget nor spends a victim's."""
    client = await aiohttp_client(make_app(admin_rate_limit=1, trusted_proxies=("127.0.0.0/8",)))

    async def api(n: int) -> int:
        headers = {
            "Authorization": "Bearer junk",
            "X-Forwarded-For": "203.0.113.9",
            "Forwarded": f"for=198.51.100.{n}",
        }
        return (await client.get("/api/v1/triggers", headers=headers)).status

    statuses = [await api(n) for n in range(6)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    victim = await client.get("/admin/login", headers={"X-Forwarded-For": "198.51.100.5"})
    assert victim.status == 200


async def test_a_login_flood_holds_a_few_checks_per_client_and_a_bounded_number_in_all(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Password checks (scrypt, two at a time) never queue without bound behind a flood:
    one address holds at most LOGIN_BURST of them, the process MAX_CHECKS, and past that a
    login is a 429 with Retry-After at once, so an admin's login waits a few checks at most."""
    client = await aiohttp_client(make_app(trusted_proxies=("127.0.0.0/8",)))
    await make_user(client.app[services_key])
    token = await csrf(client, "/admin/login")

    async def login(address: str, email: str, password: str = "wrong password") -> Any:
        data = {"csrf": token, "tenant": "acme", "email": email, "password": password}
        headers = {"X-Forwarded-For": address}
        return await client.post("/admin/login", data=data, headers=headers, allow_redirects=False)

    async def settled(tasks: list[asyncio.Task[Any]]) -> None:
        """Until each login is answered or holds a check (none can finish one)."""
        for _ in range(1000):
            if sum(t.done() for t in tasks) + passwords._held == len(tasks):
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{sum(t.done() for t in tasks)} of {len(tasks)} answered")

    release = threading.Event()
    blockers = [passwords._SCRYPT.submit(release.wait) for _ in range(2)]  # both threads busy
    try:
        flood = [asyncio.create_task(login("203.0.113.9", f"x{n}@made.up")) for n in range(10)]
        await settled(flood)
        # Its burst, and a token the 2/s rate may have added while the 10 came in.
        assert LOGIN_BURST <= passwords._held <= LOGIN_BURST + 1
        others = [asyncio.create_task(login(f"198.51.100.{n}", f"y{n}@made.up")) for n in range(6)]
        await settled(flood + others)
        assert passwords._held == passwords.MAX_CHECKS
        refused = [t.result() for t in flood + others if t.done()]
        assert {r.status for r in refused} == {429}
        assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    finally:
        release.set()
    statuses = sorted(r.status for r in await asyncio.gather(*flood, *others))
    assert statuses == [401] * passwords.MAX_CHECKS + [429] * (16 - passwords.MAX_CHECKS)
    assert all(b.done() for b in blockers)
    assert (await login("192.0.2.7", "ana@acme.com.br", PASSWORD)).status == 303


async def test_a_login_for_an_e_mail_that_is_no_user_is_refused_and_timed_as_a_users(
    aiohttp_client: Any, make_app: Any
) -> None:
    """Every login takes its place among the process's MAX_CHECKS checks, whatever its e-mail:
    with logins for made-up e-mails counted apart (and answered unchecked past a few), a 429
    and the time of an answer told which e-mails are users' (rev27 F1, F2)."""
    client = await aiohttp_client(make_app(trusted_proxies=("127.0.0.0/8",)))
    await make_user(client.app[services_key])
    token = await csrf(client, "/admin/login")

    async def login(address: str, email: str) -> Any:
        data = {"csrf": token, "tenant": "acme", "email": email, "password": "wrong password"}
        headers = {"X-Forwarded-For": address}
        return await client.post("/admin/login", data=data, headers=headers, allow_redirects=False)

    release = threading.Event()
    blockers = [passwords._SCRYPT.submit(release.wait) for _ in range(2)]  # both threads busy
    try:
        held = [
            asyncio.create_task(
                login(f"198.51.100.{n}", ("ana@acme.com.br", f"x{n}@made.up")[n % 2])
            )
            for n in range(passwords.MAX_CHECKS)
        ]
        for _ in range(1000):
            if passwords._held == passwords.MAX_CHECKS:
                break
            await asyncio.sleep(0.01)
        assert not any(t.done() for t in held)  # made-up ones wait their check as a user's
        for email in ("ana@acme.com.br", "nobody@acme.com.br"):
            refused = await login("192.0.2.99", email)
            assert refused.status == 429 and "being checked" in await refused.text()
    finally:
        release.set()
    assert {r.status for r in await asyncio.gather(*held)} == {401}
    assert all(b.done() for b in blockers)


async def test_an_ipv6_client_is_one_client_whichever_address_of_its_64_it_uses(
    aiohttp_client: Any, make_app: Any
) -> None:
    """One host has a whole IPv6 /64 to itself (any VPS, any home line): counted per address,
    it logged in, pasted junk tokens and sent junk admin calls from a new address each time,
    never limited. Its budgets and lockout are its /64's; an IPv4-mapped address is its IPv4."""
    client = await aiohttp_client(make_app(trusted_proxies=("127.0.0.0/8",)))
    token = await csrf(client, "/admin/login")

    async def login(address: str) -> int:
        email = f"x{address.replace(':', '.')}@made.up"  # its own lockout target each
        data = {"csrf": token, "tenant": "acme", "email": email, "password": "guess"}
        headers = {"X-Forwarded-For": address}
        posted = client.post("/admin/login", data=data, headers=headers, allow_redirects=False)
        return (await posted).status

    host = [f"2001:db8:1:2:{n:x}:{n * 7:x}::{n + 1:x}" for n in range(LOGIN_BURST + 4)]
    logins = await asyncio.gather(*(login(address) for address in host))  # at once
    assert logins.count(401) in (LOGIN_BURST, LOGIN_BURST + 1), logins
    assert logins.count(429) == len(host) - logins.count(401), logins
    assert await login("2001:db8:1:3::1") == 401  # the next /64: another client
    pasted = [await _paste(client, "junk", f"2001:db8:9:9::{n + 1:x}") for n in range(7)]
    assert pasted == [401] * MAX_FAILURES + [429] * 2, pasted
    assert await _paste(client, "junk", "[2001:db8:9:a::1]:4711") == 401

    limited = await aiohttp_client(make_app(admin_rate_limit=2, trusted_proxies=("127.0.0.0/8",)))

    async def api(address: str) -> int:
        headers = {"Authorization": "Bearer junk", "X-Forwarded-For": address}
        return (await limited.get("/api/v1/triggers", headers=headers)).status

    calls = [await api(f"2001:db8:7:7::{n + 1:x}") for n in range(6)]
    assert calls[0] == 401 and calls[-1] == 429, calls
    hooks = []
    for n in range(6):  # made-up trigger ids and junk tokens: the same budget, another /64
        headers = {"Authorization": "Bearer x.y.z", "X-Forwarded-For": f"2001:db8:5:5::{n:x}"}
        hooks.append((await limited.post(f"/hooks/trg_{n:020d}", json={}, headers=headers)).status)
    assert hooks[0] == 401 and hooks[-1] == 429, hooks
    mapped = [await api(a) for a in ("198.51.100.4", "::ffff:198.51.100.4") * 3]
    assert mapped[0] == 401 and mapped[-1] == 429, mapped
    assert await api("198.51.100.5") == 401


async def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from gateway.web.client_address import client_of, trusted_networks

    proxies = trusted_networks(("10.0.0.0/8", "2001:db8::/32"))

    def of(peer: str, header: str = "x-forwarded-for", **headers: str) -> str:
        named = CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}))
        return client_of(peer, named, proxies, header)

    assert of("192.0.2.1", X_Forwarded_For="198.51.100.7") == "192.0.2.1"
    assert of("10.0.0.5") == "10.0.0.5"
    assert of("10.0.0.5", X_Forwarded_For="1.2.3.4, 198.51.100.7, 10.0.0.9") == "198.51.100.7"
    assert of("10.0.0.5", X_Forwarded_For="10.0.0.7") == "10.0.0.7"
    assert of("::ffff:10.0.0.5", X_Forwarded_For="198.51.100.7") == "198.51.100.7"
    assert (
        of("2001:db8::1", "forwarded", Forwarded='for="[2001:db8:cafe::17]:4711"')
        == "2001:db8:cafe::17"
    )
    # One header, the one the proxies write: a client's own copy of the other is never read.
    both = {"Forwarded": "for=1.2.3.4, for=192.0.2.60:80;proto=https", "X_Forwarded_For": "5.6.7.8"}
    assert of("10.1.1.1", "forwarded", **both) == "192.0.2.60"
    assert of("10.1.1.1", **both) == "5.6.7.8"
    assert of("10.1.1.1", "forwarded", X_Forwarded_For="5.6.7.8") == "10.1.1.1"
    assert trusted_networks(()) == ()


async def test_a_forged_csrf_token_is_refused_and_nothing_changes(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    body = {"csrf": "forged", "name": "evil", "entity_type": "vehicle", "methods": "POST"}
    response = await client.post("/admin/triggers", data=body)
    assert response.status == 403
    assert "não veio desta página" in await response.text()
    assert await services.triggers.list("acme", after=None, limit=10) == []


async def test_a_cookie_csrf_token_or_author_mark_we_never_wrote_is_refused_not_a_500(
    client: Client, services: Services
) -> None:
    """hmac.compare_digest raises on a non-ASCII string: a session cookie `abc.é` (one a
    sibling subdomain may set) was a 500 on every page until the browser dropped it."""
    await make_user(services)
    for cookie in ("abc.é", "é.é"):
        page = await client.get("/admin/", cookies={SESSION_COOKIE: cookie}, allow_redirects=False)
        assert page.status == 303 and page.headers["Location"].startswith("/admin/login")
    # Bytes that are no UTF-8 (surrogates once read), in the session or pre-session cookie.
    for name in (SESSION_COOKIE, PRE_SESSION_COOKIE):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        cookie = name.encode() + b"=abc.\xff"
        writer.write(b"GET /admin/login HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + b"\r\n")
        writer.write(b"Connection: close\r\n\r\n")
        status_line = await reader.readline()
        writer.close()
        await writer.wait_closed()
        assert status_line.split()[1] == b"200", (name, status_line)
    await csrf(client, "/admin/login")  # the pre-session cookie
    login = {"csrf": "é", "tenant": "acme", "email": "ana@acme.com.br", "password": PASSWORD}
    assert (await client.post("/admin/login", data=login)).status == 403
    await log_in(client)
    body = {"csrf": "é", "email": "bia@acme.com.br", "role": "viewer", "password": PASSWORD}
    assert (await client.post("/admin/users", data=body)).status == 403
    foreign = {**body, "csrf": "wrong", "author": "é"}
    same_origin = {"Sec-Fetch-Site": "same-origin"}
    assert (await client.post("/admin/users", data=foreign, headers=same_origin)).status == 403
    assert [u["email"] for u in await services.accounts.users("acme")] == ["ana@acme.com.br"]


async def test_a_login_form_without_its_cookie_is_refused(
    client: Client, services: Services
) -> None:
    await make_user(services)
    token = await csrf(client, "/admin/login")
    client.session.cookie_jar.clear()
    response = await client.post(
        "/admin/login",
        data={"csrf": token, "tenant": "acme", "email": "ana@acme.com.br", "password": PASSWORD},
        allow_redirects=False,
    )
    assert response.status == 403


async def test_a_viewer_sees_but_every_change_is_refused(
    client: Client, services: Services
) -> None:
    await make_user(services, email="vera@acme.com.br", role="viewer")
    trigger = await _trigger(client)
    await log_in(client, email="vera@acme.com.br")
    page = await (await client.get(f"/admin/triggers/{trigger['id']}")).text()
    assert "gps" in page and "/revoke" not in page  # no buttons for a viewer
    token = await csrf(client)
    response = await client.post(f"/admin/triggers/{trigger['id']}/revoke", data={"csrf": token})
    assert response.status == 403
    assert "papel é de leitor" in await response.text()
    assert (await services.triggers.get("acme", trigger["id"]))["credentials"] != []


async def test_an_expired_session_sends_the_visitor_to_log_in_and_changes_nothing(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    token = await csrf(client)
    trigger = await _trigger(client)
    await services.store.db["ui_sessions"].update_many(
        {}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    response = await client.post(
        f"/admin/triggers/{trigger['id']}/revoke", data={"csrf": token}, allow_redirects=False
    )
    assert response.status == 303
    assert response.headers["Location"].endswith("&expired=1")
    assert (await services.triggers.get("acme", trigger["id"]))["credentials"] != []
    page = await (await client.get(response.headers["Location"])).text()
    assert "Sua sessão terminou" in page


async def test_logout_ends_the_session_for_every_copy_of_the_cookie(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await log_in(client)
    copied = client.session.cookie_jar.filter_cookies(client.make_url("/admin/"))
    stolen = copied["rabbot_session"].value
    response = await client.post("/admin/logout", data={"csrf": await csrf(client)})
    assert response.status == 200 and "Você saiu" in await response.text()
    replayed = await client.get(
        "/admin/", headers={"Cookie": f"rabbot_session={stolen}"}, allow_redirects=False
    )
    assert replayed.status == 303 and "expired=1" in replayed.headers["Location"]


async def test_logging_out_in_a_second_tab_after_the_first_did_says_logged_out(
    client: Client, services: Services
) -> None:
    """Two tabs show a page; the first logs out, then the second's *Sair* is pressed: the
    logout is done all the same (the login page saying so, no `next`), never a login leading
    back to the logout, a POST-only route (a 405 once logged in)."""
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/triggers")).text()
    tab_a, tab_b = form_fields(page, "/admin/logout"), form_fields(page, "/admin/logout")
    first = await client.post("/admin/logout", data=tab_a, allow_redirects=False)
    assert first.status == 303
    second = await client.post(
        "/admin/logout",
        data=tab_b,
        headers={"Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    assert second.status == 303 and second.headers["Location"] == "/admin/login"
    login = await client.get(second.headers["Location"])
    assert "Você saiu" in await login.text() and "Sua sessão terminou" not in await login.text()
    assert (await log_in(client)).headers["Location"] == "/admin/"


async def test_a_next_target_naming_a_post_only_route_leads_to_the_dashboard(
    client: Client, services: Services
) -> None:
    """`next` leads to a page: a route only posted to (a logout, a delete) answers a GET with
    a 405, so after a login, or a language switch, it leads to the dashboard instead."""
    trigger = await _trigger(client)
    await make_user(services)
    for target in ("/admin/logout", f"/admin/triggers/{trigger['id']}/delete"):
        login = await (await client.get(f"/admin/login?next={quote(target)}")).text()
        assert ("next", target) in form_fields(login, "/admin/login")
        signed_in = await log_in_from(client, login)
        assert signed_in.headers["Location"] == "/admin/", target
        for path in (f"/admin/login?next={quote(target)}", f"/admin/lang/en?next={quote(target)}"):
            landed = await client.get(path, allow_redirects=False)
            assert landed.headers["Location"] == "/admin/", path
        await client.post("/admin/logout", data={"csrf": await csrf(client)})
    # A page still is one, its query kept.
    switched = await client.get(
        f"/admin/lang/en?next={quote('/admin/triggers?limit=5')}", allow_redirects=False
    )
    assert switched.headers["Location"] == "/admin/triggers?limit=5"


async def test_logging_in_over_a_live_session_ends_the_session_it_replaces(
    client: Client, services: Services
) -> None:
    """Another account logging in at a shared browser (a password or a pasted token): the
    admin's session is ended as by a logout, not left live for 8 h to a copy of its cookie
    (its owner's browser no longer holds it, and its logout button ends the new one)."""
    await make_user(services)
    await make_user(services, email="bia@acme.com.br", role="viewer")
    replaced_sessions = []
    for login in ("password", "token"):
        signed_in = await log_in(client)
        assert signed_in.status == 303
        replaced_sessions.append(signed_in.cookies[SESSION_COOKIE].value)
        token = await csrf(client, "/admin/users")  # the live session's page
        if login == "password":
            data = {"csrf": token, "tenant": "acme", "email": "bia@acme.com.br"}
            again = await client.post("/admin/login", data={**data, "password": PASSWORD})
        else:
            data = {"csrf": token, "token": admin_token("acme", "viewer")}
            again = await client.post("/admin/login/token", data=data)
        assert again.status == 200 and "ana@acme.com.br" not in await again.text()
    client.session.cookie_jar.clear()
    for old in replaced_sessions:
        page = await client.get("/admin/users", cookies={SESSION_COOKIE: old})
        assert page.url.path == "/admin/login", page.url


async def test_a_strangers_ids_are_not_found_and_nothing_of_theirs_changes(
    client: Client, services: Services
) -> None:
    theirs = await _trigger(client, tenant="globex", name="their gps")
    await make_user(services)
    await log_in(client)
    page = await client.get(f"/admin/triggers/{theirs['id']}")
    assert page.status == 404 and "their gps" not in await page.text()
    token = await csrf(client)
    for action in ("revoke", "delete", "rotate"):
        response = await client.post(
            f"/admin/triggers/{theirs['id']}/{action}", data={"csrf": token}
        )
        assert response.status == 404
    kept = await services.triggers.get("globex", theirs["id"])
    assert kept["credentials"] != [] and kept["status"] == "active"


async def test_every_ui_response_carries_the_security_headers(client: Client) -> None:
    for path in ("/admin/login", "/admin/static/ui.css", "/admin/nowhere"):
        response = await client.get(path, allow_redirects=False)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"


async def test_the_language_follows_the_browser_then_the_switch(client: Client) -> None:
    english = await client.get("/admin/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in await english.text()
    portuguese = await client.get("/admin/login", headers={"Accept-Language": "fr, de;q=0.5"})
    assert '<html lang="pt-BR">' in await portuguese.text()
    switched = await client.get(
        "/admin/lang/en?next=/admin/login", headers={"Accept-Language": "pt-BR"}
    )
    assert '<html lang="en">' in await switched.text()


async def test_the_language_switch_never_sends_the_visitor_to_another_site(
    client: Client,
) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/admin\\@evil.example"):
        response = await client.get(f"/admin/lang/en?next={target}", allow_redirects=False)
        assert response.headers["Location"] == "/admin/"


def _language_targets(page: str) -> list[str]:
    """Where the page's Português / English links lead back to."""
    links = re.findall(r'<a href="/admin/lang/[^"?]+\?next=([^"]*)" hreflang', page)
    assert len(links) == 2, page[:3000]
    return [unquote(html.unescape(link)) for link in links]


async def test_the_language_links_of_a_page_answering_a_form_lead_to_the_page_it_was_on(
    client: Client, services: Services
) -> None:
    """A preview's answer is at `/admin/mappings/preview`, whose GET reads a mapping named
    `preview` (a 404); most POSTs' URLs have no GET at all (405). The links lead back to the
    form's page, also from a form sent again from the answer."""
    await make_user(services)
    await log_in(client)
    page = await (await client.get("/admin/mappings?limit=5")).text()
    fields = replaced(form_fields(page, "/admin/mappings"), source="name: x\ndirection: inbound\n")
    answer = await (await client.post("/admin/mappings/preview", data=fields)).text()
    assert _language_targets(answer) == ["/admin/mappings?limit=5"] * 2
    again = form_fields(answer, "/admin/mappings")
    answer = await (await client.post("/admin/mappings/preview", data=again)).text()
    assert _language_targets(answer) == ["/admin/mappings?limit=5"] * 2
    switched = await client.get(f"/admin/lang/en?next={quote('/admin/mappings?limit=5')}")
    assert switched.status == 200 and switched.url.path_qs == "/admin/mappings?limit=5"
    assert '<html lang="en">' in await switched.text()
    # A form naming no page (a script's): its Referer's page of this UI, else the dashboard.
    bare = [(k, v) for k, v in fields if k != "back"]
    referer = {"Referer": str(client.make_url("/admin/mappings?limit=7"))}
    answer = await (await client.post("/admin/mappings/preview", data=bare, headers=referer)).text()
    assert _language_targets(answer) == ["/admin/mappings?limit=7"] * 2
    answer = await (await client.post("/admin/mappings/preview", data=bare)).text()
    assert _language_targets(answer) == ["/admin/"] * 2


async def _signed_in(client: Client) -> bool:
    response = await client.get("/admin/", allow_redirects=False)
    return response.status == 200


async def test_a_new_role_ends_the_users_sessions_and_the_next_login_has_it(
    client: Client, services: Services
) -> None:
    await make_user(services)
    assert (await log_in(client)).status == 303 and await _signed_in(client)
    ended = await services.accounts.change_user("acme", "Ana@acme.com.br", role="viewer")
    assert ended == 1 and not await _signed_in(client)
    assert (await log_in(client)).status == 303
    assert "leitor" in await (await client.get("/admin/")).text()


async def test_a_new_password_ends_the_users_sessions_and_only_it_logs_in(
    client: Client, services: Services
) -> None:
    await make_user(services)
    assert (await log_in(client)).status == 303
    await services.accounts.change_user("acme", "ana@acme.com.br", password="a new passphrase")
    assert not await _signed_in(client)
    assert (await log_in(client)).status == 401
    assert (await log_in(client, password="a new passphrase")).status == 303
    assert await _signed_in(client)


async def test_a_removed_user_is_signed_out_at_once_and_cannot_log_in(
    client: Client, services: Services
) -> None:
    await make_user(services)
    await make_user(services, email="vera@acme.com.br")
    assert (await log_in(client)).status == 303
    assert await services.accounts.delete_user("acme", "ana@acme.com.br") == 1
    assert not await _signed_in(client)
    assert (await log_in(client)).status == 401
    assert [u["email"] for u in await services.accounts.users("acme")] == ["vera@acme.com.br"]


async def test_a_session_opened_before_a_users_change_no_longer_stands(
    client: Client, services: Services
) -> None:
    """The check is made on each use, not only by ending the sessions stored at the change:
    a login in flight while the user changed opens its session after that clean-up."""
    await make_user(services)
    assert (await log_in(client)).status == 303
    user = await services.store.ui.users.by_email("acme", "ana@acme.com.br")
    assert user is not None
    await services.store.ui.users.replace_fields(user["_id"], {"role": "viewer"})
    assert not await _signed_in(client)


async def test_changing_an_unknown_user_or_to_a_bad_role_is_refused(services: Services) -> None:
    with pytest.raises(NotFound):
        await services.accounts.delete_user("acme", "nobody@acme.com.br")
    await make_user(services)
    with pytest.raises(InvalidPayload) as refused:
        await services.accounts.change_user("acme", "ana@acme.com.br", role="root", password="x")
    assert [p.pointer for p in refused.value.problems] == ["/role", "/password"]


async def _ui_user(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """`gateway ui-user ARGS --tenant acme` run in this process (`run_command`), `stdin` its
    input. Real `ui-user` processes, a password piped to one: tests/test_embedded_database.py
    (`test_cleanup_and_ui_user_beside_a_running_gateway_use_its_database_and_leave_it_running`)."""
    return await run_command(env, "ui-user", *args, "--tenant", "acme", stdin=stdin + "\n")


async def test_the_cli_creates_a_user_who_can_then_log_in(
    client: Client, settings: Settings, mongodb_uri: str
) -> None:
    env = cli_env(settings, mongodb_uri)
    create = ("create", "--email", "Ana@Acme.com.br", "--role", "viewer")
    created = await _ui_user(env, *create, stdin=PASSWORD)
    assert created.returncode == 0, created.stderr
    assert "created viewer ana@acme.com.br" in created.stderr
    short = ("create", "--email", "bob@acme.com.br")
    refused = await _ui_user(env, *short, stdin="short")
    assert refused.returncode == 1 and "/password" in refused.stderr
    assert (await log_in(client)).status == 303
    assert "leitor" in await (await client.get("/admin/")).text()


async def test_the_cli_lists_changes_and_removes_a_user_ending_their_sessions(
    client: Client, services: Services, settings: Settings, mongodb_uri: str
) -> None:
    env = cli_env(settings, mongodb_uri)
    await make_user(services, role="viewer")
    assert (await log_in(client)).status == 303

    async def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return await _ui_user(env, *args, stdin=stdin)

    promoted = await cli("set-role", "--email", "ana@acme.com.br", "--role", "admin")
    assert promoted.returncode == 0, promoted.stderr
    assert "role admin of ana@acme.com.br of tenant acme set; 1 session(s) ended" in promoted.stderr
    assert not await _signed_in(client)
    listed = await cli("list")
    assert listed.returncode == 0 and listed.stdout.startswith("ana@acme.com.br\tadmin\tcreated ")
    changed = await cli("set-password", "--email", "ana@acme.com.br", stdin="another passphrase")
    assert changed.returncode == 0, changed.stderr
    assert (await log_in(client)).status == 401
    assert (await log_in(client, password="another passphrase")).status == 303
    deleted = await cli("delete", "--email", "ana@acme.com.br")
    assert deleted.returncode == 0 and "1 session(s) ended" in deleted.stderr
    assert not await _signed_in(client)
    unknown = await cli("delete", "--email", "ana@acme.com.br")
    assert unknown.returncode == 1 and "no user 'ana@acme.com.br'" in unknown.stderr


async def test_setting_the_role_a_user_already_has_keeps_their_sessions(
    client: Client, services: Services
) -> None:
    await make_user(services, role="viewer")
    assert (await log_in(client)).status == 303
    assert await services.accounts.change_user("acme", "ana@acme.com.br", role="viewer") == 0
    assert await _signed_in(client)


def _ui_posts(client: Client) -> list[tuple[str, str | None]]:
    """Every POST of the UI's URL table, its placeholders filled: (path, route name)."""
    ui = next(
        r._app for r in client.app.router.resources() if isinstance(r, web.PrefixedSubAppResource)
    )
    posts = []
    for route in ui.router.routes():
        if route.method == "POST" and route.resource is not None:
            path = re.sub(r"\{(type)\}", "vehicle", route.resource.canonical)
            posts.append((re.sub(r"\{[^}]+\}", "x", path), route.name))
    assert len(posts) >= 50
    return posts


async def test_every_ui_form_needs_a_session_its_csrf_token_and_for_changes_the_admin_role(
    client: Client, services: Services
) -> None:
    """Walked from the UI's URL table, so a new form cannot skip it: without a session every
    POST but the login's sends the visitor to log in; without its CSRF token every POST is a
    403; a viewer's is a 403 unless it writes nothing (the dry runs and the preview)."""
    from gateway.ui.middleware import ANY_ROLE_POSTS, PUBLIC

    posts = [(path, name) for path, name in _ui_posts(client) if name != "logout"]
    for path, name in posts:
        if name in PUBLIC:
            continue
        response = await client.post(path, data={"csrf": "x"}, allow_redirects=False)
        assert response.status == 303, (path, response.status)
        assert response.headers["Location"].startswith("/admin/login"), path
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    token = await csrf(client)
    for path, name in posts:
        if name in PUBLIC:
            continue
        forged = await client.post(path, data={"name": "x"}, allow_redirects=False)
        assert forged.status == 403, (path, forged.status)
        assert "não veio desta página" in await forged.text(), path
        response = await client.post(path, data={"csrf": token}, allow_redirects=False)
        if name in ANY_ROLE_POSTS:
            assert response.status != 403, path
        else:
            assert response.status == 403, (path, response.status)
            assert "papel é de leitor" in await response.text(), path
    assert await services.triggers.list("acme", after=None, limit=10) == []


async def test_a_form_body_that_cannot_be_read_is_a_400_page_and_changes_nothing(
    client: Client, services: Services
) -> None:
    """A multipart body without its boundary, or cut short, made aiohttp's form reader raise
    ValueError: a 500 on every UI form (the login's included); it is a 400 page now."""
    bodies = (
        (b"--x\r\n", "multipart/form-data"),
        (
            b'--x\r\nContent-Disposition: form-data; name="csrf"\r\n\r\nabc',  # cut short
            "multipart/form-data; boundary=x",
        ),
    )
    for body, content_type in bodies:
        response = await client.post(
            "/admin/login", data=body, headers={"Content-Type": content_type}
        )
        assert response.status == 400, await response.text()
    await make_user(services)
    await log_in(client)
    for path in ("/admin/triggers", "/admin/mappings", "/admin/geofences", "/admin/users"):
        for body, content_type in bodies:
            response = await client.post(path, data=body, headers={"Content-Type": content_type})
            assert response.status == 400, (path, await response.text())
            assert "text/html" in response.headers["Content-Type"]
    assert await services.triggers.list("acme", after=None, limit=10) == []


@pytest.mark.parametrize(
    "rest",
    [
        b'--x\r\nContent-Disposition: form-data; filename="b.yaml"\r\n\r\nb\r\n--x--\r\n',
        b"",  # the body ends inside the file
    ],
    ids=["a part without a name", "cut short"],
)
async def test_an_unreadable_form_after_a_big_file_leaves_no_temporary_file_open(
    aiohttp_client: Any, make_app: Any, rest: bytes
) -> None:
    """aiohttp spools a file part over 1 MiB to a temporary file; a form it then failed to
    read (a part without a name, a body cut short, one too big) dropped the files of the
    parts read so far without closing them: a ResourceWarning ("unclosed file") whenever the
    garbage collector came by, failing whichever test it was in."""
    client = await aiohttp_client(make_app(max_body_bytes=4 * 1024 * 1024))
    big = b"x" * (1024 * 1024 + 512 * 1024)
    body = (
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.yaml"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + big + (b"\r\n" if rest else b"")
    ) + rest
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = await client.post(
            "/admin/login",
            data=io.BytesIO(body),
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
        assert response.status == 400, await response.text()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_a_next_target_with_control_characters_is_answered_with_a_uri(
    client: Client, services: Services
) -> None:
    """`?next=/admin/%0d%0aSet-Cookie:...` reached the Location header as a line break, which
    aiohttp refuses to write: the connection closed with no answer at all. The location is
    percent-encoded now; no header is injected, and the visitor stays on this site."""
    target = "/admin/\r\nSet-Cookie: evil=1\x00"
    switched = await client.get("/admin/lang/en", params={"next": target}, allow_redirects=False)
    assert switched.status == 303
    assert switched.headers["Location"] == "/admin/%0D%0ASet-Cookie:%20evil=1%00"
    assert "evil" not in switched.cookies
    await make_user(services)
    token = await csrf(client, "/admin/login")
    response = await client.post(
        "/admin/login",
        data={
            "csrf": token,
            "tenant": "acme",
            "email": "ana@acme.com.br",
            "password": PASSWORD,
            "next": target,
        },
        allow_redirects=False,
    )
    assert response.status == 303
    # (a form's typed line break is read as LF, as a textarea's CRLF: forms.read_values)
    location = response.headers["Location"]
    assert location.startswith("/admin/%0ASet-Cookie:%20evil=1") and "\n" not in location
    again = await client.get("/admin/login", params={"next": target}, allow_redirects=False)
    assert again.status == 303 and "\n" not in again.headers["Location"]


async def test_a_form_over_the_body_limit_gets_the_uis_page_naming_the_limit_and_the_way_back(
    client: Client, services: Services
) -> None:
    """A form past GATEWAY_MAX_BODY_BYTES (256 KiB in the tests): aiohttp stops reading it, and
    the visitor gets the UI's page in their language (not aiohttp's English reason), naming
    the limit, with a link back to the page the form was on; nothing is saved."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    origin = f"http://{client.server.host}:{client.server.port}"
    pasted = "x" * (300 * 1024)
    response = await client.post(
        "/admin/mappings",
        data={"csrf": token, "source": pasted},
        headers={"Referer": f"{origin}/admin/mappings", "Accept-Language": "pt-BR"},
    )
    page = await response.text()
    assert response.status == 413
    assert response.content_type == "text/html"
    assert "limite de 256 KiB" in page and "Entity Too Large" not in page
    assert '<a href="/admin/mappings" data-history-back>Voltar ao formulário</a>' in page
    await client.get("/admin/lang/en")
    upload = io.BytesIO(
        b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.yaml"\r\n\r\n'
        + b"y: 1\n" * (60 * 1024)
        + b"\r\n--x--\r\n"
    )
    response = await client.post(
        "/admin/mappings",
        data=upload,
        headers={
            "Content-Type": "multipart/form-data; boundary=x",
            "Referer": "https://elsewhere.example/admin/mappings",
        },
    )
    page = await response.text()
    assert response.status == 413
    assert "over the limit of 256 KiB" in page
    assert (
        '<a href="/admin/" data-history-back>Back to the form</a>' in page
    )  # not another site's page
    assert (await (await client.get("/api/v1/mappings", headers=auth())).json())["items"] == []


async def test_a_multipart_form_with_an_endless_header_line_is_a_400_not_a_500(
    client: Client,
) -> None:
    """A part whose header line runs past aiohttp's limit (8 KiB): a malformed form."""
    body = b"--x\r\n" + b"y" * (16 * 1024) + b"\r\n\r\n--x--\r\n"
    response = await client.post(
        "/admin/login",
        data=io.BytesIO(body),
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert response.status == 400, await response.text()


async def test_a_form_posted_after_the_session_ended_gets_the_same_413_and_400_pages(
    client: Client,
) -> None:
    """The admin's session expired while they pasted a big mapping (the browser says the post
    is same-origin): over the limit, the UI's 413 page in their language with the way back;
    a multipart form that cannot be read (a part header line past aiohttp's limit, a part in
    an unknown transfer encoding) a 400, signed in or out, on the login form too, not a 500."""
    origin = f"http://{client.server.host}:{client.server.port}"
    same = {"Sec-Fetch-Site": "same-origin", "Accept-Language": "pt-BR"}
    response = await client.post(
        "/admin/mappings",
        data={"csrf": "x", "source": "x" * (300 * 1024)},
        headers={**same, "Referer": f"{origin}/admin/mappings"},
        allow_redirects=False,
    )
    page = await response.text()
    assert response.status == 413
    assert "limite de 256 KiB" in page and "Entity Too Large" not in page
    assert '<a href="/admin/mappings" data-history-back>Voltar ao formulário</a>' in page
    overlong = b"--x\r\n" + b"y" * (16 * 1024) + b"\r\n\r\n--x--\r\n"
    unknown = (
        b'--x\r\nContent-Disposition: form-data; name="csrf"\r\n'
        b"Content-Transfer-Encoding: x-nonsense\r\n\r\nabc\r\n--x--\r\n"
    )
    for path in ("/admin/mappings", "/admin/login"):
        for body in (overlong, unknown):
            response = await client.post(
                path,
                data=io.BytesIO(body),
                headers={**same, "Content-Type": "multipart/form-data; boundary=x"},
                allow_redirects=False,
            )
            assert response.status == 400, (path, body[:60], await response.text())


async def test_the_413_pages_way_back_is_the_form_behind_a_tls_proxy(
    client: Client, services: Services
) -> None:
    """Behind the TLS proxy an https deployment has, the page was on https://host/ and the
    gateway sees http://host/: the Referer is this site's all the same (its host), and the
    way back leads to the form, not the dashboard."""
    await make_user(services)
    await log_in(client)
    token = await csrf(client, "/admin/mappings")
    host = "gw.example.com"
    response = await client.post(
        "/admin/mappings",
        data={"csrf": token, "source": "x" * (300 * 1024)},
        headers={
            "Host": host,
            "Referer": f"https://{host}/admin/mappings",
            "Accept-Language": "pt-BR",
        },
    )
    page = await response.text()
    assert response.status == 413
    assert '<a href="/admin/mappings" data-history-back>Voltar ao formulário</a>' in page


async def test_a_form_of_a_session_replaced_meanwhile_keeps_what_was_typed_for_save_it(
    client: Client, services: Services
) -> None:
    """The form's session ended and the admin logged in again in another tab: the browser
    sends the new session's cookie with the old session's token. Nothing is changed; from a
    page of ours (the browser's word) the typed text is shown for **Save it**; another site's
    post with the same cookie gets the bare 403."""
    await make_user(services)
    trigger = await _trigger(client)
    await log_in(client)
    path = f"/admin/triggers/{trigger['id']}/edit"
    page = await (await client.get(path)).text()  # tab 1: session A
    typed = replaced(form_fields(page, path), name="gps-frota <b>2</b>")
    await client.post("/admin/logout", data={"csrf": await csrf(client)})  # tab 2
    assert (await log_in(client)).status == 303  # session B
    forged = await client.post(path, data=typed, headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status == 403 and "gps-frota" not in await forged.text()
    kept = await client.post(path, data=typed, headers={"Sec-Fetch-Site": "same-origin"})
    shown = await kept.text()
    assert kept.status == 403, shown
    assert "sessão que terminou" in shown and "Nada foi alterado" in shown
    assert "gps-frota &lt;b&gt;2&lt;/b&gt;" in shown
    assert (await services.triggers.get("acme", trigger["id"]))["name"] == "gps"
    saved = await client.post(path, data=form_fields(shown, path), allow_redirects=False)
    assert saved.status == 303, await saved.text()
    assert (await services.triggers.get("acme", trigger["id"]))["name"] == "gps-frota <b>2</b>"


async def test_a_form_typed_in_another_tenants_session_is_neither_shown_nor_saved(
    client: Client, services: Services
) -> None:
    """acme's admin types a fence; in another tab, the browser logs out and in as another
    company's admin (a consultant serving two fleets, a shared PC). acme's typed form,
    posted then, is not offered to beta's admin, nor after a login either."""
    await make_user(services)  # acme
    await make_user(services, tenant="beta", email="bob@beta.com.br")
    await log_in(client)
    page = await (await client.get("/admin/geofences/new")).text()
    typed = dict(form_fields(page, "/admin/geofences"))
    typed |= {"name": "Pátio secreto", "kind": "restricted", "circle.lat": "-23,5"}
    typed |= {"circle.lon": "-46,6", "circle.radius_m": "150"}
    await client.post("/admin/logout", data={"csrf": await csrf(client)})
    await log_in(client, tenant="beta", email="bob@beta.com.br")
    refused = await client.post(
        "/admin/geofences", data=typed, headers={"Sec-Fetch-Site": "same-origin"}
    )
    shown = await refused.text()
    assert refused.status == 403 and "outra conta" in shown
    assert "Pátio secreto" not in shown and 'data-testid="resume"' not in shown
    # The same form posted once beta's session has ended: carried through beta's login, and
    # dropped there.
    await client.post("/admin/logout", data={"csrf": await csrf(client)})
    login = await client.post(
        "/admin/geofences", data=typed, headers={"Sec-Fetch-Site": "same-origin"}
    )
    fields = dict(form_fields(await login.text(), "/admin/login"))
    fields |= {"tenant": "beta", "email": "bob@beta.com.br", "password": PASSWORD}
    after = await client.post("/admin/login", data=fields)
    assert "Pátio secreto" not in await after.text()
    beta = await (await client.get("/api/v1/geofences", headers=auth("beta"))).json()
    assert beta["items"] == []


async def test_an_admin_token_pasted_in_a_second_login_tab_is_never_written_back(
    client: Client, services: Services
) -> None:
    await make_user(services)
    token = admin_token()
    tab_a = csrf_of(await (await client.get("/admin/login")).text())
    tab_b = csrf_of(await (await client.get("/admin/login")).text())
    login = {"csrf": tab_a, "tenant": "acme", "email": "ana@acme.com.br", "password": PASSWORD}
    done = await client.post("/admin/login", data=login, allow_redirects=False)
    assert done.status == 303
    second = await client.post(
        "/admin/login/token",
        data={"csrf": tab_b, "token": token},
        headers={"Sec-Fetch-Site": "same-origin"},
        allow_redirects=False,
    )
    page = await second.text()
    assert second.status == 403 and token not in page and token[:40] not in page
