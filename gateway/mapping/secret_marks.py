"""A partner's named secrets as marks while its request is built, revealed only at the end.

A request mapping's `{secret: name}` and an XML body's `{{ secrets.name }}` never see the
secret itself: they see a mark, `[secret:name:<nonce>]` (a fresh random nonce per request),
which they can only carry into what they build. Conditions and template branches work on the
mark, so nothing they do (a branch taken, an answer that differs) depends on, or quotes, the
secret's value. A secret is sent whole, as stored, or not at all: a transform, a template filter,
an index or a method given a value that holds a mark is refused (`SecretRead`, keyword
`secret`), decided when it receives the mark, whatever it would have made of it. Once the
request is built and checked, `reveal` puts each secret in place of its mark (escaped for XML
by the XML body); a mark changed on the way (which the refusal above leaves no way to do) is
refused too. Problems found on the way show a mark as `<secret:name>` (`shown`), as the dry
runs do.

    marks = SecretMarks(partner.secrets)
    marks.marks                      {name: mark}: what mappings and templates read (a
                                     read is recorded: `reveal` walks no value until one)
    marks.reveal(value)              strings of a JSON value with the secrets in place
    marks.reveal_text(text, escape)  one text, each secret written through `escape`
    marks.shown(problems)            the problems with each mark as <secret:name>
    holds_mark(value)                whether a value (text, list, object) holds a mark
"""

from __future__ import annotations

import re
import secrets as random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..errors import FieldProblem, InvalidPayload

_MARK = re.compile(r"\[secret:\w+:[0-9a-f]{16}\]")
WHOLE = "a secret is sent whole, as stored: no transform, filter or index may read it"


class SecretRead(Exception):
    """A transform, a filter, an index or a method was given a secret's mark."""


def holds_mark(value: Any) -> bool:
    """Whether `value` (a text, or a list or object of them) holds a secret's mark."""
    if isinstance(value, str):
        return "[secret:" in value and _MARK.search(value) is not None
    if isinstance(value, list | tuple):
        return any(holds_mark(v) for v in value)
    if isinstance(value, dict):
        return any(holds_mark(k) or holds_mark(v) for k, v in value.items())
    return False


class _Marks(dict[str, str]):
    """The marks by name, remembering whether one was read: until then no value built can
    hold one, and revealing is nothing to do (a large body is not walked for nothing)."""

    read = False

    def __getitem__(self, name: str) -> str:
        self.read = True
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.read = True
        return super().get(name, default)

    def values(self) -> Any:
        self.read = True
        return super().values()

    def items(self) -> Any:
        self.read = True
        return super().items()


class SecretMarks:
    __slots__ = ("_nonce", "_values", "marks")

    def __init__(self, secrets: Mapping[str, Any] | None) -> None:
        self._nonce = random.token_hex(8)
        self.marks = _Marks({name: f"[secret:{name}:{self._nonce}]" for name in secrets or {}})
        self._values = {
            dict.__getitem__(self.marks, name): str(value)
            for name, value in (secrets or {}).items()
        }

    def reveal(self, value: Any) -> Any:
        """`value` (a JSON value, or a mapping of strings) with every mark in its strings
        replaced by its secret; InvalidPayload when a mark was changed on the way. Nothing to
        do, and nothing walked, when no mark was read."""
        if not self._values or not self.marks.read:
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
                [FieldProblem("", WHOLE, "secret")],
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
        for name, mark in dict.items(self.marks):
            text = text.replace(mark, f"<secret:{name}>")
        return text.replace(self._nonce, "…")
