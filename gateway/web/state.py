"""The application's typed state: one `web.AppKey`, the process's services."""

from __future__ import annotations

from aiohttp import web

from gateway.services import Services

services_key = web.AppKey("services", Services)


def services_of(request: web.Request) -> Services:
    return request.app[services_key]
