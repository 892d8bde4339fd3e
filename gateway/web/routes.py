"""The one URL table."""

from __future__ import annotations

from aiohttp import web

from gateway.web import entities, health, kinds, mappings, openapi


def add_routes(app: web.Application) -> None:
    app.router.add_routes(
        [
            web.get("/healthz", health.healthz),
            web.get("/readyz", health.readyz),
            web.get("/metrics", health.metrics),
            web.get("/openapi.json", openapi.openapi_json),
            web.get("/docs", openapi.api_docs),
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
