"""Claims of the operator's documentation checked against the code, a class at a time: the
settings, the metrics, the commands, the files and links the pages name, and the JSON and
YAML examples they show."""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from gateway.__main__ import _parser
from gateway.config import JOBS, ConfigError, Settings
from gateway.metrics import Metrics
from gateway.outbound.verdict import HELD, ErrorKind
from gateway.schedules.spec import FIELDS as SCHEDULE_FIELDS
from gateway.triggers.spec import TRIGGER_SCHEMA
from gateway.ui.middleware import SECURITY_HEADERS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"
# The pages an operator reads; docs/benchmarks.md is a lab notebook and is left out.
PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.glob("*.md") if p.name != "benchmarks.md")]
# Named by the docs, read by docker-compose.yml or the test suite rather than the gateway.
NOT_SETTINGS = {"GATEWAY_REPLICAS", "GATEWAY_PROCESSES", "TEST_MONGODB_URI"}


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def _settings_table() -> dict[str, list[str]]:
    rows = _table_rows(_section(OPERATIONS.read_text(), "## Configuration"))
    return {name: row for row in rows for name in re.findall(r"`([A-Z_]+)`", row[0])}


def _variables_the_code_reads() -> set[str]:
    config = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r"env\.\w+\(\s*\"([A-Z_]+)\"", config))


def test_every_setting_the_code_reads_is_in_the_configuration_table() -> None:
    read = _variables_the_code_reads()
    assert len(read) >= 35
    assert sorted(read - set(_settings_table())) == []


def test_every_setting_the_docs_name_is_read_by_the_code() -> None:
    named = set()
    for page in [*PAGES, ROOT / "Dockerfile", ROOT / "docker-compose.yml"]:
        named |= set(re.findall(r"\b(?:GATEWAY_[A-Z_]+|[A-Z_]*MONGODB_URI)\b", page.read_text()))
    assert sorted(named - _variables_the_code_reads() - NOT_SETTINGS) == []


def test_the_documented_defaults_are_the_code_s() -> None:
    """Each setting's default in the table is the `Settings` field's (numbers, words, flags;
    unset ones, paths and lists are described in words)."""
    config = (ROOT / "gateway" / "config.py").read_text()
    fields = re.findall(r"(\w+)=env\.\w+\(\s*\"([A-Z_]+)\"", config)
    assert len(fields) >= 30
    table, defaults = _settings_table(), Settings.from_env({})
    wrong = {}
    for field, name in fields:
        value = getattr(defaults, field)
        if isinstance(value, bool):
            expected = f"`{str(value).lower()}`"
        elif isinstance(value, int | str) and value != 0:  # 0: GATEWAY_WORKER_PORT, "unset"
            expected = f"`{value}`"
        else:
            continue
        row = table[name]
        names = re.findall(r"`([A-Z_]+)`", row[0])
        documented = row[1].split(", ")[names.index(name)] if len(names) > 1 else row[1]
        if documented != expected:
            wrong[name] = (documented, expected)
    assert wrong == {}


def _setting_readers() -> dict[str, tuple[str, str, dict[str, Any]]]:
    """name → (`Settings` field, the `_Env` reader, its keyword arguments: `low`, `high`)."""
    readers = {}
    for node in ast.walk(ast.parse((ROOT / "gateway" / "config.py").read_text())):
        if not isinstance(node, ast.keyword) or not isinstance(node.value, ast.Call):
            continue
        call = node.value
        if isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value) == "env":
            name = ast.literal_eval(call.args[0])
            bounds = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
            readers[name] = (str(node.arg), call.func.attr, bounds)
    return readers


def test_the_accepted_range_of_every_numeric_setting_is_the_code_s() -> None:
    """The table's "accepted" column: `low–high` or `low+` for the numbers (a value outside
    stops the process), "a boolean" for the flags."""
    table, readers = _settings_table(), _setting_readers()
    numeric = {n: r for n, r in readers.items() if r[1] in ("integer", "flag")}
    assert len(numeric) >= 20
    wrong = {}
    for name, (_, reader, bounds) in numeric.items():
        if reader == "flag":
            expected = "a boolean"
        elif bounds.get("high") is None:
            expected = f"{bounds.get('low', 0):,}+"
        else:
            expected = f"{bounds.get('low', 0):,}–{bounds['high']:,}"
        if table[name][2] != expected:
            wrong[name] = (table[name][2], expected)
    assert wrong == {}


def test_every_default_another_page_gives_a_setting_is_the_code_s() -> None:
    """A settings table row (`| `NAME` | default |`) or a "`NAME` (default N)" on any page
    says what `Settings` has when the variable is unset."""
    readers, defaults = _setting_readers(), Settings.from_env({})
    wrong, count = [], 0
    for page in PAGES:
        text = page.read_text()
        given = re.findall(r"^\| `([A-Z_]+)` \| `?([^|`]+?)`? \|", text, re.M)
        given += re.findall(r"`([A-Z_]+)` \(default `?([\w.]+)`?[,)]", text)
        for name, value in given:
            if name not in readers or readers[name][1] not in ("integer", "flag"):
                continue
            count += 1
            code = getattr(defaults, readers[name][0])
            if code == 0 and value.startswith("unset"):  # GATEWAY_WORKER_PORT: no listener
                continue
            expected = str(code).lower() if isinstance(code, bool) else str(code)
            if value != expected:
                wrong.append(f"{page.name}: {name} {value}, the code {expected}")
    assert count >= 30
    assert wrong == []


def test_every_setting_a_page_assigns_is_accepted_by_the_code() -> None:
    """`GATEWAY_WORKERS=relay gateway serve`, `GATEWAY_WRITE_CONCERN=majority`, ...: each value
    a page shows is one the gateway starts with (placeholders and secrets left out)."""
    readers = _setting_readers()
    refused, count = [], 0
    for page in PAGES:
        for name, value in re.findall(r"\b([A-Z_]+)=([^\s`'\"]+)", page.read_text()):
            if name not in readers or name == "GATEWAY_SECRET_KEY" or re.search(r"[<$…]", value):
                continue
            count += 1
            try:
                Settings.from_env({name: value})
            except ConfigError as exc:
                refused.append(f"{page.name}: {name}={value}: {exc}")
    assert count >= 5
    assert refused == []


def _metric_families() -> dict[str, tuple[str, set[str]]]:
    """name as exported (counters with `_total`) → (type, label names)."""
    metrics = Metrics("test", "asyncio")
    families: dict[str, tuple[str, set[str]]] = {}
    for collector in metrics.registry._collector_to_names:
        name = collector._name  # type: ignore[attr-defined]
        kind = collector._type  # type: ignore[attr-defined]
        exported = f"{name}_total" if kind == "counter" else name
        families[exported] = (kind, set(collector._labelnames))  # type: ignore[attr-defined]
    return families


def _documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """The metrics table of docs/operations.md: name → (type, label names). A label is a
    backticked name outside parentheses and before the first colon of the labels cell."""
    rows = _table_rows(_section(OPERATIONS.read_text(), "## Metrics"))
    documented = {}
    for name, kind, labels in (row[:3] for row in rows if row[0].startswith("`gateway_")):
        while re.search(r"\([^()]*\)", labels):
            labels = re.sub(r"\([^()]*\)", "", labels)
        labels = labels.split(":", 1)[0]
        documented[name.strip("`")] = (kind, set(re.findall(r"`(\w+)`", labels)))
    return documented


def test_the_metrics_table_lists_every_metric_with_its_type_and_labels() -> None:
    documented = _documented_metrics()
    assert len(documented) >= 40
    assert documented == _metric_families()


def test_the_metric_tables_of_the_other_pages_name_labels_the_metrics_have() -> None:
    """actions.md, schedules.md, triggers.md: `| metric | labels |` rows, read as the
    operations table is (backticked names outside parentheses, before the first colon)."""
    families = _metric_families()
    wrong, count = [], 0
    for page in PAGES:
        if page == OPERATIONS:
            continue  # the whole table, exactly: test_the_metrics_table_lists_every_metric_...
        for name, labels in (r[:2] for r in _table_rows(page.read_text()) if len(r) >= 2):
            if not name.startswith("`gateway_"):
                continue
            count += 1
            while re.search(r"\([^()]*\)", labels):
                labels = re.sub(r"\([^()]*\)", "", labels)
            named = set(re.findall(r"`(\w+)`", labels.split(":", 1)[0]))
            if name.strip("`") not in families or named - families[name.strip("`")][1]:
                wrong.append(f"{page.name}: {name} {sorted(named)}")
    assert count >= 15
    assert wrong == []


def _queries() -> list[tuple[str, str]]:
    """(where, text) of every PromQL-bearing text: the pages and the Grafana dashboard."""
    texts = [(p.name, p.read_text()) for p in PAGES]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())

    def exprs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "expr"] + [
                e for v in node.values() for e in exprs(v)
            ]
        if isinstance(node, list):
            return [e for v in node for e in exprs(v)]
        return []

    found = exprs(dashboard)
    assert len(found) >= 10
    return texts + [("grafana-dashboard.json", e) for e in found]


def test_every_metric_the_docs_and_the_dashboard_name_exists_with_the_labels_used() -> None:
    families = _metric_families()
    wrong = []
    for where, text in _queries():
        for name, selector in re.findall(r"(?<![\w#/-])(gateway_\w+)(\{[^}]*\})?", text):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if base not in families:
                wrong.append(f"{where}: {name}")
                continue
            for label in re.findall(r"(\w+)\s*=~?", selector):
                if label not in families[base][1]:
                    wrong.append(f"{where}: {name} has no label {label}")
        for grouping, name in re.findall(r"by \(([\w, ]+)\) \((?:rate\()?(gateway_\w+)", text):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            labels = families.get(base, ("", set()))[1] | {"le"}
            wrong += [f"{where}: {name} by {g}" for g in set(re.split(r",\s*", grouping)) - labels]
    assert wrong == []


def _command_lines() -> list[list[str]]:
    block = _section((ROOT / "README.md").read_text(), "## Commands")
    text = re.search(r"```\n(.*?)```", block, re.S)
    assert text is not None
    commands, current = [], ""
    for line in text[1].splitlines():
        if line.startswith("gateway "):
            current = line
            commands.append(current)
        elif line.strip().startswith("[") and commands:  # a continued option list
            commands[-1] += " " + line.strip()
    return [re.split(r"\s{2,}", c)[0].split() for c in commands]


_VALUES = {"--port": "8081", "--workers": "2", "--smtp-port": "8025", "--partners-port": "8090"}


def _example_argv(words: list[str]) -> list[str]:
    """A usage line made into arguments: every optional part taken, `a|b` as `a`."""
    argv: list[str] = []
    for word in words[1:]:
        word = word.strip("[]").split("|")[0]
        if argv and argv[-1] in _VALUES:
            word = _VALUES[argv[-1]]
        argv.append(word)
    return argv


def test_every_command_line_of_the_readme_parses() -> None:
    lines = _command_lines()
    assert len(lines) >= 10
    for words in lines:
        try:
            _parser().parse_args(_example_argv(words))
        except SystemExit:
            pytest.fail(f"README: {' '.join(words)}")


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> set[str]:
    """Every `command [subcommand] --option` the parser takes (hidden ones left out)."""
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.add(" ".join((*path, name)))
                found |= _options(sub, (*path, name))
        elif action.help != argparse.SUPPRESS and action.option_strings != ["-h", "--help"]:
            found |= {" ".join((*path, o)) for o in action.option_strings if o.startswith("--")}
    return found


def _groups(parser: argparse.ArgumentParser) -> set[str]:
    """The commands that are groups of subcommands (`mapping`, `trigger`, ...)."""
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {
        name
        for name, sub in commands.choices.items()
        if any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
    }


def test_the_readme_shows_every_command_and_option() -> None:
    groups = _groups(_parser())
    shown = set(groups)
    for words in _command_lines():
        argv = _example_argv(words)
        path = argv[:2] if argv[0] in groups else argv[:1]
        shown.add(" ".join(path))
        shown |= {" ".join((*path, w)) for w in argv if w.startswith("--")}
    assert sorted(_options(_parser()) - shown) == []


def test_every_option_a_page_gives_a_gateway_command_exists() -> None:
    """`gateway worker --port 8081`, `gateway cleanup --days 90 --dry-run`, ... anywhere on the
    pages (a line of a block, or a backticked span): each `--option` is one that command
    takes."""
    parser = _parser()
    options, groups = _options(parser), _groups(parser)
    commands = {o for o in options if not o.split()[-1].startswith("--")}
    unknown, count = [], 0
    for page in PAGES:
        text = page.read_text()
        spans = re.findall(r"`(gateway [^`]+)`", text)
        spans += re.findall(r"^\s*(?:\S*/)?(gateway [^#\n]+)", text, re.M)
        for span in spans:
            words = span.split()
            path = words[1:3] if words[1] in groups and len(words) > 2 else words[1:2]
            command = " ".join(path)
            if command not in commands:
                continue  # prose ("the gateway answers ..."), or a `--db gateway` argument
            for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", span):
                count += 1
                if f"{command} {option}" not in options:
                    unknown.append(f"{page.name}: gateway {command} {option}")
    assert count >= 30
    assert unknown == []


def test_every_option_a_page_gives_a_bench_script_exists() -> None:
    """`bench/soak.py --minutes 10 --window 60`: each `--option` is one its parser declares."""
    unknown, count = [], 0
    for page in PAGES:
        for script, rest in re.findall(r"\b(bench/\w+\.py)((?: +[^\s`#]+)*)", page.read_text()):
            source = (ROOT / script).read_text()
            for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                count += 1
                if f'"{option}"' not in source:
                    unknown.append(f"{page.name}: {script} {option}")
    assert count >= 5
    assert unknown == []


def test_the_worker_help_names_every_background_job() -> None:
    worker = _parser()._subparsers._group_actions[0].choices["worker"]  # type: ignore[union-attr]
    (jobs,) = [a for a in worker._actions if "--jobs" in a.option_strings]
    assert all(job in str(jobs.help) for job in JOBS)
    usage = next(w for w in _command_lines() if w[1] == "worker")
    assert f"[--jobs {','.join(JOBS)}]" in " ".join(usage)


def test_the_readme_links_every_page_of_the_docs() -> None:
    readme = _section((ROOT / "README.md").read_text(), "## Documentation")
    pages = {p.name for p in DOCS.glob("*.md")}
    assert sorted(p for p in pages if f"(docs/{p})" not in readme) == []


def test_every_file_link_and_test_the_pages_name_exists() -> None:
    missing = []
    for page in PAGES:
        text = page.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not link.startswith(("http://", "https://")) and not (page.parent / link).exists():
                missing.append(f"{page.name}: {link}")
        for path, test in re.findall(r"\b((?:tests|bench)/[\w/]+\.\w+)(?:::(\w+))?", text):
            file = ROOT / path
            if not file.exists() or (test and f"def {test}(" not in file.read_text()):
                missing.append(f"{page.name}: {path} {test}")
    assert missing == []


def test_every_source_file_the_pages_name_exists() -> None:
    """`gateway/store/expiry.py`, `store/leases.py` (under gateway/), `mappings/osmand.yaml`,
    `tests/data/...`: every path to a file a page names, linked or not, is in the repository
    (from its root, from gateway/ or from the page)."""
    missing, count = [], 0
    extensions = "py|yaml|yml|json|html|lua|txt|md|toml|csv|xml"
    pattern = rf"(?<![\w./$-])((?:[\w-]+/)+[\w.-]+\.(?:{extensions}))\b"
    for page in PAGES:
        for path in re.findall(pattern, page.read_text()):
            count += 1
            places = (ROOT / path, ROOT / "gateway" / path, page.parent / path)
            if not any(place.exists() for place in places):
                missing.append(f"{page.name}: {path}")
    assert count >= 300
    assert missing == []


def test_the_trigger_field_table_lists_every_member_a_trigger_takes() -> None:
    """docs/triggers.md's `| field | default | meaning |` table and the trigger's JSON Schema
    (`triggers/spec.py` `TRIGGER_SCHEMA`, what create and PATCH check) name the same members."""
    text = (DOCS / "triggers.md").read_text()
    table = text.split("| field | default | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = {row[0].strip("`") for row in _table_rows(table)}
    assert documented == set(TRIGGER_SCHEMA["properties"])


def test_the_schedule_member_table_lists_every_member_a_schedule_takes() -> None:
    """docs/schedules.md's member table (`cursor.from`, ... under `cursor`) and the members
    `schedules/spec.py` accepts."""
    text = (DOCS / "schedules.md").read_text()
    table = text.split("| member | | |", 1)[1].split("\n\n", 1)[0]
    documented = {row[0].strip("`").split(".")[0] for row in _table_rows(table)}
    assert documented == set(SCHEDULE_FIELDS)


def _poll_failure_kinds() -> set[str]:
    """The kinds `PollFailure("kind", ...)` is raised with in gateway/schedules/."""
    kinds = set()
    for path in (ROOT / "gateway" / "schedules").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "PollFailure":
                first = node.args[0]
                if isinstance(first, ast.Constant):
                    kinds.add(first.value)
    return kinds


def test_every_kind_a_schedule_run_fails_with_is_in_the_failure_table() -> None:
    """docs/schedules.md's `error.kind` table (and, for calls held back, its "Held, not
    failed" paragraphs) and the kinds a run records: its own, and the sender's for a call
    without an answer (`too_large` comes with a status: read as `invalid_response`)."""
    section = _section((DOCS / "schedules.md").read_text(), "## Failures, backoff")
    table = section.split("| `error.kind` | |", 1)[1].split("\n\n", 1)[0]
    documented = {kind for row in _table_rows(table) for kind in re.findall(r"`(\w+)`", row[0])}
    raised = _poll_failure_kinds() | set(get_args(ErrorKind)) - {"too_large"}
    assert {"loop", "internal", "store", "timeout"} <= raised
    assert sorted(raised - documented - HELD) == []
    assert sorted(k for k in HELD if f"`{k}`" not in section) == []


@pytest.mark.parametrize(
    ("page", "heading", "schema"),
    [("mappings.md", "## The file", "mapping"), ("flows.md", "| key | | |", "flow")],
)
def test_the_key_table_of_a_file_format_lists_every_key_its_schema_has(
    page: str, heading: str, schema: str
) -> None:
    """A mapping file's and a flow file's keys as their pages list them (`on.events` is a key
    of `on`; `path`, `query`, `headers` one row) and as `schemas/<it>.schema.json` has them."""
    text = (DOCS / page).read_text().split(heading, 1)[1]
    table = text[: text.index("\n\n", text.index("| `"))]
    documented = set()
    for row in _table_rows(table):
        for key in re.findall(r"`([\w.]+)`", row[0]):
            documented.add(key)
    properties = json.loads((ROOT / "schemas" / f"{schema}.schema.json").read_text())["properties"]
    keys = set(properties)
    for name, spec in properties.items():
        if any(key.startswith(f"{name}.") for key in documented):  # `on`: its members are rows
            keys |= {f"{name}.{member}" for member in spec["properties"]}
            keys.discard(name)
    assert documented == keys


def test_the_entity_type_table_lists_each_schema_s_fields_and_required_ones() -> None:
    """docs/entities.md's "Types and fields": per type, the required fields and the top-level
    ones (what braces, brackets and parentheses hold is nested or a value) are its schema's."""
    section = _section((DOCS / "entities.md").read_text(), "## Types and fields")
    wrong, rows = [], _table_rows(section)
    assert len(rows) == 5
    for name, required, others in (row[:3] for row in rows):
        while re.search(r"\{[^{}]*\}|\([^()]*\)|\[[^\[\]]*\]", others):
            others = re.sub(r"\{[^{}]*\}|\([^()]*\)|\[[^\[\]]*\]", "", others)
        kind = name.strip("`")
        schema = json.loads((ROOT / "schemas" / "entities" / f"{kind}.schema.json").read_text())
        named = set(re.findall(r"`(\w+)`", required))
        if named != set(schema.get("required", [])):
            wrong.append(f"{kind} required {sorted(named)}")
        if named | set(re.findall(r"`(\w+)`", others)) != set(schema.get("properties", {})):
            wrong.append(f"{kind} fields")
    assert wrong == []


def test_the_admin_ui_security_headers_are_the_code_s() -> None:
    """docs/admin-ui.md's "Security headers" block shows each header `/admin` sets, as set."""
    section = _section((DOCS / "admin-ui.md").read_text(), "## Security headers")
    block = re.search(r"```\n(.*?)```", section, re.S)
    assert block is not None
    shown = dict(re.findall(r"^([\w-]+): (.+?)(?:\s{2,}\(.*)?$", block[1], re.M))
    assert shown == {**SECURITY_HEADERS, "Cache-Control": "no-store"}


def test_json_and_yaml_examples_parse_unless_marked_abridged() -> None:
    """A block that leaves parts out says so with "…"; every other one is what it shows."""
    broken = []
    count = 0
    for page in PAGES:
        for lang, body in re.findall(r"```(json|yaml)\n(.*?)```", page.read_text(), re.S):
            if "…" in body:
                continue
            count += 1
            try:
                json.loads(body) if lang == "json" else yaml.safe_load(body)
            except (ValueError, yaml.YAMLError) as exc:
                broken.append(f"{page.name}: {exc}")
    assert count >= 20
    assert broken == []


def test_the_metrics_table_is_one_table() -> None:
    """A blank line inside a Markdown table ends it: the rows after it render as a paragraph."""
    section = _section(OPERATIONS.read_text(), "## Metrics")
    lines = section.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("| `gateway_")]
    assert all(lines[i].startswith("|") for i in range(rows[0], rows[-1] + 1))


def _routes() -> dict[str, set[str]]:
    """Every path template of the app (the admin UI's under /admin) → its methods."""
    from aiohttp import web

    from gateway.app import create_app
    from gateway.config import Settings

    def routes(app: web.Application) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for resource in app.router.resources():
            info = resource.get_info()
            if "app" in info:  # the admin UI: its paths carry the prefix already
                found[info["prefix"]] = {"GET"}
                found |= routes(info["app"])
                continue
            if "prefix" in info:  # static files
                template = info["prefix"] + "/{file}"
            else:
                template = info.get("path") or _tails(info["formatter"], info["pattern"].pattern)
            found.setdefault(template, set()).update(r.method for r in resource)
        return found

    return routes(create_app(Settings()))


def _tails(formatter: str, pattern: str) -> str:
    """A route template with `{name*}` for each placeholder whose pattern takes slashes too
    (a key written with its slash, `{ref:[\\s\\S]+}`), `{name}` for those that take one segment."""
    for name in re.findall(r"\(\?P<(\w+)>", pattern):
        if f"(?P<{name}>[^{{}}/]+)" not in pattern:
            formatter = formatter.replace(f"{{{name}}}", f"{{{name}*}}")
    return formatter


def _matches(path: str, template: str) -> bool:
    """A path as the docs write it (`/api/v1/entities/vehicle/ABC1D23`, `{id}`, `<n>`, `…`)
    against a route template: a placeholder of the template takes any one segment, a
    `{name*}` one or more."""
    return _segments(path.rstrip("/").split("/"), template.rstrip("/").split("/"))


def _segments(given: list[str], wanted: list[str]) -> bool:
    if not wanted or not given:
        return not wanted and not given
    head = wanted[0]
    if head.startswith("{") and head.endswith("*}"):
        return any(_segments(given[n:], wanted[1:]) for n in range(1, len(given) + 1))
    return (head.startswith("{") or given[0] == head) and _segments(given[1:], wanted[1:])


def test_every_route_the_pages_name_exists_with_the_method_named() -> None:
    routes = _routes()
    assert len(routes) >= 100
    bare = {"/api/v1", "/hooks", "/hooks/"}  # the families themselves
    families = r"api/v1|admin|hooks|healthz|readyz|metrics|docs|openapi\.json"
    path_chars = r"[^\s`'\"()\[\]?#,;*]"
    method = r"(?:\b(GET|POST|PUT|PATCH|DELETE) )?"
    pattern = rf"{method}(?<![\w.$}}/-])(/(?:{families})(?:/{path_chars}*)?)"
    unknown = []
    for page in PAGES:
        for method, path in re.findall(pattern, page.read_text()):
            if path.endswith("/...") or path in bare:
                continue
            path = path.rstrip(".:")
            methods = set().union(*(m for t, m in routes.items() if _matches(path, t)))
            if not methods or (method and method not in methods):
                unknown.append(f"{page.name}: {method} {path}")
    assert unknown == []


def test_every_make_target_the_pages_name_exists() -> None:
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = set()
    for page in PAGES:
        named |= set(re.findall(r"`make ([\w-]+)", page.read_text()))
    assert len(named) >= 4
    assert sorted(named - targets) == []


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub spells them."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_link_to_a_section_names_a_heading_of_its_page() -> None:
    broken, count = [], 0
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
            path = page.parent / target if target else page
            if path.suffix != ".md" or not path.exists():
                continue  # a missing file is the links test's
            count += 1
            if anchor not in _anchors(path):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert count >= 30
    assert broken == []
