"""An answer's body decoded from its content coding by the sender itself (aiohttp's own
decompression is off, `Sender.start`): `gzip` and `deflate`, the codings it asks for
(`ACCEPT_ENCODING`).

aiohttp decoded answers in its parser, which refused the whole answer, its status with it,
for a coding whose library was not installed (`br`, `zstd`: a partner sending one unasked).
Here the status is read first, always; a body in a coding the sender does not decode (`br`,
`zstd`, `compress`, a stack of codings) is not read, and said so (`Undecodable`), as is a
gzip or deflate body that is corrupt or cut short.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any, Final

DECODED: Final = ("gzip", "deflate")
ACCEPT_ENCODING: Final = ", ".join(DECODED)
"""The request's `Accept-Encoding`: the codings decoded here, whatever aiohttp could."""
# Names the same codings as one decoded here (RFC 9110 §8.4.1.3).
_SAME: Final = {"x-gzip": "gzip"}


class Undecodable(Exception):
    """A body the sender cannot decode: `message` says why (no bytes of the body in it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Inflater:
    """A gzip or deflate body decoded piece by piece, never much past what the reader keeps
    (`feed`'s `most`): a small body that inflates to gigabytes stops there. A `deflate` body
    is zlib (RFC 9110), or raw deflate as some servers send it; a gzip body may hold members
    one after another (RFC 1952 §2.2)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._inflate: Any = None  # zlib's decompress object, made from the first bytes
        self._started = False

    @classmethod
    def of(cls, given: Iterable[str]) -> Inflater | None:
        """The inflater for a body whose `Content-Encoding` values are `given`; None for a
        plain body (none, or `identity`). Undecodable for another coding, or several."""
        values = [value.strip() for value in given]
        codings = [c for c in (t.strip().lower() for v in values for t in v.split(",")) if c]
        codings = [_SAME.get(c, c) for c in codings if c != "identity"]
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in DECODED:
            return cls(codings[0])
        shown = ", ".join(values)
        raise Undecodable(
            f"the body's Content-Encoding {shown!r} is not one the gateway decodes "
            f"(it asks for {ACCEPT_ENCODING}); the body was not read"
        )

    def feed(self, data: bytes, most: int) -> bytes:
        """`data` decoded, at most `most` + 1 bytes of it (more is past what is kept)."""
        out = bytearray()
        try:
            while data and len(out) <= most:
                if self._inflate is None:
                    self._inflate = zlib.decompressobj(self._window(data))
                    self._started = True
                out += self._inflate.decompress(data, most + 1 - len(out))
                data = self._inflate.unconsumed_tail
                if self._inflate.eof and self._inflate.unused_data:
                    if self.coding != "gzip":
                        raise self._refused("bytes follow the end of the stream")
                    data, self._inflate = self._inflate.unused_data, None
        except zlib.error as exc:
            raise self._refused(
                str(exc).removeprefix("Error -3 while decompressing data: ")
            ) from None
        return bytes(out)

    def finish(self) -> None:
        """The body came to its end: Undecodable if its stream did not."""
        if self._started and (self._inflate is None or not self._inflate.eof):
            raise self._refused("the stream is cut short (its end is missing)")

    def _window(self, data: bytes) -> int:
        if self.coding == "gzip":
            return 16 + zlib.MAX_WBITS
        # A zlib stream's first byte names the deflate method (8) in its low bits.
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS

    def _refused(self, why: str) -> Undecodable:
        return Undecodable(f"the {self.coding} body does not decode: {why}")
