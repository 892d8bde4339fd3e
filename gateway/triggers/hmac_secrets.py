"""Signed triggers (`hmac`, `webhook_signature`), when an admin saves one: the scheme must
work, and every secret it signs with fit it. One check (`secret_problems`) for a secret
given on create, PATCH or rotate and for the secrets a PATCH keeps under a changed scheme,
so a stored secret can never fail a partner's request later."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.auth import partner_hmac, webhook_signature
from gateway.errors import FieldProblem
from gateway.formats.json_tree import is_text
from gateway.schemas.compiled import invalid

MAX_SECRET: Final = 1024
# A `shared_secret` trigger's secret: what a header carries whole, long enough not to guess.
SHARED_SECRET: Final = re.compile(r"[\x21-\x7e]{16,1024}")
SIGNED_MODES: Final = ("hmac", "webhook_signature")
# The members of `auth` a stored secret is keyed by: a change of one is what a kept secret
# may no longer fit (`rekeyed`; `kept_secret_problems` points at it).
_KEYED_BY: Final = ("mode", "preset", "secret_encoding")


def scheme_problems(auth: Mapping[str, Any]) -> list[FieldProblem]:
    """An hmac scheme that cannot work, pointing at its member."""
    if auth.get("mode") != "hmac":
        return []
    if all(auth.get(name) is None for name in ("preset", "algorithm", "header")):
        # Nothing of a scheme given: the choice to make is the partner's preset (the admin
        # UI's one field for it), a custom scheme's members the other way out.
        message = (
            f"/auth/preset: choose the partner's scheme ({', '.join(partner_hmac.PRESETS)}),"
            " or describe it with algorithm and header"
        )
        return [FieldProblem("/auth/preset", message, "required")]
    try:
        partner_hmac.scheme_from(auth)
    except partner_hmac.SchemeError as exc:
        where = f"/auth/{exc.field}"
        return [FieldProblem(where, f"{where}: {exc.message}", "scheme")]
    return []


def secret_problems(auth: Mapping[str, Any], secret: str, at: str) -> list[FieldProblem]:
    """Why `secret` cannot sign this trigger's messages (none: it can). `auth` is the
    trigger's, its scheme already checked (`scheme_problems`)."""
    mode = auth.get("mode")
    try:
        if mode == "hmac":
            partner_hmac.scheme_from(auth).key(secret)
        elif mode == "webhook_signature":
            webhook_signature.secret_key(secret)
        elif mode == "shared_secret":
            if not SHARED_SECRET.fullmatch(secret):
                raise ValueError(
                    "a shared secret is 16 to 1024 visible ASCII characters, no blanks (it is "
                    "sent in a header)"
                )
        else:
            message = (
                f"{at}: only hmac, webhook_signature and shared_secret triggers take a "
                "partner's secret"
            )
            return [FieldProblem(at, message, "mode")]
    except ValueError as exc:
        return [FieldProblem(at, f"{at}: {exc}", "secret")]
    return []


def given_secret_problems(auth: Mapping[str, Any]) -> list[FieldProblem]:
    """The scheme, and the secret `auth` carries (create, PATCH)."""
    problems = scheme_problems(auth)
    if problems or "secret" not in auth:
        return problems
    return secret_problems(auth, auth["secret"], "/auth/secret")


def rekeyed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The members of `auth` a PATCH changes that a signed trigger's stored secrets are keyed
    by (`mode`, `preset`, `secret_encoding`). Only such a change has its kept secrets opened
    and checked (`kept_secret_problems`): a PATCH of anything else (a name, a mapping, the
    methods) keeps the scheme, and its secrets, as they are."""
    if after.get("mode") not in SIGNED_MODES or scheme_problems(after):
        return []
    return [name for name in _KEYED_BY if before.get(name) != after.get(name)]


def kept_secret_problems(
    after: Mapping[str, Any], at: str, secrets: Sequence[str]
) -> list[FieldProblem]:
    """A PATCH that changes the scheme at `at` (`rekeyed`) and keeps the trigger's live
    `secrets` under `after`: each must still key it, or the change is refused at that member
    (with no secret given, the partner's requests would all be refused)."""
    for secret in secrets:
        if problems := secret_problems(after, secret, at):
            message = (
                f"{problems[0].message}: the trigger's secret does not fit this scheme; give "
                "the partner's secret for it in auth.secret, or rotate"
            )
            return [FieldProblem(at, message, "secret")]
    return []


def unopened_secret_problem(at: str, reason: str) -> FieldProblem:
    """A scheme change whose kept secret cannot be opened (`reason`: the SecretBoxError's,
    never the value): whether it fits cannot be known, so the change is refused at `at`."""
    message = (
        f"{at}: the trigger's stored secret cannot be opened ({reason}), so it cannot be "
        "checked against this scheme; give the partner's secret for it in auth.secret, or rotate"
    )
    return FieldProblem(at, message, "secret")


def check_rotated_secret(auth: Mapping[str, Any], secret: Any) -> None:
    """InvalidPayload unless `secret` (a rotation's body) can sign this trigger's messages."""
    if not is_text(secret) or not 1 <= len(secret) <= MAX_SECRET:
        message = f"/secret: a secret is text of 1 to {MAX_SECRET} characters"
        problems = [FieldProblem("/secret", message, "type")]
    else:
        problems = secret_problems(auth, secret, "/secret")
    if problems:
        raise invalid("rotation", problems[:1])
