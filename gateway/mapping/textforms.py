"""Cutting text by what it is in Unicode's composed form (NFC) while keeping it as it was sent.

`truncate` counts characters in NFC and `split` finds its separator in NFC, so "São" sent
decomposed (`a` and a combining tilde, as macOS and iOS send it) is three characters and holds
`ã`; what they give back is the text as it was sent (a key or a name is stored as sent), cut
only where NFC joins nothing across. Text that is ASCII or in NFC already takes the plain path.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from functools import cache, partial
from itertools import accumulate
from unicodedata import combining, decomposition, is_normalized, normalize

_NFC = partial(normalize, "NFC")
_MOST_COMPOSED = 4
"""NFC composes at most four characters into one (U+1F82: α and three marks)."""


def plain(text: str) -> bool:
    """Whether `text` is its own NFC (ASCII, most often): cut it as it is."""
    return text.isascii() or is_normalized("NFC", text)


@cache
def _joined() -> re.Pattern[str]:
    """A character and those after it that NFC may join to it: combining marks, Hangul
    vowels and final consonants, the few Indic vowel signs (and other starters) that compose
    with the character before them. Built once, on first use, from the Unicode database, in
    the Basic Multilingual Plane: a class with the other planes' ranges is several times
    slower to match, and what NFC does there is checked (`_pieces`)."""
    joining = set()
    for code in range(0x300, 0x10000):
        char = chr(code)
        if combining(char):
            joining.add(code)
        parts = decomposition(char).split()
        if len(parts) == 2 and not parts[0].startswith("<"):
            second = int(parts[1], 16)
            if second < 0x10000 and not combining(chr(second)):
                joining.add(second)
    joining.update(range(0x1161, 0x1176))  # Hangul vowels (L + V: not in the table)
    joining.update(range(0x11A8, 0x11C3))  # and final consonants (LV + T)
    ranges: list[list[int]] = []
    for code in sorted(joining):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    cls = "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"([^{cls}]?[{cls}]+)")


def _pieces(text: str) -> tuple[list[str], list[str]] | None:
    """`text` cut where NFC joins nothing across, as sent and in NFC: runs of characters NFC
    joins to nothing (even places) and each character with those joined to it (odd places).
    None should NFC join more than `_joined` knows (the pieces' NFC, joined, is checked)."""
    sent = _joined().split(text)
    composed = list(map(_NFC, sent))
    if "".join(composed) != _NFC(text):
        return None
    return sent, composed


def _within(sent: str, composed: str, at: int) -> int | None:
    """Where a run NFC joins nothing across (even place) is `at` characters into its NFC:
    one for one, unless NFC writes a character of it with more (U+0958 is two); None when
    `at` falls inside one such."""
    if len(composed) == len(sent):
        return at
    count = 0
    for where, char in enumerate(sent):
        if count == at:
            return where
        count += len(_NFC(char))
        if count > at:
            return None
    return len(sent)


def truncated(text: str, length: int) -> str:
    """`text` cut to at most `length` characters counted in NFC, as it was sent: a letter
    and the accent NFC composes it with are kept or left out together."""
    if plain(text):
        return text[:length]
    if len(_NFC(text)) <= length:
        return text
    head = text[: _MOST_COMPOSED * (length + 1)]  # holds more than `length` in NFC
    pieces = _pieces(head)
    if pieces is None:
        return _prefix_in_nfc(text, head, length)
    sent, composed = pieces
    if len(head) < len(text):  # the last piece may go on past the head: not all of it
        if sent[-1]:  # a run: its last character may take marks from past the head
            sent[-1], composed[-1] = sent[-1][:-1], _NFC(sent[-1][:-1])
        else:
            del sent[-2:], composed[-2:]
    counts = list(accumulate(map(len, composed)))
    whole = bisect_right(counts, length)  # pieces kept whole
    kept = sum(map(len, sent[:whole]))
    if whole < len(sent) and whole % 2 == 0:  # a run, cut inside
        room = length - (counts[whole - 1] if whole else 0)
        while (inside := _within(sent[whole], composed[whole], room)) is None:
            room -= 1
        kept += inside
    return text[:kept]


def _prefix_in_nfc(text: str, head: str, length: int) -> str:
    """The longest start of `head` whose NFC is a start of `text`'s, `length` characters at
    most, found by halving (when marks of other planes are reordered past `_joined`'s units)."""
    low, high = 0, len(head)  # NFC of head[:low] is at most `length`; of head[:high + 1], more
    while low < high:
        middle = (low + high + 1) // 2
        if len(_NFC(head[:middle])) <= length:
            low = middle
        else:
            high = middle - 1
    whole = _NFC(text)
    while low and (combining(text[low]) or not whole.startswith(_NFC(text[:low]))):
        low -= 1
    return text[:low]


def split(text: str, separator: str, decomposed: str) -> list[str]:
    """`text` cut where its NFC holds `separator` (in NFC; `decomposed` is its NFD), the parts
    as sent. A separator that is only part of a composed character (`e` in a decomposed `é`)
    is not found there, as it is not in the NFC text."""
    if plain(text):
        return text.split(separator)
    whole = _NFC(text)
    wanted = whole.split(separator)
    if len(wanted) == 1:
        return [text]
    for form in (separator, decomposed):  # the usual case: the separator sent in one form
        if form in text:
            parts = text.split(form)
            if list(map(_NFC, parts)) == wanted:
                return parts
    # The separator sent in both forms, or as a character NFC turns into it (U+037E, a
    # Greek question mark, is `;` in NFC): piece by piece.
    pieces = _pieces(text)
    if pieces is None:
        return text.split(separator)
    sent, composed = pieces
    starts = list(accumulate(map(len, composed), initial=0))  # where each begins in NFC
    sent_starts = list(accumulate(map(len, sent), initial=0))  # and as sent

    def sent_at(at: int) -> int | None:
        """Where the NFC text's `at` is in the text as sent; None inside what NFC joins."""
        i = bisect_right(starts, at) - 1
        if starts[i] == at:
            return sent_starts[i]
        if i % 2:
            return None  # inside a character and its marks
        inside = _within(sent[i], composed[i], at - starts[i])
        return None if inside is None else sent_starts[i] + inside

    parts, begin, find = [], 0, 0
    while (found := whole.find(separator, find)) >= 0:
        stop = found + len(separator)
        cut, resume = sent_at(found), sent_at(stop)
        if cut is not None and resume is not None:
            parts.append(text[begin:cut])
            begin, find = resume, stop
        else:
            find = found + 1
    parts.append(text[begin:])
    return parts
