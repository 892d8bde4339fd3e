"""hmac triggers, when an admin saves one: the scheme must work, and a partner's secret fit it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gateway.auth import partner_hmac
from gateway.errors import FieldProblem
from gateway.formats.json_tree import is_text
from gateway.schemas.compiled import invalid

MAX_SECRET: Final = 1024


def hmac_problems(auth: Mapping[str, Any], at: str = "/auth/secret") -> list[FieldProblem]:
    """A scheme that cannot work (pointing at its member), or a secret that does not fit it."""
    try:
        scheme = partner_hmac.scheme_from(auth)
    except partner_hmac.SchemeError as exc:
        where = f"/auth/{exc.field}"
        return [FieldProblem(where, f"{where}: {exc.message}", "scheme")]
    secret = auth.get("secret")
    if secret is None:
        return []
    try:
        scheme.key(secret)
    except ValueError as exc:
        return [FieldProblem(at, f"{at}: {exc}", "secret")]
    return []


def check_rotated_secret(auth: Mapping[str, Any], secret: Any) -> None:
    """InvalidPayload unless `secret` (a rotation's body) can sign this trigger's messages."""
    if auth["mode"] != "hmac":
        message = "/secret: only hmac triggers take a partner's secret"
        problem = FieldProblem("/secret", message, "mode")
    elif not is_text(secret) or not 1 <= len(secret) <= MAX_SECRET:
        message = f"/secret: a secret is text of 1 to {MAX_SECRET} characters"
        problem = FieldProblem("/secret", message, "type")
    elif problems := hmac_problems({**auth, "secret": secret}, at="/secret"):
        problem = problems[0]
    else:
        return
    raise invalid("rotation", [problem])
