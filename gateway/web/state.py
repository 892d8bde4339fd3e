"""The application's typed state: one `web.AppKey`, the process's services."""

from __future__ import annotations

from aiohttp import web

from gateway.services import Services

services_key = web.AppKey("services", Services)


def services_of(request: web.Request) -> Services:
    try:  # one look-up on the hot path (`in` and `[]` are two Python calls of the app's)
        return request.app[services_key]
    except KeyError:  # the admin UI is a sub-application, and reads its parent's services
        return request.config_dict[services_key]
