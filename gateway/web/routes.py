"""The one URL table."""

from __future__ import annotations

from aiohttp import web

from gateway.web import entities, health, hooks, kinds, mappings, openapi, triggers


def add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/metrics", health.metrics),
            web.get("/openapi.json", openapi.openapi_json),
            web.get("/docs", openapi.api_docs),
            web.post("/hooks/{trigger_id}", hooks.post_hook),
            web.get("/hooks/{trigger_id}", hooks.get_hooks),
            web.get("/hooks/{trigger_id}/{key}", hooks.get_hook_entity),
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
            web.get("/api/v1/entities/{type}/{ref}", entities.get_entity),
            web.patch("/api/v1/entities/{type}/{ref}", entities.patch_entity),
            web.delete("/api/v1/entities/{type}/{ref}", entities.delete_entity),
            web.get("/api/v1/kinds", kinds.list_kinds),
            web.post("/api/v1/kinds", kinds.create_kind),
            web.get("/api/v1/kinds/{name}", kinds.get_kind),
            web.put("/api/v1/kinds/{name}", kinds.replace_kind),
            web.delete("/api/v1/kinds/{name}", kinds.delete_kind),
            web.get("/api/v1/events", entities.list_events),
            web.get("/api/v1/events/{id}", entities.get_event),
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
        ]
    )
