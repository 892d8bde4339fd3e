"""Bytes to text by the charset a media type names (`application/json; charset=ISO-8859-1`),
for every document format: legacy partners (Delphi and Java ERPs, Brazilian tracker platforms)
send Latin-1 or windows-1252 and say so."""

from __future__ import annotations

import codecs
from typing import Final

from .refusal import DocumentRefused

# Python's escape codecs are no charsets (decoding with them warns of invalid escapes).
NOT_CHARSETS: Final = frozenset({"unicode-escape", "raw-unicode-escape"})
UTF8_BOM: Final = codecs.BOM_UTF8


def decode_charset(document: bytes, charset: str) -> str:
    """The document's text in `charset`; DocumentRefused for bytes that are not of that
    charset, or a charset that is unknown or no text encoding (`hex`, `rot13`)."""
    try:
        if codecs.lookup(charset).name in NOT_CHARSETS:
            raise LookupError(charset)
        return document.decode(charset)
    except UnicodeDecodeError as exc:
        raise DocumentRefused(f"the body is not valid {charset} (byte {exc.start})") from None
    except ValueError:  # a codec that fails otherwise (punycode, idna: a bare UnicodeError)
        raise DocumentRefused(f"the body is not valid {charset}") from None
    except LookupError:  # no such codec, or not a text one (`hex`, `rot13`)
        raise DocumentRefused(f"unknown charset {charset!r}") from None


def decode_marked(document: bytes) -> str | None:
    """The text of a document that starts with a byte order mark, in the encoding the mark
    says (without it), or None without one. A mark is the document's own word: it wins over a
    media type's charset (a Java client's default `charset=ISO-8859-1`) and over an XML
    declaration left from a template (RFC 7303 §3.3). DocumentRefused for bytes that are
    not of that encoding."""
    for mark, codec in _MARKS:
        if document.startswith(mark):
            return decode_charset(document, codec)
    return None


def is_utf8(charset: str | None) -> bool:
    """Whether a media type's charset (None: none given) is UTF-8, which needs no decoding.
    An unknown name is not: decode_charset refuses it."""
    if charset is None:
        return True
    try:
        return codecs.lookup(charset).name == "utf-8"
    except (LookupError, ValueError):  # ValueError: a NUL in the name (a multipart part's)
        return False


# UTF-32 first: its little-endian mark starts with UTF-16's.
_WIDE_MARKS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Every byte order mark and the codec that reads it (the mark included).
_MARKS: Final = ((UTF8_BOM, "utf-8-sig"), *_WIDE_MARKS)
_WIDE: Final = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"})


def _wide(document: bytes, charset: str | None) -> str | None:
    """The UTF-16/32 codec a document is in, by its byte order mark, or by its charset (.NET's
    `Encoding.Unicode`) when it has NUL bytes: its ASCII text would pass for UTF-8 with NULs
    in it, and UTF-8 JSON has none (JSON escapes a NUL), so UTF-8 mislabelled stays UTF-8."""
    for mark, codec in _WIDE_MARKS:
        if document.startswith(mark):
            return codec
    if b"\x00" not in document:
        return None
    try:
        name = codecs.lookup(charset).name if charset else None
    except LookupError:
        return None
    return charset if name in _WIDE else None


def utf8_json(document: bytes, charset: str | None) -> bytes:
    """A JSON body as UTF-8 bytes, without a UTF-8 byte order mark (RFC 8259 §8.1 lets a
    reader ignore one; Windows tools write it). JSON is UTF-8 (RFC 8259 §8.1), so a body that
    is valid UTF-8 is read as such whatever its label says (a Java client's default
    `charset=ISO-8859-1` on UTF-8 bytes); one that is not is decoded by the charset its media
    type names, if any (a Delphi ERP's Latin-1 `São Paulo`). UTF-16 and UTF-32 (RFC 7159
    allowed them) are read by their byte order mark or their charset. DocumentRefused as
    decode_charset; a body that is not UTF-8 and names no charset is left to the JSON parser
    to refuse."""
    if document.startswith(UTF8_BOM):
        document = document[len(UTF8_BOM) :]
    if (wide := _wide(document, charset)) is not None:
        return decode_charset(document, wide).lstrip("\ufeff").encode()
    if charset is None or is_utf8(charset):
        return document
    try:
        document.decode()
    except UnicodeDecodeError:
        return decode_charset(document, charset).encode()
    return document
