"""The fleet settings page: the tenant's quality gates for positions, the odometer's rules and
how long positions are kept (`PUT /api/v1/fleet/settings`, docs/fleet.md). A field left
empty takes its default, as a member omitted from the PUT does; an edit from a page loaded
before another change is a 409 (forms.stale_edit)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.errors import GatewayError
from gateway.fleet.settings import ODOMETER_LIMITS, QUALITY_LIMITS
from gateway.ui.forms import Form, editing, number_field, number_text, read_values, stale_edit
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_lang, form_of, tenant_of
from gateway.web.state import services_of

GROUPS: Final = {"quality": QUALITY_LIMITS, "odometer": ODOMETER_LIMITS}
PRECEDENCE: Final = "odometer.precedence"
FIELDS: Final = (
    *(f"{group}.{name}" for group, limits in GROUPS.items() for name in limits),
    PRECEDENCE,
    "retention_days",
)


def _values(doc: dict[str, Any], lang: str) -> dict[str, str]:
    """What the form shows of the settings (every member, defaults included)."""
    values = {
        f"{group}.{name}": number_text(doc[group].get(name), lang)
        for group, limits in GROUPS.items()
        for name in limits
    }
    values[PRECEDENCE] = ", ".join(doc["odometer"].get("precedence") or ())
    values["retention_days"] = number_text(doc["retention_days"], lang)
    return values


def _body(values: dict[str, Any], lang: str) -> dict[str, Any]:
    body: dict[str, Any] = {group: {} for group in GROUPS}
    for group, limits in GROUPS.items():
        for name, (_low, _high, integer) in limits.items():
            number = number_field(values, f"{group}.{name}", lang=lang, integer=integer)
            if number is not None:
                body[group][name] = number
    if raw := values.get(PRECEDENCE):
        body["odometer"]["precedence"] = [p.strip() for p in raw.split(",") if p.strip()]
    if (days := number_field(values, "retention_days", lang=lang)) is not None:
        body["retention_days"] = days
    return body


async def settings_page(request: web.Request, form: Form | None = None) -> web.Response:
    settings = await services_of(request).fleet_settings.get(tenant_of(request))
    context = {
        "form": form or editing(_values(settings.to_doc(), form_lang(request))),
        "groups": {group: tuple(limits.items()) for group, limits in GROUPS.items()},
    }
    status = 200 if form is None else 409 if form.stale is not None else 422
    return render(request, "fleet/settings.html", context, status=status)


async def save_settings(request: web.Request) -> web.Response:
    service = services_of(request).fleet_settings
    current = await service.get(tenant_of(request))
    lang = form_lang(request)
    shown = _values(current.to_doc(), lang)
    values = read_values(form_of(request), shown=shown)
    if (stale := stale_edit(values, shown)) is not None:
        return await settings_page(request, stale)
    try:
        await service.put(tenant_of(request), _body(values, lang))
    except GatewayError as exc:
        return await settings_page(request, Form(values).refuse(exc, FIELDS))
    return redirect("/admin/fleet-settings", flash="fleet_settings.saved")
