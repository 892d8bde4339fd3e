"""The tenant's admin UI users: the list (everyone), and for an admin a new user with a first
password, another role, and removal. A change of role and a removal end that user's sessions
(accounts.py); an admin cannot demote or remove the account they are signed in with, so that
a tenant is never left without the admin who is using it (another admin, or `gateway
ui-user`, can), nor be demoted while demoting another (two admins demoting each other at
once: one of them is refused)."""

from __future__ import annotations

from aiohttp import web

from gateway.auth.tokens import ADMIN_ROLES
from gateway.errors import GatewayError
from gateway.ui.forms import Form, read_values
from gateway.ui.rendering import redirect, render
from gateway.ui.state import form_of, session_of, tenant_of
from gateway.web.state import services_of

_FIELDS = ("email", "role", "password")


async def list_users(
    request: web.Request, form: Form | None = None, change: Form | None = None
) -> web.Response:
    users = await services_of(request).accounts.users(tenant_of(request))
    context = {
        "items": users,
        "roles": ADMIN_ROLES,
        "form": form or Form({"role": "viewer"}),
        "change": change or Form(),
    }
    failed = (form is not None and form.failed) or (change is not None and change.failed)
    return render(request, "users/list.html", context, status=422 if failed else 200)


async def create_user(request: web.Request) -> web.Response:
    values = read_values(form_of(request))
    try:
        await services_of(request).accounts.create_user(
            tenant_of(request),
            values.get("email", ""),
            values.get("role", ""),
            values.get("password", ""),
        )
    except GatewayError as exc:
        return await list_users(request, form=Form(values).refuse(exc, _FIELDS))
    return redirect("/admin/users", flash="users.created")


async def change_role(request: web.Request) -> web.Response:
    return await _change_other(request, "users.role_changed", role=True)


async def remove_user(request: web.Request) -> web.Response:
    return await _change_other(request, "users.removed", role=False)


async def _change_other(request: web.Request, flash: str, *, role: bool) -> web.Response:
    """Another user's new role (`role`) or removal; the list again with the refusal."""
    values = read_values(form_of(request))
    email = values.get("email", "")
    accounts, tenant = services_of(request).accounts, tenant_of(request)
    by = session_of(request).user
    try:
        if role:
            await accounts.change_user(tenant, email, role=values.get("role", ""), by=by)
        else:
            await accounts.delete_user(tenant, email, by=by)
    except GatewayError as exc:
        return await list_users(request, change=Form(values).refuse(exc, ()))
    return redirect("/admin/users", flash=flash)
