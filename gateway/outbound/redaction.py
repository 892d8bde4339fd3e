"""A partner's credentials, removed from what a partner sends back before we keep or show it.

A partner that echoes what it received (a debug endpoint, an error page quoting the request)
would otherwise put our credential for it into a delivery attempt's `response`, readable by
any viewer, a proxy's answer or 502, a flow run's answers. Every credential value of the
partner (its named secrets too) is replaced by `[redacted]`, in whatever encoding the
partner's framework wrote it: in a text (`redact`), or in each text of a parsed answer
(`redact_tree`, which also masks a number written as a credential, and leaves keys as they
are). In an answer's data (`whole`) a credential is masked only where it stands as a token;
in error texts wherever it is. The sender applies it to every outcome it makes.

One mechanism: the text is read with its escapes undone, each decoded character remembering
where it was written, and the credentials are looked for in that reading; what matches is
masked in the text as written. The escapes undone are those frameworks write: JSON's (`\\/`
from PHP, `\\uXXXX` of any character from .NET or ASCII-only writers, surrogate pairs),
percent-encoding in either case and bytes as string literals write them (`\\xc3\\xa3`: Python's
`repr` of a raw body, Ruby's `inspect`; a run of either read as UTF-8), and XML's and HTML5's
character references and named entities (a SOAP fault, PHP's `htmlentities`: `&sol;`,
`&plus;`). An echo
encoded twice (a redirect quoting our URL in its `?next=`, JSON inside a JSON string) is read
again, up to three rounds, while a round still undoes something (a credential holding `\\`,
`%` or `&`, read once more than it was written, may change: it is looked for in each earlier
reading too). Base64 folded into lines (MIME and PEM writers) is read with those line breaks
left out. A credential is also looked for with its spaces as `+` (a form-encoded query), and
as base64, standard and URL-safe: of itself, and of itself inside a longer base64 text (a
partner echoing the whole header, or its whole request, in base64). The start of one cut off
at the end of an excerpt is masked too, also inside an escape or a character.

A credential is also looked for in the texts an echo makes of it (`_variants`): the changes
its text may go through, applied to it up to twice. One change is a normalisation (NFC, NFD:
`ã` echoed as `a` and U+0303) or a hop: its text written in one of UTF-8, ISO-8859-1 and
windows-1252 (those that have its characters; and, the first time, in the charset a request's
body was written in, `outbound/bodies.py`: `Redactor.of(values, codec)`) and read back in any
of them: a partner's server in one charset reads or answers a request in another (a Latin-1
server echoing a UTF-8 request under its own `charset=ISO-8859-1`: `s3nhÃ£`; a Latin-1 answer
under a plain `application/json`, read as UTF-8: `s3nh\\ufffd`). Read as UTF-8, the bytes that
are not are kept (`surrogateescape`: percent-encoded or `\\xNN`, `s3nh%E3` in either case, as
`Reading` reads a run of escapes), or U+FFFD (a lenient decoder; a store making each kept byte
one). Two changes: the mojibake read back once more (`s3nhÃƒÂ£`), a decomposed text's
mojibake. At most `_MOST_TEXTS` texts a value. The base64 of its bytes in each charset, and of
each text of one change written in UTF-8, is looked for too. An ASCII credential reads the
same in all of them: its forms are those of its text, unless the request is written in a
charset that does not write ASCII as ASCII (UTF-16, EBCDIC: `charset=UTF-16LE`, `IBM037`): its
bytes there are looked for as they read back, as a non-ASCII value's are.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from html.entities import html5
from typing import Any

import orjson

MASK = "[redacted]"
# Shorter values would mangle ordinary text; no partner credential is that short.
MIN_LENGTH = 4
# Base64 characters of a credential inside a longer base64 text: fewer could be chance.
_MIN_CORE = 8

# Escapes as partners' frameworks write them, one pattern per kind: each starts with its own
# character, so the regex engine skips to the next one at C speed (one pattern with three
# branches tries every character). A named entity that HTML5 does not know is read as written.
_JSON = re.compile(
    r"\\(?:u[0-9a-fA-F]{4}(?:\\u[0-9a-fA-F]{4})*"  # a run of them: surrogate pairs are in one
    r'|["\\/bfnrt])'
)
# A byte as a string literal writes it: Python's `repr` of bytes (`b's3nh\\xc3\\xa3'`, a raw
# body quoted in an error), Ruby's `inspect`, C's `\\xE3`; a run of them read as UTF-8, as a
# run of percent escapes is.
_BYTES = re.compile(r"\\x[0-9a-fA-F]{2}(?:\\x[0-9a-fA-F]{2})*")
_PERCENT = re.compile(r"%[0-9a-fA-F]{2}(?:%[0-9a-fA-F]{2})*")
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});")
# Each with what a text holds where it may have one (`\\x`: texts dense with `\\/` skip it).
_KINDS = (("\\", _JSON), ("\\x", _BYTES), ("%", _PERCENT), ("&", _ENTITY))
_STARTERS = frozenset(starter[0] for starter, _ in _KINDS)
# What a text holds where a reading may undo something: an escape, a folded line.
_MARKS = (*_STARTERS, "\n")
# Rounds of reading: an echo encoded twice, with room for a third writer.
_ROUNDS = 3
# A line break inside base64 folded into lines (MIME: 76 columns, PEM: 64): before a base64
# character, after a run of 40. CRLF first, then LF: each pattern starts with its character.
_B64 = "[A-Za-z0-9+/_-]"
_FOLDS = tuple(
    (brk, re.compile(rf"{brk}(?={_B64})(?<={_B64}{{40}}{brk})")) for brk in ("\r\n", "\n")
)
# What an excerpt cut inside an escape ends with.
_LONGEST_CUT = 10
_CUT_ESCAPE = re.compile(
    r"(?:\\(?:u[0-9a-fA-F]{0,3}|x[0-9a-fA-F]?)?|%[0-9a-fA-F]?|&#?[xX]?[0-9a-zA-Z]{0,7})\Z"
)
# What a character cut in two reads as: U+FFFD (a lenient decoder), or the bytes of a
# percent-encoded one as `surrogateescape` keeps them.
_PARTIAL = "\ufffd" + "".join(map(chr, range(0xDC80, 0xDD00)))
_JSON_SHORT = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r"}
_JSON_SHORT["t"] = "\t"
# The escapes that always stand for the same characters, looked up rather than read: JSON's
# short ones, and every HTML5 named entity written with its `;` (XML's five among them).
_FIXED = {f"\\{k}": v for k, v in _JSON_SHORT.items()}
_FIXED |= {f"&{name}": chars for name, chars in html5.items() if name.endswith(";")}


def _unescaped(escape: str, at: int) -> Iterator[tuple[str, int]]:
    """The characters an escape (or a run of `%XX` or `\\uXXXX`) stands for, each with where
    it starts in the text."""
    if escape[0] == "%" or escape.startswith("\\x"):  # a run of bytes: 3 or 4 characters each
        width = 3 if escape[0] == "%" else 4
        for char in _bytes_read(escape):
            yield char, at
            at += width if char < "\x80" else width * len(char.encode("utf-8", "surrogateescape"))
    elif escape[0] == "&":
        name = escape[1:-1]
        if name[0] != "#":
            named = _FIXED.get(escape)
            if named is None:  # not an entity: its characters as written
                yield from ((char, at + i) for i, char in enumerate(escape))
            else:
                yield from ((char, at) for char in named)
            return
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        yield (chr(code) if code <= 0x10FFFF else "\ufffd"), at  # no character: no credential
    elif len(escape) == 2:
        yield _JSON_SHORT[escape[1]], at
    else:
        units = [int(escape[i + 2 : i + 6], 16) for i in range(0, len(escape), 6)]
        i = 0
        while i < len(units):
            unit, next_unit = units[i], units[i + 1] if i + 1 < len(units) else 0
            if 0xD800 <= unit < 0xDC00 and 0xDC00 <= next_unit < 0xE000:  # a surrogate pair
                yield chr(0x10000 + ((unit - 0xD800) << 10) + (next_unit - 0xDC00)), at + 6 * i
                i += 2
            else:
                yield chr(unit), at + 6 * i
                i += 1


def _bytes_read(escape: str) -> str:
    """A run of `%XX` or `\\xXX` read as UTF-8, the bytes that are not kept
    (`surrogateescape`)."""
    hexes = escape.replace("%", "") if escape[0] == "%" else escape.replace("\\x", "")
    return bytes.fromhex(hexes).decode("utf-8", "surrogateescape")


def _read(match: re.Match[str]) -> str:
    """What one escape stands for."""
    escape = match.group()
    chars = _FIXED.get(escape)
    if chars is not None:
        return chars
    if escape[0] == "%":  # (inline: a text may hold a hundred thousand)
        return bytes.fromhex(escape.replace("%", "")).decode("utf-8", "surrogateescape")
    if escape[1] == "x" and escape[0] == "\\":
        return _bytes_read(escape)
    if escape[1] == "u":  # UTF-16 code units, pairs joined, as JSON's reader does
        units = escape.encode().decode("unicode_escape").encode("utf-16-le", "surrogatepass")
        return units.decode("utf-16-le", "surrogatepass")
    return "".join(char for char, _ in _unescaped(escape, 0))


# The characters one match stands for, each with where it starts in the text.
_Chars = Callable[[re.Match[str], int], Iterator[tuple[str, int]]]


def _escaped(match: re.Match[str], at: int) -> Iterator[tuple[str, int]]:
    return _unescaped(match.group(), at)


def _unfolded(match: re.Match[str], at: int) -> Iterator[tuple[str, int]]:
    """A line break inside folded base64 stands for nothing."""
    return iter(())


class _Step:
    """One kind of escape undone in a text (`plain`), and the way back to where each character
    of `plain` was written. That way back is drawn only when asked for (something matched): as
    segments that start at `marks[k]` in `plain` and `places[k]` in the text, a run of literal
    characters or one character an escape stands for."""

    __slots__ = ("_chars", "_marks", "_pattern", "_places", "plain", "text")

    def __init__(self, text: str, plain: str, pattern: re.Pattern[str], chars: _Chars) -> None:
        self.text, self.plain, self._pattern, self._chars = text, plain, pattern, chars
        self._marks: list[int] | None = None
        self._places: list[int] = []

    def place(self, index: int) -> int:
        """Where the character at `index` in `plain` starts in the text (its end for the
        end of `plain`)."""
        if index >= len(self.plain):
            return len(self.text)
        marks, places = self._drawn()
        k = bisect_right(marks, index) - 1
        return places[k] + index - marks[k]

    def _drawn(self) -> tuple[list[int], list[int]]:
        if self._marks is not None:
            return self._marks, self._places
        text = self.text
        chars = self._chars
        marks: list[int] = []
        places: list[int] = []
        length = done = 0
        for match in self._pattern.finditer(text):
            begin, end = match.span()
            if begin > done:
                marks.append(length)
                places.append(done)
                length += begin - done
            for _, at in chars(match, begin):
                marks.append(length)
                places.append(at)
                length += 1
            done = end
        marks.append(length)
        places.append(done)
        self._marks, self._places = marks, places
        return marks, places


class Reading:
    """A text with its escapes undone (`plain`): read again while a round undoes something, at
    most `_ROUNDS` times, then with the line breaks of folded base64 left out. `place` leads
    from a character of `plain`, or of an earlier reading, back to where it was written."""

    __slots__ = ("_steps", "plain")

    def __init__(self, text: str) -> None:
        self._steps: list[_Step] = []
        plain = text
        for _ in range(_ROUNDS):
            undone = False
            for starter, pattern in _KINDS:
                if starter in plain and (read := pattern.sub(_read, plain)) != plain:
                    self._steps.append(_Step(plain, read, pattern, _escaped))
                    plain, undone = read, True
            if not undone:  # another round would read the same
                break
        for brk, pattern in _FOLDS:
            if brk in plain and (unfolded := pattern.sub("", plain)) != plain:
                self._steps.append(_Step(plain, unfolded, pattern, _unfolded))
                plain = unfolded
        self.plain = plain

    def earlier(self) -> Iterator[tuple[int, str]]:
        """The text and the readings before `plain`, each with its stage for `place`."""
        return enumerate(step.text for step in self._steps)

    def place(self, index: int, stage: int | None = None) -> int:
        """Where the character at `index` in `plain` (or in the reading at `stage`) starts in
        the text (its end for the end of that reading)."""
        for step in reversed(self._steps if stage is None else self._steps[:stage]):
            index = step.place(index)
        return index


def _base64_forms(data: bytes) -> set[str]:
    """The value's bytes in base64, standard and URL-safe, padded or not; and inside a longer
    base64 text, at each of the three alignments, the characters that depend on them only."""
    forms: set[str] = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + data).decode()
        if shift == 0:
            forms |= {encoded, encoded.rstrip("=")}
        core = encoded[4 if shift else 0 : 4 * ((shift + len(data)) // 3)]
        if len(core) >= _MIN_CORE:
            forms.add(core)
    return forms | {form.replace("+", "-").replace("/", "_") for form in forms}


@lru_cache(maxsize=1024)  # a redactor is built per answer (an OAuth2 token changes)
def _forms(
    value: str, codec: str | None = None
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """What a credential reads as once a partner's escapes are undone: its text, and the
    texts an echo makes of it (`_variants`); their base64 forms; and of the first, the ones
    holding `\\`, `%` or `&`, which a further reading may change (`Redactor.redact`)."""
    texts, written = _variants(value, codec)
    plain = {*texts, Reading(value).plain}  # a credential that itself holds `%41` or `\\n`
    plain |= {form.replace(" ", "+") for form in plain}
    plain = {form for form in plain if len(form) >= MIN_LENGTH}  # (a composed one may be less)
    # Base64 of a JSON document holds the value JSON-escaped (non-ASCII as \\uXXXX: Python's
    # default), which no decoding of the answer undoes.
    escaped = json.dumps(value)[1:-1]
    base64_forms: set[str] = set()
    for data in {*written, value.encode(), escaped.encode()}:
        base64_forms |= _base64_forms(data)
    escapable = frozenset(form for form in plain if not _STARTERS.isdisjoint(form))
    return frozenset(plain), frozenset(base64_forms - plain), escapable


# How many times an echo may have changed a credential's text: a hop (written in one
# charset, read back in another) or a normalisation, and one more of either (the mojibake
# read back once more: a Latin-1 servlet storing through a latin1 connection; a decomposed
# text's mojibake). Each value has at most `_MOST_TEXTS` texts: all of one change, then those
# of two in a fixed order.
_CHANGES = 2
_MOST_TEXTS = 64


def _variants(value: str, codec: str | None) -> tuple[set[str], set[bytes]]:
    """The texts an echo makes of a credential, by the changes its text may go through
    (`_changed`) applied up to `_CHANGES` times; and the bytes whose base64 is looked for:
    the value written in each charset (and the request's `codec`), and each text of one
    change written in UTF-8 (a Latin-1-reading server answering its mojibake in base64). An
    ASCII value is the same in each charset and form: its only text is its own (and, in a
    `codec` that does not write ASCII as ASCII, UTF-16 or EBCDIC, that writing's readings)."""
    texts = {value}
    written = _writings(value, codec)
    once = _changed(value, written)
    texts |= once
    written |= {text.encode() for text in once if not _SURROGATE.search(text)}
    frontier = sorted(once - {value})
    for _ in range(_CHANGES - 1):
        found: set[str] = set()
        for text in frontier:
            found |= _changed(text, _writings(text, None))
        frontier = sorted(found - texts)[: max(_MOST_TEXTS - len(texts), 0)]
        texts.update(frontier)
    return texts, written


def _changed(text: str, writings: set[bytes]) -> set[str]:
    """What one change makes of `text`: its composed and decomposed forms (NFC, NFD: a
    partner on Java's `Normalizer`, macOS, an accent-insensitive store echoes `ã` as `a` and
    U+0303), and its `writings` read back in each charset (`_read_back`)."""
    changed = {unicodedata.normalize("NFC", text), unicodedata.normalize("NFD", text)}
    for data in writings:
        changed |= _read_back(data)
    return changed


# The charsets the gateway and its partners write and read text in: UTF-8, and the legacy
# ERPs' Latin-1 and windows-1252. A request's bytes in one are often read back in another (a
# Latin-1 server echoing a UTF-8 request under its own label, or answering it in Latin-1
# under a plain `application/json`).
_CHARSETS = ("utf-8", "iso8859-1", "cp1252")


def _writings(value: str, codec: str | None) -> set[bytes]:
    """The bytes a value is written as, when they are not its UTF-8 read the same: a value
    that is not ASCII in each of `_CHARSETS` that has all its characters; any value in the
    request's `codec` (`_written`) when that writes it otherwise than UTF-8 does (UTF-16,
    EBCDIC: an ASCII secret between NULs). Nothing for an ASCII value in an ASCII-compatible
    charset: every one writes it the same (its forms are those of its text)."""
    writings = set()
    if not value.isascii():
        for charset in _CHARSETS:
            try:
                writings.add(value.encode(charset))
            except UnicodeEncodeError:  # a charset without one of its characters
                pass
    if codec is not None and (written := _written(value, codec)) is not None:
        writings.add(written)
    return writings


def _written(value: str, codec: str) -> bytes | None:
    """The value's bytes as a request in `codec` carries them, or None when they are its
    UTF-8 (nothing more to look for). A character the charset has not is written as an
    escape (JSON's `\\uXXXX`, an XML reference: `outbound/bodies.py`), which a reading undoes
    into the character: it stands as its UTF-8 bytes."""
    try:
        data = value.encode(codec)
    except UnicodeEncodeError:
        data = b"".join(_char_bytes(char, codec) for char in value)
    except LookupError:  # no codec of that name: the request was not written in it
        return None
    return None if data == value.encode("utf-8", "surrogatepass") else data


def _char_bytes(char: str, codec: str) -> bytes:
    try:
        return char.encode(codec)
    except UnicodeEncodeError:
        return char.encode("utf-8", "surrogatepass")


def _read_back(data: bytes) -> set[str]:
    """What a credential's bytes read as in an echo, in each of `_CHARSETS`. As UTF-8:
    percent-escapes (either case) or raw bytes kept as `surrogateescape` (as `Reading` reads
    a run of escapes), or U+FFFD where they are not UTF-8, one per invalid sequence (a
    lenient decoder: `_excerpt`) or one per byte (a kept byte made storable). As Latin-1:
    each byte one character (a C1 control for 0x80-0x9F). As windows-1252: strictly where
    every byte is one of its characters, else as a WHATWG reader does (its five undefined
    bytes as Latin-1 reads them: `formats/charsets.py`) and as a lenient one (U+FFFD)."""
    kept = data.decode("utf-8", "surrogateescape")
    lenient = data.decode("utf-8", "replace")
    latin_1 = data.decode("iso8859-1")
    try:
        windows_1252 = {data.decode("cp1252")}
    except UnicodeDecodeError:
        windows_1252 = {latin_1.translate(_C1_TO_WINDOWS_1252), data.decode("cp1252", "replace")}
    return {kept, lenient, _SURROGATE.sub("\ufffd", kept), latin_1, *windows_1252}


# Latin-1's reading of 0x80-0x9F to windows-1252's (its five undefined bytes stay).
_C1_TO_WINDOWS_1252 = {
    byte: bytes([byte]).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}
_SURROGATE = re.compile("[\udc80-\udcff]")


class Redactor:
    """Built from a partner's credential values (and the codec its request's body is written
    in, when not UTF-8); `redact(text)` per answer."""

    @staticmethod
    @lru_cache(maxsize=256)
    def of(values: tuple[str, ...], codec: str | None = None) -> Redactor:
        """The redactor of `values`, built once: a partner's are the same call after call
        (an OAuth2 token changes hourly)."""
        return Redactor(values, codec)

    def __init__(self, values: Iterable[str], codec: str | None = None) -> None:
        kept = {v for v in values if len(v) >= MIN_LENGTH}
        looked_for = [_forms(v, codec) for v in kept]
        # The credential as read: in an answer's data, masked where it stands as a token.
        self._plain = frozenset(form for plain, _, _ in looked_for for form in plain)
        # In base64, standard or URL-safe: masked wherever found (they are in base64 text).
        self._base64 = frozenset(form for _, b64, _ in looked_for for form in b64)
        self._forms = tuple(sorted(self._plain | self._base64))
        # The forms grouped by their first `MIN_LENGTH` characters, each group with the start
        # all its forms share: a text without it holds none of them, so a non-ASCII value's
        # many texts and base64 forms (most alike at their start: `s3nh...`) cost one `in` a
        # group where it is not. A group of one form is looked for by the form itself (a
        # longer text is found, or not, faster than a short one).
        starts: dict[str, list[str]] = {}
        for form in self._forms:
            starts.setdefault(form[:MIN_LENGTH], []).append(form)
        self._starts = tuple((_shared_start(forms), tuple(forms)) for forms in starts.values())
        # A form holding `\`, `%` or `&` may be read once more than it was written, with the
        # text after it (`pass\` echoed in JSON as `"pass\\"` reads `pass\"`, then `pass"`):
        # it is looked for in the text and each earlier reading too.
        self._escapable = tuple({form for _, _, escapable in looked_for for form in escapable})
        # A credential of digits a partner may quote back as a JSON number.
        self._numbers = frozenset(v for v in kept if v.isascii() and v.isdigit())
        # What an answer written out holds when a credential may be in it (`_may_be_in`).
        self._written = tuple(
            {start.encode("utf-8", "surrogatepass") for start, _ in self._starts}
            | {b"\\", b"%", b"&"}
        )

    @property
    def empty(self) -> bool:
        """Whether it looks for nothing (no credential, or none long enough)."""
        return not self._forms

    def _may_hold(self, text: str) -> bool:
        """Whether a credential may be in `text`: one of its forms as written, or an escape
        or a line break, which a reading may undo into one. At C speed (`in`), so that the
        many texts of an answer that hold nothing cost next to nothing."""
        return any(start in text for start, _ in self._starts) or any(
            mark in text for mark in _MARKS
        )

    def redact_tree(self, tree: Any) -> Any:
        """A parsed answer (JSON, or an XML answer's tree) with every credential masked in
        its texts where it stands as a token (`redact(text, cut=False, whole=True)`), and
        every number whose decimal text is a credential replaced by the mask. Keys are left
        as they are (masking one renames a member, or merges two). All its texts are searched
        at once, joined by NUL characters (no escape, form or folded line runs across one):
        only the texts holding a credential are then redacted, in the tree itself (the
        caller's own, just parsed). Walked without recursion: an answer may nest deeper than
        Python's stack."""
        if not self._forms or not self._may_be_in(tree):
            return tree
        texts, numbers = _texts(tree, self._numbers)
        joined = "\0".join(texts)
        held: set[str] = set()
        if self._may_hold(joined):
            for begin, _ in self._spans(joined, cut=False, whole=True):
                end = joined.find("\0", begin)
                held.add(joined[joined.rfind("\0", 0, begin) + 1 : end if end >= 0 else None])
        if not held and not numbers:
            return tree
        return _masked(
            tree, held, self._numbers, lambda text: self.redact(text, cut=False, whole=True)
        )

    def _may_be_in(self, tree: Any) -> bool:
        """Whether a credential may be in a parsed answer, found on the answer written out
        (orjson, at C speed): an answer of texts without escapes, marks or forms (as almost
        all are) is done without walking it. Written out, a text is its characters in UTF-8
        but for `"`, `\\` and control characters, written with a `\\`."""
        try:
            written = orjson.dumps(tree)
        except (orjson.JSONEncodeError, TypeError):  # a number wider than 64 bits
            return True
        return any(mark in written for mark in self._written)

    def redact_said(self, said: Any) -> Any:
        """What is said of an answer (a run's error, its items' problems: JSON-like values
        that quote its data) with every text masked as a message is, wherever a credential is
        in it (`redact(text, cut=False)`); numbers and keys as they are. A copy."""
        if not self._forms:
            return said
        if isinstance(said, str):
            return self.redact(said, cut=False)
        if isinstance(said, dict):
            return {key: self.redact_said(value) for key, value in said.items()}
        if isinstance(said, list | tuple):
            return [self.redact_said(value) for value in said]
        return said

    def redact(self, text: str, *, cut: bool = True, whole: bool = False) -> str:
        """`text` with every credential's forms masked; and, unless it is known whole
        (`cut=False`: an answer read to its end), a start of one it ends with. `whole`: a
        credential (not its base64) only where it stands as a token, with no letter or digit
        just before or after it (an answer's data: an order id holding a PIN is not one)."""
        if not text or not self._forms:
            return text
        if not cut and not self._may_hold(text):
            return text
        spans = self._spans(text, cut=cut, whole=whole)
        if not spans:
            return text
        pieces: list[str] = []
        written = 0
        for begin, end in _merged(spans):
            pieces += [text[written:begin], MASK]
            written = end
        pieces.append(text[written:])
        return "".join(pieces)

    def shortened(self, text: str, limit: int) -> str:
        """A whole text of the partner's (a redirect's `Location`, a token endpoint's words)
        masked, then cut to `limit` characters and `…`: cut first, a credential across the
        cut would keep its start, which nothing finds once text follows the cut."""
        masked = self.redact(text, cut=False)
        return masked if len(masked) <= limit else masked[:limit] + "…"

    def _spans(self, text: str, *, cut: bool, whole: bool) -> list[tuple[int, int]]:
        """Where, in `text`, the credentials' forms are written."""
        reading = Reading(text)
        plain = reading.plain
        spans = [
            (reading.place(found), reading.place(found + len(form)))
            for start, forms in self._starts
            if start in plain
            for form in forms
            for found in _occurrences(plain, form, whole and form in self._plain)
        ]
        for stage, earlier in reading.earlier() if self._escapable else ():
            spans += [
                (reading.place(found, stage), reading.place(found + len(form), stage))
                for form in self._escapable
                for found in _occurrences(earlier, form, whole)
            ]
        if cut and (tail := self._cut_tail(plain)) is not None:
            spans.append((reading.place(tail), len(text)))
        return spans

    def _cut_tail(self, plain: str) -> int | None:
        """An excerpt may end inside a credential, or inside an escape or a character within
        one: where, in the decoded text, the longest start of a credential found at its end
        begins."""
        ends = [len(plain)]
        # An escape cut short (at most 10 characters) is read as it is written, and a
        # character cut in two as a replacement: without them.
        if cut := _CUT_ESCAPE.search(plain, max(len(plain) - _LONGEST_CUT, 0)):
            ends.append(cut.start())
        last = plain[max(ends[-1] - 3, 0) : ends[-1]]
        if partial := len(last) - len(last.rstrip(_PARTIAL)):
            ends.append(ends[-1] - partial)
        found: int | None = None
        for end in ends:
            if end < MIN_LENGTH:
                continue
            last = plain[end - MIN_LENGTH : end]
            for form in self._forms:
                at = form.find(last)
                while 0 <= at and at + MIN_LENGTH < len(form):  # a start, not all of it
                    size = at + MIN_LENGTH
                    if size <= end and plain.endswith(form[:size], 0, end):
                        found = min(end - size, found if found is not None else end)
                    at = form.find(last, at + 1)
        return found


def _texts(tree: Any, numbers: frozenset[str]) -> tuple[list[str], bool]:
    """Every text in a parsed answer but its keys, and whether one of its numbers is written
    as one of `numbers`. On the proxy's path for a partner with credentials: exact types, each
    container's members looked at where they are, only containers stacked."""
    if type(tree) is str:
        return [tree], False
    texts: list[str] = []
    add, stack, found = texts.append, [tree], False
    while stack:
        node = stack.pop()
        if type(node) is dict:
            members: Iterable[Any] = node.values()
        elif type(node) is list:
            members = node
        else:
            continue
        for member in members:
            kind = type(member)
            if kind is str:
                add(member)
            elif kind is dict or kind is list:
                stack.append(member)
            elif kind is int and numbers and not found:
                found = str(member) in numbers
    if type(tree) is int and numbers:
        found = str(tree) in numbers
    return texts, found


def _masked(
    tree: Any, held: set[str], numbers: frozenset[str], redact: Callable[[str], str]
) -> Any:
    """The tree with `redact` applied to each of its texts in `held`, and each number written
    as one of `numbers` replaced by the mask, in place; keys as they are."""
    if type(tree) is str:
        return redact(tree) if tree in held else tree
    if type(tree) is int:
        return MASK if str(tree) in numbers else tree
    stack = [tree]
    while stack:
        node = stack.pop()
        if type(node) is list:
            places: Iterable[tuple[Any, Any]] = enumerate(node)
        elif type(node) is dict:
            places = node.items()
        else:
            continue
        changed: list[tuple[Any, Any]] = []
        for place, member in places:
            kind = type(member)
            if kind is str:
                if member in held:
                    changed.append((place, redact(member)))
            elif kind is dict or kind is list:
                stack.append(member)
            elif kind is int and numbers and str(member) in numbers:
                changed.append((place, MASK))
        for place, member in changed:
            node[place] = member
    return tree


def _shared_start(forms: list[str]) -> str:
    """The longest start all of `forms` have."""
    first, last = min(forms), max(forms)  # the others lie between: share at least as much
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]


def _occurrences(text: str, form: str, whole: bool = False) -> Iterator[int]:
    """Where `form` is in `text`; `whole`: only where no letter or digit is next to it."""
    found = text.find(form)
    while found >= 0:
        if whole and (
            (found > 0 and text[found - 1].isalnum())
            or (found + len(form) < len(text) and text[found + len(form)].isalnum())
        ):
            found = text.find(form, found + 1)
            continue
        yield found
        found = text.find(form, found + len(form))


def _merged(spans: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    spans.sort()
    begin, end = spans[0]
    for next_begin, next_end in spans[1:]:
        if next_begin > end:
            yield begin, end
            begin = next_begin
        end = max(end, next_end)
    yield begin, end


NO_REDACTION = Redactor(())
