"""/api/v1/flows/{name}/runs and /api/v1/flow-runs/{id}: flow runs with each step's outcome."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.flows.runs import STATUSES, public_run
from gateway.store.client import EVENT_CHILD_CURSOR
from gateway.web.admin_auth import authenticate
from gateway.web.openapi import operation, text_cursor
from gateway.web.partners import PAGE
from gateway.web.problems import json_response
from gateway.web.requests import page, page_params
from gateway.web.state import services_of

RUN: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "<event id>:<flow name>"},
        "flow": {"type": "string"},
        "version": {"type": "integer"},
        "status": {"enum": list(STATUSES)},
        "event": {"type": "object"},
        "depth": {"type": "integer"},
        "steps": {"type": "array", "description": "each step's outcome, in order"},
        "answers": {"type": "object", "description": "what the steps gave, by step id"},
        "replays": {
            "type": "array",
            "description": "each replay: when, and the failed step it ran again",
        },
    },
}


@operation(
    "List a flow's runs, newest first",
    tag="flows",
    # each run as its read shows it, without the steps' answers (public_run, full=False)
    response={
        **PAGE,
        "properties": {**PAGE["properties"], "items": {"type": "array", "items": RUN}},
    },
    query=[
        ("status", "|".join(STATUSES)),
        ("limit", "page size, 1-200"),
        ("cursor", "next_cursor of the previous page"),
    ],
    schemas={"status": {"enum": list(STATUSES)}, "cursor": text_cursor(EVENT_CHILD_CURSOR)},
)
async def list_flow_runs(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    limit, cursor = page_params(request)
    docs = await services_of(request).notify.flow_runs.list(
        claims.tenant,
        request.match_info["name"],
        status=request.query.get("status") or None,
        before=cursor,
        limit=limit,
    )
    return json_response(page([public_run(d) for d in docs], limit))


@operation("Get a flow run with each step's outcome and answers", tag="flows", response=RUN)
async def get_flow_run(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    doc = await services_of(request).notify.flow_runs.get(claims.tenant, request.match_info["id"])
    return json_response(public_run(doc, full=True))


@operation(
    "Replay a failed flow run from the step that failed",
    tag="flows",
    response=RUN,
    errors=(409,),  # the run is not failed, or changed meanwhile (flows/runs.py replay)
)
async def replay_flow_run(request: web.Request) -> web.Response:
    claims = await authenticate(request)
    services = services_of(request)
    doc = await services.notify.flow_runs.replay(claims.tenant, request.match_info["id"])
    services.flow_runner.notify()
    return json_response(public_run(doc, full=True))
