"""Fetching a JWKS (a partner's, an identity provider's) through the SSRF-guarded sender."""

from __future__ import annotations

import orjson

from gateway.auth.partner_jwt import Fetch
from gateway.errors import PartnerError
from gateway.outbound.sender import OutboundRequest, Sender

JWKS_TIMEOUT_SECONDS = 5.0


def jwks_fetcher(sender: Sender, *, timeout: float = JWKS_TIMEOUT_SECONDS) -> Fetch:
    async def fetch(url: str) -> bytes:
        request = OutboundRequest(
            "GET", url, headers={"Accept": "application/json"}, timeout=timeout
        )
        outcome = await sender.send(request, partner_id="jwks")
        if outcome.status != 200 or not outcome.is_json:
            raise PartnerError(f"fetching the JWKS failed: {outcome.status or outcome.error}")
        return orjson.dumps(outcome.json_body)

    return fetch
