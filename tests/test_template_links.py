"""`urlize` in templates: Jinja's links, in time linear in the text (partner data included)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jinja2 import Environment
from jinja2.filters import do_urlize

from gateway.notify.templating import compile_template
from tests.support import auth

Client = TestClient[Any, Any]

PLACE = "." * 14_000 + "x."  # a 14 KB field a fines provider sends


def _fine_email() -> Any:
    return compile_template(
        {
            "name": "t",
            "channel_type": "email",
            "default_locale": "en",
            "locales": {
                "en": {
                    "subject": "Fine",
                    "text": "Where: {{ fine.place | urlize }}",
                    "html": "<p>{{ fine.place | urlize(20, true, target='_blank') }}</p>",
                }
            },
            "sample": {"fine": {"place": "Av. Paulista, 1000 (see https://maps.example)"}},
        }
    )


@pytest.mark.parametrize(
    "place",
    [
        PLACE,
        "(" * 14_000 + "x" + ")" * 14_000 + ".",
        "a(" + "(" * 14_000 + ")" * 14_000 + ".",
        "&gt;" * 5_000 + "x" + "&gt;" * 5_000,
        "www." + "a." * 14_000 + "!",
        "a@" * 14_000 + "x.",
    ],
)
def test_urlize_on_partner_data_stays_well_within_the_render_budget(place: str) -> None:
    """docs/notifications.md: 'every render has a budget of … 1 s'. Jinja's urlize finds a
    word's closing punctuation with a regular expression that tries every start in a run of
    dots, in C, where the budget never looks: this place took 5-12 s of one of the two
    threads that render every notification (50 KB: minutes)."""
    template = _fine_email()
    started = time.thread_time()
    rendered = template.render({"fine": {"place": place}}, "en")
    spent = time.thread_time() - started
    assert spent < 0.5, f"one render took {spent:.1f} s of CPU; the budget is 1 s"
    assert rendered.parts["text"].startswith("Where: ")


async def test_a_preview_of_urlize_on_a_run_of_dots_answers_at_once(client: Client) -> None:
    """The preview answered 200 after 31 s: the budget is looked at on the next Python trace
    event, after the C call returned."""
    draft = {
        "name": "t",
        "channel_type": "sms",
        "default_locale": "en",
        "locales": {"en": {"text": "{{ ('.' * 14000 ~ 'x.') | urlize | length }}"}},
    }
    started = time.monotonic()
    response = await client.post(
        "/api/v1/templates/preview",
        json={"template": draft, "locale": "en"},
        headers=auth(role="viewer"),
    )
    took = time.monotonic() - started
    assert response.status == 200, await response.text()
    assert (await response.json())["parts"]["text"] == "14002"
    assert took < 6.0, f"the preview took {took:.1f} s"


TEXTS = [
    "see https://maps.example/a?b=1. or www.acme.com.br, (http://x.com/a_(b)) now",
    "mail ana@acme.com.br; mailto:bia@acme.com, @a@b, www.a@b.com x@y",
    "<http://x.com/> &lt;https://y.org&gt; (www.z.net)). ((https://q.io/(a)))",
    "acme.com foo.org. bar.net, baz.info http://192.168.0.1:8080/x https://[::1]/",
    "ftp://files.acme.com tel:+5511999 https://verylongdomainname.example/path/" + "p" * 60,
    "a\nb https://e.co\n\n  www.e.com\t(x)",
    "",
]


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"trim_url_limit": 15},
        {"nofollow": True, "target": "_blank", "rel": "noopener <x>"},
        {"extra_schemes": ["ftp://", "tel:"]},
    ],
)
def test_urlize_makes_the_links_jinja_makes(autoescape: bool, kwargs: dict[str, Any]) -> None:
    from gateway.notify.links import urlize

    environment = Environment(autoescape=autoescape)
    context = environment.from_string("").new_context().eval_ctx
    for text in TEXTS:
        assert urlize(context, text, **kwargs) == do_urlize(context, text, **kwargs), text
