"""The one URL table."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from gateway.web import (
    actions,
    assignments,
    channels,
    deliveries,
    entities,
    events,
    fleet_rules,
    fleet_settings,
    flow_runs,
    flows,
    health,
    hooks,
    kinds,
    mappings,
    openapi,
    partners,
    positions,
    schedules,
    templates,
    triggers,
)
from gateway.web.requests import expect_later


def answering_expect(routes: Iterable[web.RouteDef]) -> list[web.RouteDef]:
    """The routes with the gateway's handling of `Expect` (web/requests.py `expect_later`)."""
    return [
        web.RouteDef(r.method, r.path, r.handler, {**r.kwargs, "expect_handler": expect_later})
        for r in routes
    ]


_VEHICLE_PARTS = ("drivers", "positions", "services")
# A key as it is written, its slashes and line breaks too (a CNPJ `11.222.333/0001-81`, a plate
# `ABC/1234`, an `other`'s `notas:NF/2026/1`, `ABC1234%0D%0A` from a CSV): the rest of the path
# (`[\s\S]`: `.` is no line break); `%2F` works as well. A vehicle's rest of the path is not one
# ending in a vehicle's part (`…/drivers`): those are their own routes, which answer 405 to
# another method; another type's key may end so (the type's pattern looks ahead at it).
_KEY = r"{key:[\s\S]+}"
_REF = r"{ref:[\s\S]+}"
_ENTITY_TYPE = r"{type:(?!vehicle/[\s\S]*/(?:" + "|".join(_VEHICLE_PARTS) + r")\Z)[^{}/]+}"


def add_routes(app: web.Application) -> None:
    app[openapi.reference_key] = openapi.Reference()
    app.router.add_routes(
        answering_expect(
            [
                web.get("/healthz", health.healthz),
                web.get("/readyz", health.readyz),
                web.get("/metrics", health.metrics),
                web.get("/openapi.json", openapi.openapi_json),
                web.get("/docs", openapi.api_docs),
                web.post("/hooks/{trigger_id}", hooks.post_hook),
                web.get("/hooks/{trigger_id}", hooks.get_hooks),
                web.get(f"/hooks/{{trigger_id}}/{_KEY}", hooks.get_hook_entity),
                web.route("OPTIONS", "/hooks/{trigger_id}", hooks.options_hook),
                web.route("OPTIONS", f"/hooks/{{trigger_id}}/{_KEY}", hooks.options_hook_entity),
                web.post("/api/v1/triggers", triggers.create_trigger),
                web.get("/api/v1/triggers", triggers.list_triggers),
                web.get("/api/v1/triggers/{id}", triggers.get_trigger),
                web.patch("/api/v1/triggers/{id}", triggers.patch_trigger),
                web.delete("/api/v1/triggers/{id}", triggers.delete_trigger),
                web.post("/api/v1/triggers/{id}/disable", triggers.disable_trigger),
                web.post("/api/v1/triggers/{id}/enable", triggers.enable_trigger),
                web.post("/api/v1/triggers/{id}/rotate", triggers.rotate_trigger),
                web.post("/api/v1/triggers/{id}/revoke", triggers.revoke_trigger),
                web.get("/api/v1/rejected", triggers.list_rejected),
                web.post("/api/v1/rejected/replay", triggers.replay_all_rejected),
                web.get("/api/v1/rejected/{id}", triggers.get_rejected),
                web.post("/api/v1/rejected/{id}/replay", triggers.replay_rejected),
                web.get("/api/v1/entities/{type}", entities.list_entities),
                web.post("/api/v1/entities/{type}", entities.create_entity),
                web.get(f"/api/v1/entities/{_ENTITY_TYPE}/{_REF}", entities.get_entity),
                web.get(
                    f"/api/v1/entities/vehicle/{_REF}/drivers", assignments.list_vehicle_drivers
                ),
                web.post(
                    f"/api/v1/entities/vehicle/{_REF}/drivers", assignments.assign_vehicle_driver
                ),
                web.get(
                    f"/api/v1/entities/vehicle/{_REF}/positions", positions.list_vehicle_positions
                ),
                web.post(f"/api/v1/entities/vehicle/{_REF}/services", fleet_rules.record_service),
                web.patch(f"/api/v1/entities/{_ENTITY_TYPE}/{_REF}", entities.patch_entity),
                web.delete(f"/api/v1/entities/{_ENTITY_TYPE}/{_REF}", entities.delete_entity),
                web.get("/api/v1/kinds", kinds.list_kinds),
                web.post("/api/v1/kinds", kinds.create_kind),
                web.get("/api/v1/kinds/{name}", kinds.get_kind),
                web.put("/api/v1/kinds/{name}", kinds.replace_kind),
                web.delete("/api/v1/kinds/{name}", kinds.delete_kind),
                web.get("/api/v1/events", events.list_events),
                web.get("/api/v1/events/{id}", events.get_event),
                web.get("/api/v1/fleet/settings", fleet_settings.get_fleet_settings),
                web.put("/api/v1/fleet/settings", fleet_settings.put_fleet_settings),
                web.post("/api/v1/mappings", mappings.upload_mapping),
                web.get("/api/v1/mappings", mappings.list_mappings),
                web.post("/api/v1/mappings/test", mappings.dry_run_mapping),
                web.get("/api/v1/mappings/{name}", mappings.get_mapping),
                web.delete("/api/v1/mappings/{name}", mappings.delete_mapping),
                web.get("/api/v1/mappings/{name}/versions", mappings.list_versions),
                web.get("/api/v1/mappings/{name}/versions/{version}", mappings.get_version),
                web.get("/api/v1/mappings/{name}/diff", mappings.diff_versions),
                web.post("/api/v1/mappings/{name}/activate", mappings.activate_version),
                web.post("/api/v1/mappings/{name}/rollback", mappings.rollback_mapping),
                web.post("/api/v1/partners", partners.create_partner),
                web.get("/api/v1/partners", partners.list_partners),
                web.get("/api/v1/partners/{id}", partners.get_partner),
                web.patch("/api/v1/partners/{id}", partners.patch_partner),
                web.delete("/api/v1/partners/{id}", partners.delete_partner),
                web.post("/api/v1/actions", actions.create_action),
                web.get("/api/v1/actions", actions.list_actions),
                web.get("/api/v1/actions/{id}", actions.get_action),
                web.patch("/api/v1/actions/{id}", actions.patch_action),
                web.delete("/api/v1/actions/{id}", actions.delete_action),
                web.post("/api/v1/actions/{id}/invoke", actions.invoke_action),
                web.post("/api/v1/actions/{id}/rotate-secret", actions.rotate_action_secret),
                web.post("/api/v1/subscriptions", actions.create_subscription),
                web.get("/api/v1/subscriptions", actions.list_subscriptions),
                web.get("/api/v1/subscriptions/{id}", actions.get_subscription),
                web.patch("/api/v1/subscriptions/{id}", actions.patch_subscription),
                web.delete("/api/v1/subscriptions/{id}", actions.delete_subscription),
                web.post(
                    "/api/v1/subscriptions/{id}/rotate-secret", actions.rotate_subscription_secret
                ),
                web.post("/api/v1/channels", channels.create_channel),
                web.get("/api/v1/channels", channels.list_channels),
                web.get("/api/v1/channels/{ref}", channels.get_channel),
                web.patch("/api/v1/channels/{ref}", channels.patch_channel),
                web.delete("/api/v1/channels/{ref}", channels.delete_channel),
                web.post("/api/v1/channels/{ref}/test", channels.test_channel),
                web.get("/api/v1/notification-settings", channels.get_notification_settings),
                web.put("/api/v1/notification-settings", channels.put_notification_settings),
                web.post("/api/v1/flows", flows.upload_flow),
                web.get("/api/v1/flows", flows.list_flows),
                web.post("/api/v1/flows/test", flows.dry_run_flow),
                web.get("/api/v1/flows/{name}", flows.get_flow),
                web.delete("/api/v1/flows/{name}", flows.delete_flow),
                web.get("/api/v1/flows/{name}/versions", flows.list_flow_versions),
                web.get("/api/v1/flows/{name}/versions/{version}", flows.get_flow_version),
                web.get("/api/v1/flows/{name}/diff", flows.diff_flow_versions),
                web.post("/api/v1/flows/{name}/activate", flows.activate_flow),
                web.post("/api/v1/flows/{name}/rollback", flows.rollback_flow),
                web.get("/api/v1/flows/{name}/pause", flows.get_flow_pause),
                web.post("/api/v1/flows/{name}/pause", flows.pause_flow),
                web.post("/api/v1/flows/{name}/resume", flows.resume_flow),
                web.post("/api/v1/flows/{name}/rotate-secret", flows.rotate_flow_secret),
                web.get("/api/v1/flows/{name}/runs", flow_runs.list_flow_runs),
                web.get("/api/v1/flow-runs/{id}", flow_runs.get_flow_run),
                web.post("/api/v1/flow-runs/{id}/replay", flow_runs.replay_flow_run),
                web.post("/api/v1/templates", templates.create_template),
                web.get("/api/v1/templates", templates.list_templates),
                web.post("/api/v1/templates/preview", templates.preview_template),
                web.get("/api/v1/templates/{ref}", templates.get_template),
                web.put("/api/v1/templates/{ref}", templates.replace_template),
                web.delete("/api/v1/templates/{ref}", templates.delete_template),
                web.post("/api/v1/schedules", schedules.create_schedule),
                web.get("/api/v1/schedules", schedules.list_schedules),
                web.get("/api/v1/schedules/{id}", schedules.get_schedule),
                web.patch("/api/v1/schedules/{id}", schedules.patch_schedule),
                web.delete("/api/v1/schedules/{id}", schedules.delete_schedule),
                web.post("/api/v1/schedules/{id}/pause", schedules.pause_schedule),
                web.post("/api/v1/schedules/{id}/resume", schedules.resume_schedule),
                web.post("/api/v1/schedules/{id}/run", schedules.run_schedule),
                web.post("/api/v1/schedules/{id}/reset", schedules.reset_schedule),
                web.get("/api/v1/schedules/{id}/runs", schedules.list_schedule_runs),
                *fleet_rules.rule_routes(),
                web.get("/api/v1/deliveries", deliveries.list_deliveries),
                web.post("/api/v1/deliveries/replay", deliveries.replay_deliveries),
                web.get("/api/v1/deliveries/{id}", deliveries.get_delivery),
                web.post("/api/v1/deliveries/{id}/replay", deliveries.replay_delivery),
            ]
        )
    )
