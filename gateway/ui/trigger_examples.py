"""The call shown once beside a new (or rotated) trigger's credentials, for the admin to hand
to the partner: one that trigger accepts as configured (its auth mode, the token in the query
for devices that cannot send headers, its body format)."""

from __future__ import annotations

import shlex
from typing import Any, Final
from urllib.parse import quote

from gateway.auth.partner_hmac import PRESETS

# What a trigger's format is posted as: the Content-Type and the example file's name.
BODIES: Final = {
    "json": ("application/json", "payload.json"),
    "form": ("application/x-www-form-urlencoded", "payload.txt"),
    "xml": ("application/xml", "payload.xml"),
}


def device_url(trigger: dict[str, Any], token: str | None) -> str | None:
    """The URL a device that cannot send headers is configured with: the token in the query
    parameter the trigger names (None for a trigger that takes it in a header only)."""
    parameter = trigger["auth"].get("token_in_query")
    if not parameter or token is None:
        return None
    return f"{trigger['url']}?{quote(parameter, safe='')}={quote(token, safe='')}"


def curl_example(trigger: dict[str, Any], token: str | None, secret: str | None) -> str:
    """A call the partner can run as shown (or with the one value it keeps, a JWT or its own
    secret, put in): `--data-binary` since a signature covers the body's bytes, which `-d`
    would change (it drops line ends)."""
    auth = trigger["auth"]
    mode = auth.get("mode", "token")
    content_type, payload = BODIES.get(trigger.get("format") or "json", BODIES["json"])
    url = device_url(trigger, token) or trigger["url"]
    lines: list[str] = []
    headers: list[str] = []
    if mode == "webhook_signature":
        lines = _standard_webhooks_signature(secret, payload)
        headers = [
            '"webhook-id: $ID"',
            '"webhook-timestamp: $TS"',
            '"webhook-signature: v1,$SIG"',
        ]
    elif mode == "hmac":
        header = auth.get("header") or PRESETS.get(auth.get("preset") or "", {}).get("header")
        headers = [shlex.quote(f"{header or 'X-Signature'}: <signature of {payload}>")]
    elif mode == "shared_secret":  # the partner's own header (X-Gitlab-Token)
        headers = [shlex.quote(f"{auth.get('header')}: {secret or '<the secret>'}")]
    elif mode == "partner_jwt":
        headers = [shlex.quote("Authorization: Bearer <your JWT>")]
    elif not auth.get("token_in_query"):  # a device given the URL with the token sends none
        headers = [shlex.quote(f"Authorization: Bearer {token or '<token>'}")]
    if "POST" in trigger["methods"]:
        headers.append(shlex.quote(f"Content-Type: {content_type}"))
        command = [f"curl -X POST {shlex.quote(url)}", *(f"  -H {h}" for h in headers)]
        command.append(f"  --data-binary @{payload}")
    else:
        command = [f"curl {shlex.quote(url)}", *(f"  -H {h}" for h in headers)]
    return "\n".join([*lines, " \\\n".join(command)])


def _standard_webhooks_signature(secret: str | None, payload: str) -> list[str]:
    """Shell lines that sign the body as Standard Webhooks does: HMAC-SHA256, keyed by the
    secret's base64 after `whsec_`, of `id.timestamp.body`, in base64 (docs/triggers.md)."""
    return [
        f"SECRET={shlex.quote(secret or '<the secret>')}",
        'ID="msg_$(date +%s%N)"',
        'TS="$(date +%s)"',
        'KEY="$(printf %s "${SECRET#whsec_}" | base64 -d | od -An -vtx1 | tr -d \' \\n\')"',
        f'SIG="$({{ printf %s. "$ID" "$TS"; cat {payload}; }} \\',
        '  | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$KEY" -binary | base64)"',
    ]
