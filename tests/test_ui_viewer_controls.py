"""A viewer reads every page and is offered nothing it may not do: no form that changes
something (create, edit, delete, replay, assign...), no link to a page made for changing,
and a change page asked for by its address answers that the role reads only. The crawl walks
every link of the menu over one of everything (the every-page crawl's data), over HTTP."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from aiohttp import web

from gateway.services import Services
from gateway.ui.middleware import ANY_ROLE_POSTS
from gateway.ui.navigation import NAV
from gateway.web.state import services_key
from tests.partner_double import Partner, partner
from tests.support import auth
from tests.test_ui_browser_every_page import NOT_CRAWLED, seed_odd_data
from tests.ui_support import Client, csrf, log_in, make_user

__all__ = ["partner"]  # the fixture

# The pages made for changing something: a viewer is sent no link to them.
CHANGE_PAGE = re.compile(r"/(new|edit)$")


class _Controls(HTMLParser):
    """A page's links, and the targets of its POST forms."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.posts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "form" and a.get("method", "get").lower() == "post":
            self.posts.append(a.get("action", ""))


def _ui_routes(client: Client, method: str) -> list[tuple[str, str | None]]:
    """The UI's paths for a method (a path's parameters written `x`) and their route names."""
    [admin] = [
        r._app for r in client.app.router.resources() if isinstance(r, web.PrefixedSubAppResource)
    ]
    routes = []
    for route in admin.router.routes():
        if route.method == method and route.resource is not None:
            info = route.resource.get_info()
            path = info.get("path") or info.get("formatter", "")
            routes.append((re.sub(r"\{[^}]+\}", "x", path), route.name))
    return routes


def _any_role_targets(client: Client) -> list[re.Pattern[str]]:
    """The POST paths a viewer may use (logging out, the dry runs, the previews)."""
    return [
        re.compile("^" + "/".join("[^/]+" if s == "x" else re.escape(s) for s in path.split("/")))
        for path, name in _ui_routes(client, "POST")
        if name in ANY_ROLE_POSTS
    ]


async def test_a_viewer_is_offered_no_change_on_any_page(client: Client, partner: Partner) -> None:
    await seed_odd_data(client, partner)
    services = client.app[services_key]
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    allowed = _any_role_targets(client)
    vehicles = await (await client.get("/api/v1/entities/vehicle", headers=auth())).json()
    queue = ["/admin/", *(f"/admin{item.path}" for item in NAV)]
    queue += [f"/admin/entities/vehicle/{v['id']}" for v in vehicles["items"]]
    seen: set[str] = set()
    offered: dict[str, list[str]] = {}
    while queue and len(seen) < 250:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = await client.get(path, allow_redirects=False)
        assert response.status == 200, (path, response.status)
        page = _Controls()
        page.feed(await response.text())
        changes = [a for a in page.posts if not any(p.fullmatch(a.split("?")[0]) for p in allowed)]
        changes += [
            f"link {h}" for h in page.links if CHANGE_PAGE.search(h.split("?")[0].split("#")[0])
        ]
        if changes:
            offered[path] = changes
        for href in page.links:
            target = href.split("#")[0]
            if target.startswith("/admin/") and not target.startswith(NOT_CRAWLED):
                if target not in seen and "cursor=" not in target:
                    queue.append(target)
    assert len(seen) > 50  # the crawl went through the seeded data
    assert offered == {}, f"changes offered to a viewer: {offered}"


async def test_a_change_page_asked_for_by_a_viewer_says_the_role_reads_only(
    client: Client, services: Services
) -> None:
    """Every page made for changing (its path ends in /new or /edit), from the URL table: a
    viewer who types its address gets the 403 page that says the role reads only, no form."""
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    pages = [path for path, _ in _ui_routes(client, "GET") if CHANGE_PAGE.search(path)]
    assert len(pages) >= 8
    for path in pages:
        response = await client.get(path)
        assert response.status == 403, (path, response.status)
        page = _Controls()
        page.feed(text := await response.text())
        assert "papel é de leitor" in text, path
        assert page.posts == ["/admin/logout"], path


async def test_every_change_a_viewer_posts_is_refused_whatever_it_targets(
    client: Client, services: Services
) -> None:
    """From the URL table: every POST but a viewer's own (logging in and out, the dry runs and
    previews), sent by a viewer with a valid CSRF token, is the 403 that says the role reads
    only (a subscription's edit and a template's replace among them)."""
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await log_in(client, email="vera@acme.com.br")
    token = await csrf(client)
    posts = [path for path, name in _ui_routes(client, "POST") if name not in ANY_ROLE_POSTS]
    assert {"/admin/subscriptions/x/edit", "/admin/templates/x/edit"} <= set(posts)
    for path in posts:
        response = await client.post(path, data={"csrf": token})
        assert response.status == 403, (path, response.status)
        assert "papel é de leitor" in await response.text(), path


async def test_a_viewer_logs_in_as_another_account_without_logging_out(
    client: Client, services: Services
) -> None:
    await make_user(services, email="vera@acme.com.br", role="viewer")
    await make_user(services)  # ana, an admin
    await log_in(client, email="vera@acme.com.br")
    response = await log_in(client)
    assert response.status == 303, await response.text()
    page = await (await client.get("/admin/triggers")).text()
    assert "/admin/triggers/new" in page  # an admin's page now
