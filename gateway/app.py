"""create_app(settings): the application's table of contents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.config import Settings
from gateway.services import open_services
from gateway.ui.i18n import Catalog
from gateway.ui.middleware import ui_guard
from gateway.ui.routes import add_ui_routes
from gateway.ui.state import catalog_key, templates_key
from gateway.ui.templating import FILTERS, OPTIONS
from gateway.web.middlewares import edge
from gateway.web.routes import add_routes
from gateway.web.state import services_key


def create_app(settings: Settings, *, mongodb_uri: str | None = None) -> web.Application:
    """`mongodb_uri` overrides the settings (tests point every app at their own database)."""
    # Bodies are decoded by the routes that read them (web/requests.py `read_body`): aiohttp's
    # own decompression took a gzip body cut short before its trailer for a whole one.
    app = web.Application(
        middlewares=[edge],
        client_max_size=settings.max_body_bytes,
        handler_args={"auto_decompress": False},
    )
    app.cleanup_ctx.append(_services(settings, mongodb_uri))
    app.on_shutdown.append(_stop_runners)
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.web", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    add_routes(app)
    app.add_subapp("/admin", _admin_ui())
    return app


def _admin_ui() -> web.Application:
    """The admin UI (`gateway/ui/`) under /admin: the same services, pages instead of JSON."""
    ui = web.Application(middlewares=[ui_guard])
    aiohttp_jinja2.setup(
        ui, app_key=templates_key, filters=FILTERS, default_helpers=False, **OPTIONS
    )
    ui[catalog_key] = Catalog.load()
    add_ui_routes(ui)
    return ui


async def _stop_runners(app: web.Application) -> None:
    """On SIGTERM, once no new connection is accepted: the background runners stop claiming
    and finish their work under way while the requests in flight are answered (not awaited
    here: aiohttp waits for those requests after this returns; the cleanup awaits both)."""
    if (services := app.get(services_key)) is not None:
        services.background.stop_runners()


def _services(
    settings: Settings, mongodb_uri: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """The process's services (see `gateway/services.py`), open while the app runs."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_services(settings, mongodb_uri=mongodb_uri) as services:
            app[services_key] = services
            yield

    return ctx
