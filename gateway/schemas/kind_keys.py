"""A kind's key made of its own fields: a shipped kind schema's `x-key` names them, in order,
and a document that has them all is keyed by them, upper case and trimmed, joined by `:`. A
tenant's kind schema's `x-key` is an annotation like any other `x-` keyword (docs/entities.md):
this rule is the shipped kinds' (`SchemaRegistry`), whose schemas give it as a list of names.

The built-in `fine` says `"x-key": ["authority", "ait_number"]`: an AIT number is unique only
within its issuing authority, so a fine of DETRAN-SP numbered SP123 is `DETRAN-SP:SP123`,
whoever writes it (the provider's notice, its payment, the back office keying it in). A write
under another key is refused (`422` at `/key`, naming the key): it would be a second fine, one
the provider's notice never finds. A document missing one of them (a fine keyed in without its
authority) is keyed freely.

The rule applies where a key is chosen: when the document is created, and when a write to a
stored one changes what those fields say (its authority given or changed: its key must then
say so, and cannot change). A stored document whose fields still say what they said is written
under the key it has, whatever it is (a fine keyed by hand before the rule, or one the upgrade
left under its AIT because its new key was taken: `store/fine_keys.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import FieldProblem

KEY_FIELDS = "x-key"


def composed_key(values: Sequence[str]) -> str:
    """The key of these field values: `261810` and ` a123 ` → `261810:A123`."""
    return ":".join(value.strip().upper() for value in values)


def fields_key(fields: Sequence[str], body: Mapping[str, Any]) -> str | None:
    """The key `body`'s `fields` say; None when one is missing or blank."""
    values = [value for name in fields if isinstance(value := body.get(name), str)]
    if len(values) < len(fields) or not all(value.strip() for value in values):
        return None
    return composed_key(values)


def key_problems(
    kind: str,
    schema: Mapping[str, Any],
    key: Any,
    body: Mapping[str, Any],
    stored: Mapping[str, Any] | None = None,
) -> list[FieldProblem]:
    """The problem with `key` when the kind keys its documents by their fields; `stored` is
    the document as stored when the write merges into one (None: the write creates it)."""
    fields = schema.get(KEY_FIELDS)
    if not isinstance(fields, list) or not fields:
        return []
    expected = fields_key(fields, body)
    if expected is None or key == expected:
        return []
    if stored is not None and fields_key(fields, stored) == expected:
        return []  # its key was chosen when it was stored, and nothing it was chosen by changed
    message = f"/key: a {kind} is keyed by its {' and '.join(fields)}: {expected!r}, not {key!r}"
    return [FieldProblem("/key", message, "key", {"expected": expected})]
