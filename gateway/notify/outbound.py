"""The actions layer as the notify lane and flows use it, imported in this one place: the HTTP
sender (SSRF guard, partner limits, credentials), partner and action definitions, request
building, retry verdicts, the subscription filter language.
(The `arch` lane is moving these modules; this file is what follows them.)"""

from gateway.actions.body_check import BodyCheck
from gateway.actions.breaker import PartnerGuards
from gateway.actions.catalog import Action, Catalog, Partner, build_request, partner_guards
from gateway.actions.fanout import EventFilter, compile_filter, event_type_keys
from gateway.actions.partner_auth import (
    OAuth2ClientCredentials,
    TokenFetcher,
    _parse_token_response,
)
from gateway.actions.retry import Verdict
from gateway.actions.sender import OutboundRequest, Outcome, Sender, build_url
from gateway.actions.ssrf import OutboundBlocked, OutboundPolicy

parse_token_response = _parse_token_response

__all__ = [
    "Action",
    "BodyCheck",
    "Catalog",
    "EventFilter",
    "OAuth2ClientCredentials",
    "OutboundBlocked",
    "OutboundPolicy",
    "OutboundRequest",
    "Outcome",
    "Partner",
    "PartnerGuards",
    "Sender",
    "TokenFetcher",
    "Verdict",
    "build_request",
    "build_url",
    "compile_filter",
    "event_type_keys",
    "parse_token_response",
    "partner_guards",
]
