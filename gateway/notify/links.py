"""`urlize` for templates, in time linear in its text.

Jinja's finds the punctuation that ends a word with `re.search(r"([)>.,\\n]|&gt;)+$")`,
which tries every start in a run of dots: a 14 KB field of `.`s ending `x.` took seconds of
C the render budget never sees (it traces Python). This is Jinja's `do_urlize` and `urlize`
(jinja2 3.1, BSD-3-Clause) with that ending found by a scan from the end instead; the
regular expressions it keeps are anchored and linear (tests/test_template_links.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import markupsafe
from jinja2 import pass_eval_context
from jinja2.exceptions import FilterArgumentError
from jinja2.filters import _uri_scheme_re
from jinja2.nodes import EvalContext
from jinja2.utils import _email_re, _http_re

_WORDS = re.compile(r"(\s+)")
_LEAD = re.compile(r"^([(<]|&lt;)+")
_TRAILING = ")>.,\n"


@pass_eval_context
def urlize(
    eval_ctx: EvalContext,
    value: str,
    trim_url_limit: int | None = None,
    nofollow: bool = False,
    target: str | None = None,
    rel: str | None = None,
    extra_schemes: Iterable[str] | None = None,
) -> str:
    """Jinja's `urlize` filter: URLs and e-mail addresses in `value` as links."""
    policies = eval_ctx.environment.policies
    rel_parts = set((rel or "").split())
    if nofollow:
        rel_parts.add("nofollow")
    rel_parts.update((policies["urlize.rel"] or "").split())
    rel = " ".join(sorted(rel_parts)) or None
    if target is None:
        target = policies["urlize.target"]
    if extra_schemes is None:
        extra_schemes = policies["urlize.extra_schemes"] or ()
    for scheme in extra_schemes:
        if _uri_scheme_re.fullmatch(scheme) is None:
            raise FilterArgumentError(f"{scheme!r} is not a valid URI scheme prefix.")
    linked = _linked(value, trim_url_limit, rel, target, tuple(extra_schemes))
    return markupsafe.Markup(linked) if eval_ctx.autoescape else linked


def _linked(
    text: str, limit: int | None, rel: str | None, target: str | None, schemes: tuple[str, ...]
) -> str:
    words = _WORDS.split(str(markupsafe.escape(text)))
    attrs = f' rel="{markupsafe.escape(rel)}"' if rel else ""
    attrs += f' target="{markupsafe.escape(target)}"' if target else ""
    for i, word in enumerate(words):
        head, middle, tail = _split(word)
        words[i] = f"{head}{_link(middle, limit, attrs, schemes)}{tail}"
    return "".join(words)


def _split(word: str) -> tuple[str, str, str]:
    """A word as its opening punctuation, its middle and its closing punctuation, with the
    closing brackets a middle opens moved back into it."""
    head, middle = "", word
    if match := _LEAD.match(middle):
        head, middle = match.group(), middle[match.end() :]
    end = _trailing_start(middle)
    middle, tail = middle[:end], middle[end:]
    for start_char, end_char in ("(", ")"), ("<", ">"), ("&lt;", "&gt;"):
        start_count = middle.count(start_char)
        if start_count <= middle.count(end_char):
            continue
        cut = 0  # after as many closing brackets of the tail as the middle left open
        for _ in range(min(start_count, tail.count(end_char))):
            cut = tail.index(end_char, cut) + len(end_char)
        middle, tail = middle + tail[:cut], tail[cut:]
    return head, middle, tail


def _trailing_start(middle: str) -> int:
    """Where the run of `)`, `>`, `.`, `,`, line breaks and `&gt;` ending `middle` starts
    (`;` ends only `&gt;`, so the run reads one way from the end)."""
    end = len(middle)
    while end:
        if middle.endswith("&gt;", 0, end):
            end -= 4
        elif middle[end - 1] in _TRAILING:
            end -= 1
        else:
            break
    return end


def _link(middle: str, limit: int | None, attrs: str, schemes: tuple[str, ...]) -> str:
    if _http_re.match(middle):
        href = middle if middle.startswith(("https://", "http://")) else f"https://{middle}"
        shown = f"{middle[:limit]}..." if limit is not None and len(middle) > limit else middle
        return f'<a href="{href}"{attrs}>{shown}</a>'
    if middle.startswith("mailto:") and _email_re.match(middle[7:]):
        return f'<a href="{middle}">{middle[7:]}</a>'
    if (
        "@" in middle
        and not middle.startswith(("www.", "@"))
        and ":" not in middle
        and _email_re.match(middle)
    ):
        return f'<a href="mailto:{middle}">{middle}</a>'
    for scheme in schemes:
        if middle != scheme and middle.startswith(scheme):
            middle = f'<a href="{middle}"{attrs}>{middle}</a>'
    return middle
