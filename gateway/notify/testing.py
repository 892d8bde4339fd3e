"""Use case: an admin's test send through a channel (`POST /api/v1/channels/{ref}/test`):
a template rendered on a context, or a short built-in message, sent now to one address.

A send our own guard held back before anything left (the partner's circuit open, its rate
limit, its token endpoint asking us to wait) is no outcome of the channel's: it is answered
as a problem, 503 (429 for a rate limit) with `Retry-After`, "not sent: <reason>, retry in
N s"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gateway.errors import FieldProblem, InvalidPayload
from gateway.formats.json_tree import is_text
from gateway.notify.messages import SendOutcome
from gateway.notify.notifier import Notification, Recipient
from gateway.notify.sandbox import off_loop, previewing

if TYPE_CHECKING:
    from gateway.notify.wiring import NotifyServices

_BUILT_IN = {
    "email": {
        "subject": "Rabbot: mensagem de teste / test message",
        "text": "Este canal funciona. / This channel works.",
    },
    "push": {"title": "Rabbot", "body": "Este canal funciona. / This channel works."},
    "sms": {"text": "Rabbot: este canal funciona. / This channel works."},
}


TEST_FIELDS = ("to", "template", "context", "locale")


def check_test_body(body: Mapping[str, Any]) -> None:
    """InvalidPayload listing every problem of a test send's body (`to` required; `template`
    and `locale` non-empty text, `context` an object, when given)."""
    problems = [
        FieldProblem(f"/{k}", f"unknown field {k!r}", "additionalProperties")
        for k in body
        if k not in TEST_FIELDS
    ]
    for name in ("to", "template", "locale"):
        value = body.get(name)
        if (name == "to" or value is not None) and (not is_text(value) or not value):
            problems.append(FieldProblem(f"/{name}", f"{name} must be a non-empty string", "type"))
    if body.get("context") is not None and not isinstance(body["context"], dict):
        problems.append(FieldProblem("/context", "context is an object", "type"))
    if problems:
        raise InvalidPayload("invalid test message", problems)


async def send_test(
    notify: NotifyServices,
    tenant: str,
    channel_ref: str,
    *,
    to: str,
    template: str | None,
    context: Mapping[str, Any] | None,
    locale: str | None,
) -> SendOutcome:
    channel = await notify.channels.get(tenant, channel_ref)
    parts: Mapping[str, str] = _BUILT_IN[channel["type"]]
    if template is not None:
        compiled = await notify.templates.compiled(tenant, template)
        if compiled.channel_type != channel["type"]:
            message = f"template {template!r} is for {compiled.channel_type}, not {channel['type']}"
            raise InvalidPayload(message, [FieldProblem("/template", message, "reference")])
        doc = await notify.templates.get(tenant, template)
        with previewing(tenant):  # an author's try, as a preview
            rendered = await off_loop(compiled.render, context or doc.get("sample") or {}, locale)
        parts = rendered.parts
    notification = Notification(
        str(channel["_id"]), Recipient(to), parts, {"test": "true"}, waited_on=True
    )
    outcome = await notify.notifier.send(tenant, notification)
    if outcome.hold is not None:  # nothing left: not a retry nor a failure, but a wait
        raise outcome.hold.problem(outcome.detail, channel=channel["name"])
    return outcome
