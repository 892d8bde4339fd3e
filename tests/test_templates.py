"""Notification templates: uploaded by admins, rendered in a sandbox that cannot reach Python
internals, loop for ever or build huge output; pt-BR or English by the driver's language."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import tracemalloc
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.errors import InvalidPayload
from gateway.notify.sandbox import RenderLimit, budget
from gateway.notify.templating import RenderFailed, compile_template
from tests.partner_double import post
from tests.support import auth

Client = TestClient[Any, Any]
FINE_SAMPLE = {
    "driver": {"name": "Ana Souza"},
    "fine": {
        "ait_number": "A123456789",
        "amount_brl": 130.16,
        "occurred_at": "2026-11-18T16:45:00Z",
    },
    "vehicle": {"plate": "ABC1D23"},
}
FINE_EMAIL = {
    "name": "fine-received",
    "channel_type": "email",
    "locales": {
        "pt-BR": {
            "subject": "Multa {{ fine.ait_number }} - {{ vehicle.plate }}",
            "text": "Olá {{ driver.name }}, multa de {{ fine.amount_brl|money }} "
            "em {{ fine.occurred_at|datetime }}.",
            "html": "<p>Olá {{ driver.name }}</p>",
        },
        "en": {
            "subject": "Fine {{ fine.ait_number }} - {{ vehicle.plate }}",
            "text": "Hello {{ driver.name }}, a fine of {{ fine.amount_brl|money }} "
            "on {{ fine.occurred_at|datetime }}.",
        },
    },
    "sample": FINE_SAMPLE,
}


def _template(text: str, sample: dict[str, Any] | None = None, part: str = "text") -> Any:
    doc: dict[str, Any] = {
        "name": "t",
        "channel_type": "sms" if part == "text" else "email",
        "default_locale": "en",
        "locales": {"en": {part: text, **({"subject": "s"} if part == "html" else {})}},
    }
    if sample is not None:
        doc["sample"] = sample
    return compile_template(doc)


def _refusal(text: str, sample: dict[str, Any] | None = None) -> str:
    with pytest.raises(InvalidPayload) as caught:
        _template(text, sample)
    problem = caught.value.problems[0]
    assert problem.pointer == "/locales/en/text"
    return f"{problem.keyword}: {problem.message}"


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ x['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
    ],
)
def test_python_internals_are_refused_at_upload(text: str) -> None:
    assert "Python internals" in _refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Olá {{ driver.get('name', 'motorista') }}",
        "Olá {{ driver.name.split(' ')[0] }}",
        "{% for k, v in fine.items() %}{{ k }}={{ v }} {% endfor %}",
        "{{ fine.place.upper() }}",  # a key the data lacks, on a value it has
    ],
)
def test_an_allowed_call_on_missing_data_is_a_render_failure_not_a_refusal(text: str) -> None:
    """Calling an allowed method (`get`, `split`, `items`) on a value the context lacks was a
    `security` violation: a template refused at upload without a sample, and a fetched answer
    without `driver` reported as one at run time. It depends on the data: a render failure,
    which only a sample makes count at upload."""
    template = _template(text)
    assert template.render({"driver": {"name": "Ana Souza"}, "fine": {"place": "SP"}}, "en")
    with pytest.raises(RenderFailed) as caught:
        template.render({"fine": 1}, "en")
    assert caught.value.keyword == "render", caught.value
    assert _refusal(text, {"x": 1}).startswith("render")


@pytest.mark.parametrize("text", ["{{ lipsum(3) }}", "{{ driver() }}", "{{ caller() }}"])
def test_calling_a_name_no_context_can_make_callable_is_still_refused(text: str) -> None:
    assert _refusal(text).startswith("security")


def test_internals_reached_indirectly_fail_when_rendered() -> None:
    assert _refusal("{{ x|attr('__class__') }}", {"x": 1}).startswith("security")


@pytest.mark.parametrize(
    "text",
    [
        "{{ 'x'.ljust(100000000) }}",
        "{{ 'abc'.format(1) }}",
        "{{ '%999999999d' % 1 }}",
        "{{ lipsum(10000) }}",
        "{% include 'other' %}",
    ],
)
def test_calls_outside_the_allowlist_are_refused(text: str) -> None:
    assert _refusal(text).startswith("security")


@pytest.mark.parametrize(
    "text",
    [
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}",
        "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
        "{{ 'a' * 1000000000 }}",
        "{{ 'a'|center(1000000000) }}",
        "{{ [1, 2]|join('x' * 200000) }}",
        "{% set ns = namespace(x=[1]) %}{% for i in range(40) %}"
        "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}",
        "{% set ns = namespace(x='a') %}{% for i in range(40) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "{{ (9 ** 9) ** (9 ** 9) }}",
    ],
)
def test_templates_that_never_end_or_explode_fail_at_upload(text: str) -> None:
    assert _refusal(text).startswith("limit")


@pytest.mark.parametrize("part", ["text", "html"])
@pytest.mark.parametrize(
    "text",
    [
        "{{ range(100000)|join('x' * 2600)|length }}",  # 260 MB; 'x' * 40000: 4 GB
        "{{ ('a' * 100000)|join('x' * 1000)|length }}",
        "{{ range(1000)|select('odd')|join('x' * 200000)|length }}",
        "{{ range(500)|map('string')|join('x' * 200000)|length }}",
        "{{ plates.keys()|join('x' * 2600)|length }}",
        "{{ ('\\n' * 250000)|indent(1000, true, true)|length }}",
        "{{ ('\\n' * 10000)|indent('x' * 2600, true, true)|length }}",
        "{% set s = 'y' * 2600 %}{% set x %}{% for i in range(40000) %}{{ s }}{% endfor %}"
        "{% endset %}{{ x|length }}",
        "{% set s = 'y' * 2600 %}{% filter length %}{% for i in range(40000) %}{{ s }}"
        "{% endfor %}{% endfilter %}",
        "{% macro m() %}{% for i in range(40000) %}{{ 'y' * 2600 }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        "{% macro m() %}{{ caller()|length }}{% endmacro %}{% call m() %}"
        "{% for i in range(40000) %}{{ 'y' * 2600 }}{% endfor %}{% endcall %}",
        "{{ [1, 2, 3]|tojson(indent=3000000)|length }}",
        "{{ [range(20)|list, range(20)|list]|tojson(indent='x' * 200000)|length }}",
        "{{ ('a ' * 300)|wordwrap(1, wrapstring='x' * 100000)|length }}",
        "{{ ('https://e.co ' * 300)|urlize(target='x' * 100000)|length }}",
        "{{ ('https://e.co ' * 300)|urlize(rel='x' * 100000)|length }}",
    ],
)
def test_a_large_value_is_refused_before_it_is_built(text: str, part: str) -> None:
    """`join` over a range, a string, a generator or a view counted no items, `indent` bounded
    its width but not width x lines, and a captured block (`{% set %}`, `{% filter %}`, a
    macro's or a call's body) joined its chunks unmeasured, and `tojson` its indentation on
    every line, `wordwrap` its wrapstring between every two lines, `urlize` its target and
    rel in every link: hundreds of megabytes built (up to gigabytes with a longer text, from
    a viewer's preview of a 40-character draft) before the limit said no."""
    plates = {f"ABC{n:04d}": n for n in range(20_000)}
    tracemalloc.start()
    try:
        with pytest.raises(InvalidPayload) as caught:
            _template(text, {"plates": plates}, part=part)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    problem = caught.value.problems[0]
    assert problem.keyword == "limit" and "exceeds" in problem.message, problem
    assert peak < 20_000_000, f"{peak:,} bytes built before the limit"


_HUGE = {"text": "x" * 100_000, "number": 1_000_000}
_PASSED = frozenset({"context", "eval_ctx", "environment", "env"})  # Jinja's, not the template's


def _huge_arguments() -> list[tuple[str, str, str]]:
    """(filter, parameter, kind of huge value) for every parameter of every filter after its
    value."""
    from gateway.notify.templating import _TEXT

    found = []
    for name, guarded in sorted(_TEXT.filters.items()):
        params = inspect.signature(guarded).parameters.values()
        named = [p for p in params if p.name not in _PASSED and p.kind is p.POSITIONAL_OR_KEYWORD]
        found += [(name, p.name, kind) for p in named[1:] for kind in _HUGE]
    return found


@pytest.mark.parametrize(("name", "parameter", "kind"), _huge_arguments())
def test_every_filter_given_a_huge_argument_builds_at_most_a_part(
    name: str, parameter: str, kind: str
) -> None:
    """`tojson(indent=10**8)`, `wordwrap(wrapstring='x' * 250000)` and `urlize(target=...)`
    built gigabytes before the output limit looked. Every text and number argument of every
    filter, huge, over a text of lines, words and links and over a nested value: a result
    or a render failure, with no more built than a few parts."""
    template = _template(f"{{{{ v|{name}({parameter}=huge)|length }}}}")
    values: list[Any] = [
        "https://e.co/x?y=1 (www.e.com) ana@e.co.\n" * 120,
        {"a": [1, [2, [3, {"b": "c" * 50}]]], "d": list(range(50))},
    ]
    tracemalloc.start()
    try:
        for value in values:
            with contextlib.suppress(RenderFailed):
                template.render({"v": value, "huge": _HUGE[kind]}, "en")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, f"{name}({parameter}=<{kind}>): {peak:,} bytes"


async def test_a_viewers_preview_of_tojson_with_a_huge_indent_is_refused_before_it_is_built(
    client: Client,
) -> None:
    """A viewer's 40-character draft made the process build ~3 GB (8 s of CPU) before the
    output limit answered; indent=10**9, the OOM killer."""
    draft = {
        "name": "t",
        "channel_type": "sms",
        "default_locale": "en",
        "locales": {"en": {"text": "{{ [1,2,3]|tojson(indent=1000000000) }}"}},
    }
    tracemalloc.start()
    try:
        response = await client.post(
            "/api/v1/templates/preview",
            json={"template": draft, "locale": "en"},
            headers=auth(role="viewer"),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status == 422, await response.text()
    assert (await response.json())["errors"][0]["keyword"] == "limit"
    assert peak < 20_000_000, f"{peak:,} bytes built before the limit"


def test_iterators_and_views_still_join_and_indent_as_jinja_does() -> None:
    text = (
        "{{ [3, 1]|reverse|join('-') }} {{ range(3)|map('string')|join(',') }} "
        "{{ {'a': 1}.items()|first|join('=') }} {{ 'ab'|join('.') }} "
        "{% for x in [1, 2] %}{{ loop|length }}{% endfor %} {{ 'a\\nb'|indent('> ') }}"
    )
    assert _template(text).render({}, "en").parts["text"] == "1-3 0,1,2 a=1 a.b 22 a\n> b"


async def test_a_template_whose_value_cannot_be_allocated_is_a_422(client: Client) -> None:
    """100,000 x 262,000 characters (26 GB, more than the host has): a MemoryError, a 500."""
    doc = {
        "name": "big",
        "channel_type": "email",
        "default_locale": "en",
        "locales": {"en": {"subject": "s", "text": "{{ range(100000)|join('x' * 262000) }}"}},
    }
    response = await client.post("/api/v1/templates", json=doc, headers=auth())
    assert response.status == 422, await response.text()
    (problem,) = (await response.json())["errors"]
    assert problem["keyword"] == "limit" and problem["pointer"] == "/locales/en/text"


def test_an_allocation_that_fails_while_rendering_is_a_render_limit() -> None:
    with pytest.raises(RenderLimit, match="out of memory"), budget():
        bytearray(2**62)


def test_a_runaway_template_fails_at_run_time_as_an_outcome_with_its_line() -> None:
    template = _template(
        "Hi\n{% for a in range(n) %}{% for b in range(n) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(RenderFailed) as caught:
        template.render({"n": 100000}, "en")
    assert caught.value.keyword == "limit" and caught.value.line == 2


def test_html_is_escaped_and_text_is_not() -> None:
    html = _template("<p>{{ name }}</p>", part="html").render({"name": "<b>&"}, "en")
    assert html.parts["html"] == "<p>&lt;b&gt;&amp;</p>"
    text = _template("{{ name }}").render({"name": "<b>&"}, "en")
    assert text.parts["text"] == "<b>&"


def test_missing_values_print_nothing_and_are_listed() -> None:
    rendered = _template("Hi {{ driver.name }}{{ driver.nickname }}").render(
        {"driver": {"name": "Ana"}}, "en"
    )
    assert rendered.parts["text"] == "Hi Ana" and rendered.undefined == ["nickname"]


def test_a_null_prints_as_nothing_but_stays_a_null_for_tests_and_comparisons() -> None:
    source = (
        "[{{ d.x }}]{% if d.get('x') is none %} no x{% endif %}"
        "{% if d.get('gone') is none %} no gone{% endif %}"
        "{% if ([none] | first) is none %} first none{% endif %}{{ d.get('x') == none }}"
    )
    rendered = _template(source, {"d": {"x": None}}).render({"d": {"x": None}}, "en")
    assert rendered.parts["text"] == "[] no x no gone first noneTrue"


def test_data_errors_count_only_with_a_sample() -> None:
    _template("{{ fine.amount + 1 }}")  # no sample: the data is unknown, upload accepted
    assert _refusal("{{ fine.amount + 1 }}", {"fine": {}}).startswith("render")


def test_subjects_are_one_line_and_sms_respects_its_length() -> None:
    doc = {
        "name": "t",
        "channel_type": "email",
        "default_locale": "en",
        "locales": {"en": {"subject": "a\r\nBcc: x@y.z", "text": "t"}},
    }
    assert compile_template(doc).render({}, "en").parts["subject"] == "a Bcc: x@y.z"
    assert _refusal("{{ 'x' * 2000 }}").startswith("limit")


def test_locale_follows_the_recipient_language_with_fallbacks() -> None:
    template = compile_template({**FINE_EMAIL, "default_locale": "pt-BR"})
    assert template.render(FINE_SAMPLE, "en").parts["text"] == (
        "Hello Ana Souza, a fine of R$130.16 on 2026-11-18 13:45."
    )
    assert template.render(FINE_SAMPLE, "en-US").locale == "en"
    assert template.render(FINE_SAMPLE, "pt").locale == "pt-BR"
    portuguese = template.render(FINE_SAMPLE, "es")
    assert portuguese.parts["text"] == "Olá Ana Souza, multa de R$ 130,16 em 18/11/2026 13:45."


def test_a_language_tag_written_with_an_underscore_or_in_other_case_is_that_language() -> None:
    """Java's `Locale.toString()`, Android and Brazilian HR systems write `pt_BR`: it matched
    no locale, and the driver got the template's default language."""
    template = compile_template({**FINE_EMAIL, "default_locale": "en"})
    assert [template.locale_for(t) for t in ("pt_BR", "PT-br", "pt_PT", "en_US")] == [
        "pt-BR",
        "pt-BR",
        "pt-BR",
        "en",
    ]


def _pt_br(text: str, sample: dict[str, Any]) -> str:
    doc = {"name": "t", "channel_type": "sms", "default_locale": "pt-BR"}
    template = compile_template({**doc, "locales": {"pt-BR": {"text": text}}})
    return str(template.render(sample, "pt-BR").parts["text"])


def test_dates_in_portuguese_name_their_months_and_weekdays_in_portuguese() -> None:
    when = {"d": "2026-11-18T16:45:00Z"}
    assert _pt_br("{{ d|datetime('%A, %d de %B de %Y') }}", when) == (
        "quarta-feira, 18 de novembro de 2026"
    )
    assert _pt_br("{{ d|datetime('%a %d %b|%c|%x|%%B') }}", when) == (
        "qua 18 nov|qua 18 nov 2026 13:45:00|18/11/2026|%B"
    )
    english = _template("{{ d|datetime('%A, %B %d') }}", when).render(when, "en")
    assert english.parts["text"] == "Wednesday, November 18"


def test_a_twelve_hour_time_in_portuguese_says_am_or_pm() -> None:
    """`%p` rendered nothing in pt-BR: 15:15 and 03:15 were both "03:15"."""
    assert _pt_br("{{ d|datetime('%I:%M %p') }}", {"d": "2026-11-18T18:15:00Z"}) == "03:15 PM"
    assert _pt_br("{{ d|datetime('%I:%M %p') }}", {"d": "2026-11-18T06:15:00Z"}) == "03:15 AM"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-11-18T13:45:00-05:00", "18/11/2026 13:45"),  # Rio Branco's clock, as the AIT
        ("2026-11-18T13:45:00-04:00", "18/11/2026 13:45"),  # Manaus's
        ("2026-11-18T16:45:00Z", "18/11/2026 13:45"),  # UTC says no local clock: São Paulo's
        ("2026-11-18T16:45:00+00:00", "18/11/2026 13:45"),
        ("2026-11-18T13:45:00", "18/11/2026 13:45"),  # without an offset: as it is
    ],
)
def test_a_time_shown_as_written_keeps_its_own_offset(value: str, shown: str) -> None:
    """`datetime(tz='as_written')`: a fine issued in Acre at 13:45 there read "15:45" (São
    Paulo's clock), a time the driver checks against the notice and does not find."""
    assert _pt_br("{{ d|datetime(tz='as_written') }}", {"d": value}) == shown
    assert _pt_br("{{ d|datetime }}", {"d": "2026-11-18T13:45:00-05:00"}) == "18/11/2026 15:45"


@pytest.mark.parametrize(
    ("amount", "written"),
    [(2.675, "R$ 2,68"), (0.125, "R$ 0,13"), ("1234.565", "R$ 1.234,57"), (-2.675, "R$ -2,68")],
)
def test_money_rounds_half_up_on_the_amount_as_written(amount: Any, written: str) -> None:
    """Python's float formatting rounded the binary float nearest 2.675 (2.67499…) down."""
    assert _pt_br("{{ v|money }}", {"v": amount}) == written


async def test_a_preview_with_a_member_it_does_not_know_is_a_422_not_the_default_language(
    client: Client,
) -> None:
    await post(client, "/api/v1/templates", FINE_EMAIL)
    body = {"template": "fine-received", "locle": "en"}
    problem = await post(client, "/api/v1/templates/preview", body, status=422)
    assert [e["pointer"] for e in problem["errors"]] == ["/locle"]


async def test_admins_upload_preview_and_replace_templates(client: Client) -> None:
    created = await post(client, "/api/v1/templates", FINE_EMAIL)
    assert created["version"] == 1 and created["default_locale"] == "pt-BR"
    preview = await post(
        client,
        "/api/v1/templates/preview",
        {"template": "fine-received", "locale": "en"},
        status=200,
    )
    assert preview["parts"]["subject"] == "Fine A123456789 - ABC1D23"
    draft = {**FINE_EMAIL, "locales": {"en": {"subject": "{{ x }}", "text": "-"}}}
    drafted = await post(
        client, "/api/v1/templates/preview", {"template": draft, "context": {"x": "y"}}, status=200
    )
    assert drafted["parts"] == {"subject": "y", "text": "-"}
    replaced = await client.put(
        f"/api/v1/templates/{created['id']}",
        json={**FINE_EMAIL, "description": "v2"},
        headers=auth(),
    )
    assert replaced.status == 200 and (await replaced.json())["version"] == 2
    listed = await (await client.get("/api/v1/templates", headers=auth())).json()
    assert [t["name"] for t in listed["items"]] == ["fine-received"]
    deleted = await client.delete("/api/v1/templates/fine-received", headers=auth())
    assert deleted.status == 204


async def test_a_bad_template_upload_lists_every_problem_with_its_line(client: Client) -> None:
    body = {
        "name": "bad name!",
        "channel_type": "fax",
        "locales": {"fr": {}, "en": {"text": "{{ x.__class__ }}"}},
    }
    response = await client.post("/api/v1/templates", json=body, headers=auth())
    problems = (await response.json())["errors"]
    assert response.status == 422
    assert {p["pointer"] for p in problems} >= {"/name", "/channel_type", "/locales/fr"}
    body = {**FINE_EMAIL, "locales": {"en": {"subject": "x", "text": "ok\n{{ x.__class__ }}"}}}
    response = await client.post("/api/v1/templates", json=body, headers=auth())
    problem = (await response.json())["errors"][0]
    assert problem["pointer"] == "/locales/en/text" and problem["line"] == 2


async def test_a_preview_that_fails_points_at_the_part(client: Client) -> None:
    await post(client, "/api/v1/templates", FINE_EMAIL)
    response = await client.post(
        "/api/v1/templates/preview",
        json={
            "template": "fine-received",
            "context": {"fine": {"amount_brl": "x"}},
            "locale": "en",
        },
        headers=auth(),
    )
    assert response.status == 200  # a money filter on text prints the text
    response = await client.post(
        "/api/v1/templates/preview",
        json={"template": {**FINE_EMAIL, "locales": {"en": {"subject": "{{ 1/0 }}", "text": "-"}}}},
        headers=auth(),
    )
    assert response.status == 422
    assert (await response.json())["errors"][0]["pointer"] == "/locales/en/subject"


async def test_templates_are_per_tenant_and_viewers_cannot_write(client: Client) -> None:
    await post(client, "/api/v1/templates", FINE_EMAIL)
    other = await client.get("/api/v1/templates/fine-received", headers=auth("other"))
    assert other.status == 404
    viewer = await client.post("/api/v1/templates", json=FINE_EMAIL, headers=auth(role="viewer"))
    assert viewer.status == 403
    duplicate = await client.post("/api/v1/templates", json=FINE_EMAIL, headers=auth())
    assert duplicate.status == 409


_ODD_VALUES: list[Any] = [None, 1, 1.5, True, "ab", [], [1, "a"], [{"a": 1}], {"a": 1}]
_SHAPES = ("{{ v|%s }}", "{{ v|%s(x) }}", "{{ v|%s(x, x) }}", "{{ x|%s(v) }}", "{{ v is %s(x) }}")


def _odd_renders(name: str, shape: str) -> list[str]:
    """`shape` with filter or test `name`, rendered over every pair of odd values: what
    escaped as anything but a render failure (the template stored without a sample)."""
    escaped = []
    try:
        template = _template(shape % name)
    except InvalidPayload:
        return []  # not a filter (or test) of this shape
    # A shape that does not name `x` (`{{ v|f }}`) renders alike whatever `x` holds (the
    # filters that read the context read its `locale` alone): one `x` for it, not nine.
    others = _ODD_VALUES if "x" in shape else _ODD_VALUES[:1]
    for value in _ODD_VALUES:
        for other in others:
            try:
                template.render({"v": value, "x": other}, "en")
            except RenderFailed:
                pass
            except Exception as exc:
                escaped.append(f"{shape % name} v={value!r} x={other!r}: {exc!r}")
    return escaped


def test_every_filter_and_test_on_a_value_of_another_shape_is_a_render_failure() -> None:
    """`dictsort` on a list, `indent` on a list, `wordwrap` on a number raised AttributeError,
    which no caller took for a render failure: a 500 on upload, preview, dry run and test
    send, and a flow run retried every lease for ever. Every filter and test over nulls,
    numbers, lists, dicts and strings either renders or fails as a render."""
    from gateway.notify.templating import _TEXT

    names = sorted({*_TEXT.filters, *_TEXT.tests})
    escaped = [e for name in names for shape in _SHAPES for e in _odd_renders(name, shape)]
    assert escaped == []


@pytest.mark.parametrize("text", ["{{ [1]|dictsort }}", "{{ [1]|indent }}", "{{ 1|wordwrap }}"])
async def test_a_filter_given_a_value_of_another_shape_fails_the_upload_with_its_pointer(
    client: Client, text: str
) -> None:
    body = {"name": "t", "channel_type": "sms", "default_locale": "en", "sample": {}}
    response = await client.post(
        "/api/v1/templates", json={**body, "locales": {"en": {"text": text}}}, headers=auth()
    )
    assert response.status == 422, await response.text()
    problem = (await response.json())["errors"][0]
    assert (problem["pointer"], problem["keyword"]) == ("/locales/en/text", "render")


SPENDS_ITS_BUDGET = (
    "{% for i in range(99999) %}{% for j in range(99999) %}{% if j == -1 %}x{% endif %}"
    "{% endfor %}{% endfor %}"
)


def _preview_of(text: str) -> dict[str, Any]:
    locales = {"pt-BR": {"subject": "s", "text": text}}
    template = {"name": "d", "channel_type": "email", "default_locale": "pt-BR", "locales": locales}
    return {"template": template, "context": {"name": "Ana"}}


async def test_a_viewers_burst_of_previews_does_not_hold_another_tenants_preview(
    client: Client,
) -> None:
    """Previews ran on the two render threads every send shares, first come first served: a
    viewer's twelve previews of a slow draft held another tenant's one-line preview 2 s (and
    every notification's render). Previews have threads of their own, where a tenant's take
    their turns one at a time, and past eight waiting one is refused."""
    viewer = auth("acme", "viewer")

    async def slow() -> tuple[int, float]:
        started = time.perf_counter()
        answer = await client.post(
            "/api/v1/templates/preview", json=_preview_of(SPENDS_ITS_BUDGET), headers=viewer
        )
        return answer.status, time.perf_counter() - started

    status, alone = await slow()
    assert status == 422  # the budget, spent
    burst = [asyncio.create_task(slow()) for _ in range(12)]
    await asyncio.sleep(0.1)
    started = time.perf_counter()
    other = await client.post(
        "/api/v1/templates/preview", json=_preview_of("Olá {{ name }}"), headers=auth("globex")
    )
    waited = time.perf_counter() - started
    answers = await asyncio.gather(*burst)
    assert other.status == 200 and (await other.json())["parts"]["text"] == "Olá Ana"
    assert waited < alone, f"globex waited {waited:.2f} s; one slow preview takes {alone:.2f}"
    statuses = sorted(status for status, _ in answers)
    assert statuses.count(422) >= 9 and set(statuses) <= {422, 429}, statuses
    assert 429 in statuses  # past eight waiting
