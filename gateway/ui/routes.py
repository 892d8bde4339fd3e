"""The UI's URL table (under /admin). Pages GET; forms POST and redirect (or, when a secret is
shown once, answer with the page). Route names matter: `middleware.PUBLIC` and
`ANY_ROLE_POSTS` list the few that need no session or no admin role; every other POST is an
admin's."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.ui import (
    access,
    dashboard,
    deliveries,
    entities,
    mappings,
    notify,
    partners,
    triggers,
)

STATIC = Path(__file__).parent / "static"


def add_ui_routes(ui: web.Application) -> None:
    ui.router.add_routes(
        [
            web.get("/login", access.login_page, name="login"),
            web.post("/login", access.login_password, name="login_password"),
            web.post("/login/token", access.login_token, name="login_token"),
            web.post("/logout", access.logout, name="logout"),
            web.get("/lang/{code}", access.language, name="language"),
            web.get("/", dashboard.dashboard_page, name="dashboard"),
            web.get("/triggers", triggers.list_triggers),
            web.get("/triggers/new", triggers.new_trigger),
            web.post("/triggers", triggers.create_trigger),
            web.get("/triggers/{id}", triggers.trigger_page),
            web.post("/triggers/{id}/rotate", triggers.rotate_trigger),
            web.post("/triggers/{id}/revoke", triggers.revoke_trigger),
            web.post("/triggers/{id}/status", triggers.set_trigger_status),
            web.post("/triggers/{id}/delete", triggers.delete_trigger),
            web.get("/rejected", triggers.list_rejected),
            web.post("/rejected/replay", triggers.replay_all_rejected),
            web.get("/rejected/{id}", triggers.rejected_page),
            web.post("/rejected/{id}/replay", triggers.replay_rejected),
            web.get("/mappings", mappings.list_mappings),
            web.post("/mappings", mappings.upload_mapping),
            web.get("/mappings/{name}", mappings.mapping_page),
            web.get("/mappings/{name}/versions/{version}", mappings.version_page),
            web.get("/mappings/{name}/diff", mappings.diff_page),
            web.post("/mappings/{name}/activate", mappings.activate_mapping),
            web.post("/mappings/{name}/rollback", mappings.rollback_mapping),
            web.post("/mappings/{name}/delete", mappings.delete_mapping),
            web.post("/mappings/{name}/test", mappings.dry_run_mapping, name="mapping_dry_run"),
            web.get("/deliveries", deliveries.list_deliveries),
            web.post("/deliveries/replay", deliveries.replay_deliveries),
            web.get("/deliveries/{id}", deliveries.delivery_page),
            web.post("/deliveries/{id}/replay", deliveries.replay_delivery),
            web.get("/partners", partners.list_partners),
            web.post("/partners", partners.create_partner),
            web.get("/partners/{id}", partners.partner_page),
            web.post("/partners/{id}/credentials", partners.replace_credentials),
            web.post("/partners/{id}/delete", partners.delete_partner),
            web.get("/actions", partners.list_actions),
            web.post("/actions", partners.create_action),
            web.get("/actions/{id}", partners.action_page),
            web.post("/actions/{id}/delete", partners.delete_action),
            web.get("/subscriptions", partners.list_subscriptions),
            web.post("/subscriptions", partners.create_subscription),
            web.get("/subscriptions/{id}", partners.subscription_page),
            web.post("/subscriptions/{id}/rotate-secret", partners.rotate_subscription_secret),
            web.post("/subscriptions/{id}/status", partners.set_subscription_status),
            web.post("/subscriptions/{id}/delete", partners.delete_subscription),
            web.get("/flows", notify.list_flows),
            web.post("/flows", notify.upload_flow),
            web.get("/flows/{name}", notify.flow_page),
            web.post("/flows/{name}/test", notify.dry_run_flow, name="flow_dry_run"),
            web.post("/flows/{name}/activate", notify.activate_flow),
            web.post("/flows/{name}/rollback", notify.rollback_flow),
            web.post("/flows/{name}/delete", notify.delete_flow),
            web.get("/channels", notify.list_channels),
            web.post("/channels", notify.create_channel),
            web.get("/channels/{ref}", notify.channel_page),
            web.post("/channels/{ref}/delete", notify.delete_channel),
            web.get("/templates", notify.list_templates),
            web.post("/templates", notify.create_template),
            web.get("/templates/{ref}", notify.template_page),
            web.post("/templates/{ref}/preview", notify.preview_template, name="template_preview"),
            web.post("/templates/{ref}/delete", notify.delete_template),
            web.get("/entities/{type}", entities.list_entities),
            web.get("/entities/{type}/{ref}", entities.entity_page),
        ]
    )
    ui.router.add_static("/static", STATIC, name="static", append_version=False)
