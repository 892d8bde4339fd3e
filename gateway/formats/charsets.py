"""Bytes to text by the charset a media type names (`application/json; charset=ISO-8859-1`),
for every document format: legacy partners (Delphi and Java ERPs, Brazilian tracker platforms)
send Latin-1 or windows-1252 and say so.

Labels are read as the WHATWG Encoding Standard (and every browser) reads them: ISO-8859-1,
latin1, us-ascii and the other names of Latin-1 and ASCII mean windows-1252, for that is what
Windows software labelled so writes (its dashes and curly quotes, 0x80-0x9F, are C1 control
characters in Latin-1); windows-1252's five bytes without a character are the code points
Latin-1 gives them, so no body under these labels is refused."""

from __future__ import annotations

import codecs
import re
from typing import Final

from .refusal import DocumentRefused

# Python's codecs that are text encodings but no charsets: the escape codecs (decoding with
# them warns of invalid escapes), and those that refuse bytes with a bare UnicodeError,
# leniently or not (`undefined` always; `idna` and `punycode` read host names).
NOT_CHARSETS: Final = frozenset(
    {"unicode-escape", "raw-unicode-escape", "undefined", "idna", "punycode"}
)
UTF8_BOM: Final = codecs.BOM_UTF8


# The WHATWG labels of windows-1252 (https://encoding.spec.whatwg.org/#names-and-labels), and
# Python's names of the codecs its other aliases of Latin-1 and ASCII find.
_WINDOWS_1252_LABELS: Final = frozenset(
    {
        "ansi_x3.4-1968",
        "ascii",
        "cp1252",
        "cp819",
        "csisolatin1",
        "ibm819",
        "iso-8859-1",
        "iso-ir-100",
        "iso8859-1",
        "iso88591",
        "iso_8859-1",
        "iso_8859-1:1987",
        "l1",
        "latin1",
        "us-ascii",
        "windows-1252",
        "x-cp1252",
    }
)
_WINDOWS_1252_CODECS: Final = frozenset({"iso8859-1", "ascii", "cp1252"})
# Latin-1's reading of 0x80-0x9F to windows-1252's (the five bytes it leaves undefined stay).
_C1_TO_WINDOWS_1252: Final = {
    byte: bytes([byte]).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}


def is_windows_1252(charset: str) -> bool:
    """Whether a label means windows-1252 to a WHATWG reader (Latin-1's and ASCII's do)."""
    label = charset.strip(" \t\n\f\r").lower()
    return label in _WINDOWS_1252_LABELS or text_codec(label) in _WINDOWS_1252_CODECS


def is_ascii(charset: str) -> bool:
    """Whether a label names ASCII (`us-ascii`, `ascii`, `ANSI_X3.4-1968`). Bytes past ASCII
    under it are not of it: UTF-8 more often than not (a default label, a template's
    declaration), which a reader tries first as it does for JSON, forms and multipart parts."""
    return text_codec(charset.strip(" \t\n\f\r").lower()) == "ascii"


def decode_windows_1252(document: bytes) -> str:
    """windows-1252 as the WHATWG decoder reads it: every byte is a character."""
    try:
        return document.decode("cp1252")  # C speed; fails only on the five undefined bytes
    except UnicodeDecodeError:
        return document.decode("latin-1").translate(_C1_TO_WINDOWS_1252)


_SURROGATES: Final = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` with every surrogate code point made U+FFFD: a lone one a codec yields without
    complaint (UTF-7's `+2AA-`), or a byte aiohttp kept as `surrogateescape` (a header's
    Latin-1 `Location`). No UTF-8, so neither BSON nor orjson, can carry one: what a partner
    wrote is made so where it is decoded, before anything stores or answers it."""
    return _SURROGATES.sub("\ufffd", text)


def latin_1_to_windows_1252(text: str) -> str:
    """Text a Latin-1 decoder read (`parse_qsl`'s percent-escapes) as windows-1252 reads it."""
    return text.translate(_C1_TO_WINDOWS_1252)


def text_codec(charset: str) -> str | None:
    """The codec that reads a document declared in `charset`, or None when the label names
    none: no codec Python knows (or a NUL in it), one that is no text encoding (`hex`,
    `rot13`, `base64`), or one that is no charset (`NOT_CHARSETS`). Every reader of a charset
    a partner or a client declares asks here first, and reads None as an unknown charset: so
    decoding in the codec it names fails only with UnicodeDecodeError (bytes not of it), and
    never with "replace"."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None
    if not info._is_text_encoding or info.name in NOT_CHARSETS:
        return None
    return info.name


def decode_charset(document: bytes, charset: str) -> str:
    """The document's text in `charset`; DocumentRefused for bytes that are not of that
    charset, or a charset that is unknown or no text encoding (`text_codec`). A label of
    Latin-1 or ASCII is windows-1252 (the module's docstring)."""
    if is_windows_1252(charset):
        return decode_windows_1252(document)
    codec = text_codec(charset)
    if codec is None:
        raise DocumentRefused(f"unknown charset {charset!r}")
    try:
        return document.decode(codec)
    except UnicodeDecodeError as exc:
        raise DocumentRefused(f"the body is not valid {charset} (byte {exc.start})") from None


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


def unmarked(document: bytes) -> bytes:
    """A document without its byte order mark, as UTF-8 when the mark says UTF-16 or UTF-32
    (bytes that are not of it replaced: the parser refuses them later): to see what it starts
    with (`{`, `<`) whatever its label says, as its mark is its own word."""
    for mark, codec in _WIDE_MARKS:
        if document.startswith(mark):
            return document.decode(codec, errors="replace").encode()
    return document.removeprefix(UTF8_BOM)


def is_utf8(charset: str | None) -> bool:
    """Whether a media type's charset (None: none given) is UTF-8, which needs no decoding.
    An unknown name is not: decode_charset refuses it."""
    return charset is None or text_codec(charset) == "utf-8"


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
    if b"\x00" not in document or not charset:
        return None
    return charset if text_codec(charset) in _WIDE else None


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


def decode_text(document: bytes, charset: str | None = None) -> str:
    """A text document (a mapping file) read as the admin API reads a body (docs/api.md): in
    the encoding its byte order mark says (UTF-8, UTF-16, UTF-32; the mark dropped), else
    UTF-16/32 by `charset` when it has NUL bytes (as `utf8_json`), else as UTF-8 when it is,
    else in the charset `charset` names (a request's or a multipart part's Content-Type, the
    CLI's `--charset`; a Latin-1 or ASCII label as windows-1252). DocumentRefused for bytes
    that are not UTF-8 with no other charset named (`not UTF-8: <why> at byte N`), or not of
    the charset named, or a charset no one knows."""
    if (marked := decode_marked(document)) is not None:
        return marked
    if (wide := _wide(document, charset)) is not None:
        return decode_charset(document, wide).lstrip("\ufeff")
    try:
        return document.decode("utf-8")
    except UnicodeDecodeError as exc:
        if charset is None or is_utf8(charset):
            raise DocumentRefused(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    return decode_charset(document, charset)


_CHARSET_PARAM: Final = re.compile(r';\s*charset\s*=\s*"?([^";\s]*)"?', re.IGNORECASE)


def charset_param(content_type: str) -> str | None:
    """The `charset` parameter of a Content-Type value, or None without one."""
    found = _CHARSET_PARAM.search(content_type)
    return found.group(1) if found else None


def writing_codec(charset: str) -> str | None:
    """The codec a text is written in under `charset`: the one the label names (strict
    Latin-1 for ISO-8859-1: a receiver honouring the label reads nothing else), windows-1252
    for its WHATWG labels Python has no codec for (`x-cp1252`, `iso88591`); None for a charset
    no one knows (`text_codec`)."""
    codec = text_codec(charset)
    if codec is None and is_windows_1252(charset):
        return "cp1252"
    return codec


def unknown_charset(content_type: str) -> str | None:
    """Why a Content-Type value names a charset no codec writes (a typo, `hex`), or None."""
    charset = charset_param(content_type)
    if charset is None or writing_codec(charset) is not None:
        return None
    return f"unknown charset {charset!r} (e.g. UTF-8, ISO-8859-1, windows-1252)"
