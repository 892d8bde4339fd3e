"""A partner's named secrets as marks while its request is built, revealed only at the end.

A request mapping's `{secret: name}` and an XML body's `{{ secrets.name }}` never see the
secret itself: they see a mark, `[secret:name:<nonce>]` (a fresh random nonce per request),
which they can only carry into what they build. Casts, transforms, conditions and template
branches work on the mark, so nothing they do (a cast that fails, a branch taken, an answer
that differs) depends on, or quotes, the secret's value. Once the request is built and checked,
`reveal` puts each secret in place of its mark (escaped for XML by the XML body). A mark that a
transform or a filter changed is refused: a secret is sent whole, as stored, or not at all.
Problems found on the way show a mark as `<secret:name>` (`shown`), as the dry runs do.

    marks = SecretMarks(partner.secrets)
    marks.marks                      {name: mark}: what mappings and templates read
    marks.reveal(value)              strings of a JSON value with the secrets in place
    marks.reveal_text(text, escape)  one text, each secret written through `escape`
    marks.shown(problems)            the problems with each mark as <secret:name>
"""

from __future__ import annotations

import secrets as random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import FieldProblem, InvalidPayload


class SecretMarks:
    __slots__ = ("_nonce", "_values", "marks")

    def __init__(self, secrets: Mapping[str, Any] | None) -> None:
        self._nonce = random.token_hex(8)
        self.marks = {name: f"[secret:{name}:{self._nonce}]" for name in secrets or {}}
        self._values = {self.marks[name]: str(value) for name, value in (secrets or {}).items()}

    def reveal(self, value: Any) -> Any:
        """`value` (a JSON value, or a mapping of strings) with every mark in its strings
        replaced by its secret; InvalidPayload when a mark was changed on the way."""
        if not self._values:
            return value
        if isinstance(value, str):
            return self.reveal_text(value)
        if isinstance(value, dict):
            return {self.reveal(k): self.reveal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.reveal(v) for v in value]
        return value

    def reveal_text(self, text: str, escape: Callable[[str], str] = str) -> str:
        if not self._values or self._nonce not in text.lower():
            return text
        for mark, secret in self._values.items():
            text = text.replace(mark, escape(secret))
        if self._nonce in text.lower():
            raise InvalidPayload(
                "a secret was changed before it was sent",
                [
                    FieldProblem(
                        "",
                        "a secret is sent whole, as stored: no transform, filter or index "
                        "may change it",
                        "secret",
                    )
                ],
            )
        return text

    def shown(self, problems: Iterable[FieldProblem]) -> list[FieldProblem]:
        """The problems with each mark written `<secret:name>` in their texts."""
        return [
            replace(
                p,
                message=self._shown(p.message),
                extra={k: self._shown(v) if isinstance(v, str) else v for k, v in p.extra.items()},
            )
            for p in problems
        ]

    def _shown(self, text: str) -> str:
        if self._nonce not in text:
            return text
        for name, mark in self.marks.items():
            text = text.replace(mark, f"<secret:{name}>")
        return text.replace(self._nonce, "…")
