"""The dashboard: requests and deliveries over the last hours, what needs attention."""

from __future__ import annotations

from aiohttp import web

from gateway.dashboard import HourBucket
from gateway.delivery.deliveries import STATUSES
from gateway.ui.rendering import render
from gateway.ui.state import tenant_of
from gateway.web.state import services_of


def _requests(bucket: HourBucket) -> list[tuple[str, int]]:
    return [("bar-in", bucket.events), ("bar-rejected", bucket.rejected)]


def _deliveries(bucket: HourBucket) -> list[tuple[str, int]]:
    return [(f"bar-{status}", bucket.deliveries.get(status, 0)) for status in STATUSES]


async def dashboard_page(request: web.Request) -> web.Response:
    view = await services_of(request).dashboard.view(tenant_of(request))
    return render(
        request,
        "dashboard.html",
        {
            "view": view,
            "statuses": STATUSES,
            "requests_series": _requests,
            "deliveries_series": _deliveries,
        },
    )
