"""Use case: invoke an action now (proxy mode) and answer with the partner's mapped reply.

    context  = {"entity": <the entity>, "tenant": t}   for {"entity": {"type", "id"|"key"}}
             = {**payload, "tenant": t}                for {"payload": {...}}
    request  = the action's request mapping on the context (no mapping: the entity or the
               payload as the JSON body, path parameters from its top-level fields)
    answer   = the response mapping on the partner's JSON (no mapping: the JSON as it came,
               an answer neither JSON nor XML as its text and content type)

The request carries Standard Webhooks headers signed with the action's secrets
(`action_secrets.py`): `webhook-id` is `<action id>:<the caller's Idempotency-Key>`, the same
for the caller's retries of one call, else `<action id>:<a fresh id>`.

With `write_back`, the mapped answer is merged into the entity (a normal entity write: it is
validated and emits `entity.updated`). Failures name the partner's status: 502 for an error
answer or no answer, 504 when the partner's timeout passed.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.actions.answer_rules import AnswerRule
from gateway.actions.catalog import Catalog, Partner, build_request
from gateway.actions.partner_calls import PartnerCalls
from gateway.actions.signing import with_signature
from gateway.clock import utcnow
from gateway.entities import EntityService, Origin, public
from gateway.errors import (
    BadRequest,
    Conflict,
    InvalidPayload,
    PartnerError,
    PartnerTimeout,
)
from gateway.formats.charsets import storable
from gateway.formats.json_tree import is_text, plain
from gateway.mapping_files.source import MappingSource
from gateway.metrics import Metrics
from gateway.outbound.sender import OtherBody, Outcome, other_charset
from gateway.outbound.verdict import Verdict, error_names
from gateway.store import Doc, new_id

_EXCERPT = 500


@dataclass(frozen=True, slots=True)
class ProxyResult:
    status: int
    data: Any
    written: dict[str, Any] | None = None
    # An answer neither JSON nor XML, as it came: `data` is its text (or, when it is not
    # text in its charset, base64: `encoding`), `content_type` its media type.
    content_type: str | None = None
    encoding: str | None = None


class Proxy:
    def __init__(
        self,
        catalog: Catalog,
        calls: PartnerCalls,
        entities: EntityService,
        mappings: MappingSource,
        metrics: Metrics,
    ) -> None:
        self._catalog = catalog
        self._calls = calls
        self._entities = entities
        self._mappings = mappings
        self._metrics = metrics
        # Whose time says which rotated-out secrets still sign (tests move it forward).
        self.clock: Callable[[], datetime] = utcnow

    async def invoke(
        self,
        tenant: str,
        action_id: str,
        *,
        entity: Mapping[str, Any] | None = None,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> ProxyResult:
        """`idempotency_key`: the caller's, naming the call its retries repeat (its
        `webhook-id`), 1 to 255 printable ASCII characters as a trigger's (BadRequest)."""
        if idempotency_key is not None and not (
            1 <= len(idempotency_key) <= 255
            and idempotency_key.isascii()
            and idempotency_key.isprintable()
        ):
            raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")
        action = await self._catalog.action(tenant, action_id)
        partner = await self._catalog.partner(tenant, action.partner_id)
        signing = await self._catalog.action_signer(tenant, action.id)
        entity_doc = await self._entity(tenant, entity) if entity is not None else None
        fields: Mapping[str, Any]
        if entity_doc is not None:
            fields = plain(public(entity_doc))
            context: dict[str, Any] = {"entity": fields, "tenant": tenant}
        else:
            fields = payload or {}
            context = {**fields, "tenant": tenant}
        request_mapping = response_mapping = None
        if action.request_mapping:
            request_mapping = await self._mappings.active(tenant, action.request_mapping)
        if action.response_mapping == action.request_mapping:
            response_mapping = request_mapping  # one mapping both ways (one version of it)
        elif action.response_mapping:
            response_mapping = await self._mappings.active(tenant, action.response_mapping)
        if (refused := partner.refusal()) is not None:
            assert refused.hold is not None
            raise refused.hold.problem(refused.hold.message, partner_id=partner.id)
        request, _ = await build_request(
            action, partner, request_mapping, context, default_body=fields, path_values=fields
        )
        msg_id = f"{action.id}:{idempotency_key or new_id()}"
        request = with_signature(request, signing, msg_id, self.clock())
        outcome = await self._calls.send(partner, request, action=action)
        verdict = action.verdict(outcome)
        # Counted once the answer is on its way (the loop runs this after the handler's step).
        asyncio.get_running_loop().call_soon(
            self._metrics.observe_partner_call, partner.id, "proxy", outcome, verdict
        )
        rule = action.matched_rule(outcome)
        _raise_for(partner, outcome, verdict, action.reported_error(outcome), rule)
        data = outcome.json_body if outcome.readable else None
        if response_mapping is not None:
            data = _mapped(partner, response_mapping.map_response, data)
        elif (other := outcome.other_body) is not None:
            assert outcome.status is not None
            return _as_it_came(outcome.status, other)
        written = None
        if action.write_back and entity_doc is not None and isinstance(data, dict):
            try:
                result = await self._entities.patch(
                    tenant,
                    entity_doc["type"],
                    str(entity_doc["_id"]),
                    data,
                    Origin("action", action.id, {"partner_id": partner.id}),
                )
            except InvalidPayload as exc:  # the partner's mapped answer, not the caller's
                raise PartnerError(
                    f"partner {partner.name}'s answer does not fit the entity: {exc.detail}",
                    partner_id=partner.id,
                    errors=[p.as_dict() for p in exc.problems],
                ) from None
            except Conflict as exc:  # the answer names another entity (its natural key)
                raise PartnerError(
                    f"partner {partner.name}'s answer does not fit the entity: {exc.detail}",
                    partner_id=partner.id,
                ) from None
            written = {
                "entity": {"type": entity_doc["type"], "id": str(entity_doc["_id"])},
                "changed": [c.field for c in result.changes],
            }
        assert outcome.status is not None
        return ProxyResult(outcome.status, data, written)

    async def _entity(self, tenant: str, ref: Mapping[str, Any]) -> Doc:
        etype, key = ref.get("type"), ref.get("id", ref.get("key"))
        if not is_text(etype) or not is_text(key) or not key:
            raise BadRequest('entity is {"type": ..., "id": ...} or {"type": ..., "key": ...}')
        return await self._entities.get(tenant, etype, key)


def _raise_for(
    partner: Partner,
    outcome: Outcome,
    verdict: Verdict,
    reported: str | None = None,
    rule: AnswerRule | None = None,
) -> None:
    name = partner.name
    if (hold := outcome.hold) is not None:
        raise hold.problem(f"partner {name}: {hold.message}", partner_id=partner.id)
    if outcome.error == "timeout":
        raise PartnerTimeout(
            f"partner {name} did not answer within {partner.timeout:g} s", partner_id=partner.id
        )
    if outcome.status is None:
        raise PartnerError(
            f"partner {name} could not be reached: {outcome.message}",
            partner_id=partner.id,
            partner_error=outcome.error,
        )
    if outcome.error is not None and (verdict is Verdict.SUCCESS or 200 <= outcome.status < 300):
        # A body too large, not the JSON it claims, nested too deep: nothing to answer with
        # (nor for the action's `error` expression to read).
        raise PartnerError(
            f"partner {name} answered {outcome.status} with an unusable body: {outcome.message}",
            partner_id=partner.id,
            partner_status=outcome.status,
        )
    if verdict is not Verdict.SUCCESS:
        said = ""
        if rule is not None:  # the action's answer rule decided it: no retry here either way
            said = rule.describe(outcome)
        elif verdict is Verdict.RETRY and 200 <= outcome.status < 300:
            # A throttle answered as a success (`Action.verdict`): MyGeotab's OverLimitException
            names = ", ".join(error_names(outcome.json_body)) or "an error with Retry-After"
            said = f" asking to slow down: {names}"
        elif reported is not None:
            said = f" reporting an error: {reported}"
        elif outcome.message and outcome.error is None:  # what the answer says: a redirect's target
            said = f": {outcome.message}"
        raise PartnerError(
            f"partner {name} answered {outcome.status}{said}",
            partner_id=partner.id,
            partner_status=outcome.status,
            partner_body=outcome.redacted_excerpt(_EXCERPT),
        )


def _as_it_came(status: int, other: OtherBody) -> ProxyResult:
    """An answer that is neither JSON nor XML: its text, read in its charset (else UTF-8:
    `other_charset`), or base64 when it is not text in it, with its media type."""
    try:
        text = storable(other.body.decode(other_charset(other)))  # UTF-7's lone surrogates
        return ProxyResult(status, text, None, other.media_type)
    except UnicodeDecodeError:  # bytes that are not text in it (an image)
        encoded = base64.b64encode(other.body).decode("ascii")
        return ProxyResult(status, encoded, None, other.media_type, "base64")


def _mapped(partner: Partner, map_response: Any, data: Any) -> Any:
    if data is None:
        raise PartnerError(
            f"partner {partner.name} answered without a JSON body to map", partner_id=partner.id
        )
    try:
        return map_response(data)
    except InvalidPayload as exc:
        raise PartnerError(
            f"partner {partner.name}'s answer does not fit the response mapping: {exc.detail}",
            partner_id=partner.id,
            errors=[p.as_dict() for p in exc.problems],
        ) from None
