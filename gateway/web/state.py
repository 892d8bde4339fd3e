"""The application's typed state: one `web.AppKey`, the process's services."""

from __future__ import annotations

from aiohttp import web

from gateway.services import Services

services_key = web.AppKey("services", Services)


def services_of(request: web.Request) -> Services:
    app = request.app
    if services_key in app:
        return app[services_key]
    # The admin UI is a sub-application, and reads the services of its parent.
    return request.config_dict[services_key]
