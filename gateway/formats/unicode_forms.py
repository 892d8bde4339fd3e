"""Unicode normalisation forms: text compared the same whichever form it came in.

A word like "São Paulo" reaches the gateway composed (ã, NFC) or, as macOS and iOS send it,
decomposed (a and a combining tilde, NFD): the two look and mean the same, and compare so
once both are in NFC (`nfc`).
"""

from __future__ import annotations

import re
from typing import Final
from unicodedata import category, combining, decomposition, is_normalized, normalize


def _ranges(codes: list[int]) -> str:
    """Code points as the inside of a regex character class: `\\U00000300-\\U0000034e...`."""
    ranges: list[str] = []
    start = end = codes[0]
    for code in [*codes[1:], -1]:
        if code == end + 1:
            end = code
            continue
        ranges.append(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}")
        start = end = code
    return "".join(ranges)


def _non_starter() -> str:
    """A regex matching one non-starter: a character of canonical combining class other than
    0, or one whose canonical decomposition begins with one (U+0F73, U+0F75, U+0F81). Planes
    0 and 1 only: Unicode puts every script there, and the other planes hold only starters
    (CJK ideographs, tags, variation selectors, private use).

    Not one character class: sre tests a character against a class's ranges above U+FFFF
    one by one, which made the search 10 times slower (70 ms a MB) than the bitmap it keeps
    for the BMP. So any character above U+FFFF passes the class, and only such a character
    is then checked against the list, looking behind."""
    marks = [
        code
        for code in range(0x20000)
        if combining(char := chr(code))
        or (decomposition(char)[:1] not in ("", "<") and combining(normalize("NFD", char)[0]))
    ]
    bmp = _ranges([code for code in marks if code <= 0xFFFF])
    astral = _ranges([code for code in marks if code > 0xFFFF])
    return f"[{bmp}\\U00010000-\\U0010ffff](?<=[\\x00-\\uffff]|[{astral}])"


_SAFE_RUN: Final = 30
"""Non-starters in a row that Unicode's Stream-Safe Text Format allows (UAX #15, section 13)."""
_NON_STARTER: Final = _non_starter()
_LONG_RUN: Final = re.compile(f"{_NON_STARTER}(?:{_NON_STARTER}){{{_SAFE_RUN},}}")
"""A run of over 30 non-starters. Its first one is written apart, so that the search skips
to a candidate on the class's bitmap."""
_CGJ: Final = "\u034f"  # COMBINING GRAPHEME JOINER: a starter that is invisible and means nothing


def _stream_safe(run: re.Match[str]) -> str:
    marks = run.group()
    return _CGJ.join([marks[at : at + _SAFE_RUN] for at in range(0, len(marks), _SAFE_RUN)])


def nfc(text: str) -> str:
    """Text in Unicode's composed form (NFC): "não" whether it came composed (ã) or, as macOS
    and iOS send it, decomposed (a and a combining tilde), so text compares with the words
    and keys a mapping names one way. For comparing, and for the new text `truncate` and
    `split` cut from it: other text is written as it was sent. ASCII text and text already
    in NFC are returned at once (`is_normalized` is linear: it normalises in full only text
    whose marks are in order, which needs no sorting).

    Made stream-safe first (UAX #15, section 13): a run of over 30 non-starters in a row gets
    a U+034F COMBINING GRAPHEME JOINER after every 30, as no real text has such a run. NFC
    sorts a run by combining class in quadratic time (in CPython): 100,000 marks out of
    order held the event loop for 7 s. A character whose decomposition holds two
    non-starters (U+0F73) counts as one here: a run between joiners holds at most 60."""
    if text.isascii() or is_normalized("NFC", text):
        return text
    return normalize("NFC", _LONG_RUN.sub(_stream_safe, text))


def folded(text: str) -> str:
    """Text as a name search compares it: in either Unicode form, any case, without accents
    ("Rastreador São João", composed or decomposed, and "rastreador sao joao" fold alike):
    decomposed, case folded (`ß` is `ss`), its nonspacing marks dropped, composed again. The
    admin UI's row filter folds the same way (`ui.js`). For short text (a name, at most 200
    characters): no stream-safe cut."""
    if text.isascii():
        return text.casefold()
    decomposed = normalize("NFD", normalize("NFD", text).casefold())
    return normalize("NFC", "".join(c for c in decomposed if category(c) != "Mn"))
