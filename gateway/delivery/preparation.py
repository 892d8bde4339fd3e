"""The delivery worker's prepare stage: a claimed delivery, its subscription, action and
partner → the request to send, with the action's request mapping applied and signed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from gateway.actions.catalog import Action, Partner, Subscription, build_request
from gateway.mapping_files.source import MappingSource
from gateway.outbound.sender import OutboundRequest, signed_headers
from gateway.store import Doc


async def signed_request(
    doc: Doc,
    sub: Subscription,
    action: Action,
    partner: Partner,
    mappings: MappingSource,
    *,
    lease: timedelta,
    clock: Callable[[], datetime],
) -> OutboundRequest:
    event = doc["event"]
    entity = {**(event.get("data") or {}), **(event.get("entity") or {})}
    mapping = None
    if action.request_mapping:
        mapping = await mappings.active(doc["tenant"], action.request_mapping)
    context = {"event": event, "entity": entity, "tenant": doc["tenant"]}
    # Leases are renewed while a send runs, so a send may take a whole lease (less a margin)
    # from now, even for the last delivery of an ordered group claimed long ago.
    remaining = lease.total_seconds() - 1.0
    request, body = build_request(
        action,
        partner,
        mapping,
        context,
        default_body=event,
        path_values=entity,
        timeout=max(min(partner.timeout, remaining), 0.1),
    )
    # The signature's timestamp is the real time: receivers check it against theirs.
    signature = signed_headers(
        sub.signing_secrets(clock()), doc["_id"], int(time.time()), body or b""
    )
    return replace(request, headers={**request.headers, **signature})
