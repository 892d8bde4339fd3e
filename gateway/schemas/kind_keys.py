"""A kind's key made of its own fields: a kind schema's `x-key` names them, in order, and a
document that has them all is keyed by them, upper case and trimmed, joined by `:`.

The built-in `fine` says `"x-key": ["authority", "ait_number"]`: an AIT number is unique only
within its issuing authority, so a fine of DETRAN-SP numbered SP123 is `DETRAN-SP:SP123`,
whoever writes it (the provider's notice, its payment, the back office keying it in). A write
under another key is refused (`422` at `/key`, naming the key): it would be a second fine, one
the provider's notice never finds. A document missing one of them (a fine keyed in without its
authority) is keyed freely.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.errors import FieldProblem

KEY_FIELDS = "x-key"


def composed_key(values: Sequence[str]) -> str:
    """The key of these field values: `261810` and ` a123 ` → `261810:A123`."""
    return ":".join(value.strip().upper() for value in values)


def key_problems(
    kind: str, schema: Mapping[str, Any], key: Any, body: Mapping[str, Any]
) -> list[FieldProblem]:
    """The problem with `key` when the kind keys its documents by their fields."""
    fields = schema.get(KEY_FIELDS)
    if not isinstance(fields, list) or not fields:
        return []
    values = [value for name in fields if isinstance(value := body.get(name), str)]
    if len(values) < len(fields) or not all(value.strip() for value in values):
        return []
    expected = composed_key(values)
    if key == expected:
        return []
    message = f"/key: a {kind} is keyed by its {' and '.join(fields)}: {expected!r}, not {key!r}"
    return [FieldProblem("/key", message, "key", {"expected": expected})]
