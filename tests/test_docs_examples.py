"""The HTTP examples in docs/api.md, replayed in order against a fresh gateway."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "api.md"
TRIGGERS = ROOT / "docs" / "triggers.md"
PAYLOADS = ROOT / "tests" / "data" / "partner_payloads"
_BLOCK = re.compile(r"```http\n(.*?)```", re.S)


def _examples(text: str) -> list[dict[str, Any]]:
    examples = []
    for block in _BLOCK.findall(text):
        request, _, response = block.partition("\nHTTP/1.1 ")
        head, _, body = request.strip().partition("\n\n")
        method, path = head.splitlines()[0].split(" ", 1)
        status_line, _, expected = response.strip().partition("\n\n")
        examples.append(
            {
                "method": method,
                "path": path,
                "body": body.strip() or None,
                "status": int(status_line.split()[0]),
                "expected": json.loads(expected) if expected.strip() else None,
            }
        )
    return examples


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


def test_the_api_page_has_examples() -> None:
    assert len(_examples(DOC.read_text())) >= 10


async def test_every_api_example_answers_as_documented(client: Client) -> None:
    for example in _examples(DOC.read_text()):
        headers = auth()
        if example["body"]:
            headers["Content-Type"] = "application/json"
        await client.app[services_key].relay.run_until_idle()
        response = await client.request(
            example["method"], example["path"], headers=headers, data=example["body"]
        )
        where = f"{example['method']} {example['path']}"
        assert response.status == example["status"], f"{where}: {await response.text()}"
        if example["expected"] is not None:
            body = await response.json(content_type=None)
            assert _contains(body, example["expected"]), f"{where}: {body}"


async def test_the_reference_declares_every_status_the_api_examples_answer(client: Client) -> None:
    """/openapi.json, the reference this page defers to, lists for each example's operation the
    status the example gets (the replay above proves the example)."""
    doc = await (await client.get("/openapi.json")).json()
    missing = []
    for example in _examples(DOC.read_text()):
        path = example["path"].split("?")[0]
        # the most literal template: `/api/v1/mappings/test` before `/api/v1/mappings/{name}`
        templates = sorted((t for t in doc["paths"] if _same_route(path, t)), key=_placeholders)
        operation = doc["paths"][templates[0]].get(example["method"].lower()) if templates else None
        if operation is None or str(example["status"]) not in operation["responses"]:
            missing.append(f"{example['method']} {path} {example['status']}")
    assert missing == []


async def test_the_partner_status_table_is_the_reference_s(client: Client) -> None:
    """docs/triggers.md's "Status codes (partner side)" lists exactly the statuses
    /openapi.json declares for `POST /hooks/{trigger_id}` and its reads."""
    doc = await (await client.get("/openapi.json")).json()
    declared = {
        status
        for path, operations in doc["paths"].items()
        if path.startswith("/hooks/")
        for method, operation in operations.items()
        if method in ("get", "post")
        for status in operation["responses"]
    }
    section = TRIGGERS.read_text().split("## Status codes (partner side)", 1)[1].split("\n## ")[0]
    listed = set(re.findall(r"^\| (\d{3}(?: / \d{3})*) \|", section, re.M))
    documented = {status for cell in listed for status in cell.split(" / ")}
    assert len(documented) >= 15
    assert documented == declared


def _placeholders(template: str) -> int:
    return template.count("{")


def _same_route(path: str, template: str) -> bool:
    given, wanted = path.split("/"), template.split("/")
    return len(given) == len(wanted) and all(
        w.startswith("{") or g == w for g, w in zip(given, wanted, strict=True)
    )


def test_the_readme_layout_names_every_package_and_module() -> None:
    readme = (DOC.parents[1] / "README.md").read_text()
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    package = DOC.parents[1] / "gateway"
    names = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    names |= {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    missing = sorted(n for n in names if not re.search(rf"(?<![\w/]){re.escape(n)}", layout))
    assert missing == []


def test_the_architecture_page_names_modules_and_functions_that_exist() -> None:
    """Every "`module.py` `Class.function`" hop of docs/architecture.md is in the code."""
    text = (DOC.parent / "architecture.md").read_text()
    package = DOC.parents[1] / "gateway"
    hops = re.findall(r"`([\w/]+\.py)` `([\w.]+)`", text)
    assert len(hops) >= 30
    wrong = []
    for module, name in hops:
        path = package / module
        source = path.read_text() if path.exists() else ""
        for part in name.split("."):
            if not re.search(rf"(def|class) {part}\b|^{part} = ", source, re.M):
                wrong.append(f"{module} {name}")
    assert wrong == []


def _curls(block: str) -> list[dict[str, Any]]:
    """The curl commands of a shell block: method, path, headers and body (`@file` read from
    the repository, `@-` from the here-document after it). `$ADMIN` is the admin header."""
    lines, commands = block.splitlines(), []
    while lines:
        line = lines.pop(0)
        while line.endswith("\\"):
            line = line[:-1] + lines.pop(0)
        if not line.startswith("curl "):
            continue
        here = re.search(r"<<'(\w+)'\s*$", line)
        stdin = ""
        if here:
            line = line[: here.start()]
            while (text := lines.pop(0)) != here[1]:
                stdin += text + "\n"
        if line.rstrip().endswith("'{"):  # a JSON body over several lines, up to its `}'`
            while not line.rstrip().endswith("}'"):
                line += "\n" + lines.pop(0)
        words = shlex.split(line, comments=True)
        options = dict(zip(words[1:], [*words[2:], ""], strict=True))
        headers = {
            k.strip(): v.strip()
            for k, _, v in (w.partition(":") for a, w in itertools.pairwise(words) if a == "-H")
        }
        if "$ADMIN" in words:
            headers.update(auth())
        body = options.get("-d") or options.get("--data-binary")
        if body == "@-":
            body = stdin
        elif body is not None and body.startswith("@"):
            body = (ROOT / body[1:]).read_text()
        (url,) = [w for w in words if w.startswith("localhost:8080")]
        method = options.get("-X") or ("POST" if body is not None else "GET")
        commands.append(
            {
                "method": method,
                "path": url.removeprefix("localhost:8080"),
                "body": body,
                "headers": headers,
            }
        )
    return commands


async def test_the_trigger_admin_examples_run_in_order(client: Client) -> None:
    """docs/triggers.md's admin block, call by call: it named two mappings no tenant has
    (`traccar-event` must be uploaded, `vehicle-answer` existed nowhere), so its first call
    was a 422; the trigger it creates then takes a Traccar event and answers GETs through
    its response mapping."""
    text = TRIGGERS.read_text()
    block = re.search(r"## Admin API.*?```sh\n(.*?)```", text, re.S)
    assert block is not None
    commands = _curls(block[1])
    assert [(c["method"], c["path"].split("?")[0]) for c in commands[:3]] == [
        ("POST", "/api/v1/mappings"),
        ("POST", "/api/v1/mappings"),
        ("POST", "/api/v1/triggers"),
    ]
    assert len(commands) == 10
    trigger: dict[str, Any] = {}
    for command in commands:
        path = command["path"].replace("trg_…", trigger.get("id", "trg_…"))
        response = await client.request(
            command["method"], path, headers=command["headers"], data=command["body"]
        )
        where = f"{command['method']} {path}"
        assert response.status in (200, 201, 204), f"{where}: {await response.text()}"
        if path == "/api/v1/triggers" and command["method"] == "POST":
            trigger = await response.json()
            event = json.loads((PAYLOADS / "traccar_event_forward_geofence_exit.json").read_text())
            bearer = {"Authorization": f"Bearer {trigger['token']}"}
            vehicle = {"plate": "ABC1D23"}  # traccar-event writes vehicles the fleet has
            made = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
            assert made.status == 201, await made.text()
            written = await client.post(f"/hooks/{trigger['id']}", json=event, headers=bearer)
            assert written.status == 200, await written.text()
            read = await client.get(f"/hooks/{trigger['id']}/ABC1D23", headers=bearer)
            answer = await read.json()
            assert answer["placa"] == "ABC1D23" and answer["posicao"]["lat"] == -23.5611


async def test_the_xml_trigger_example_answers_soap_without_the_accept(client: Client) -> None:
    """docs/triggers.md's XML example: the trigger its create call makes answers the SOAP
    call in a SOAP 1.1 envelope when the caller does not ask for JSON, as the example says (the
    default `answers: json` answered JSON: the example's body lacked `as_called`)."""
    text = TRIGGERS.read_text()
    block = re.search(r"```sh\n(curl [^`]*?sascar-pacote-posicoes.*?)```", text, re.S)
    assert block is not None and "without the Accept: the same answer in a SOAP" in block[1]
    create, hook = _curls(block[1])
    mapping = (ROOT / "mappings" / "sascar-pacote-posicoes.yaml").read_text()
    yaml = {**auth(), "Content-Type": "application/yaml"}
    assert (await client.post("/api/v1/mappings", data=mapping, headers=yaml)).status == 201
    for vehicle in (
        {"plate": "ABC1D23", "attributes": {"tracker_id": "1231226"}},
        {"plate": "XYZ9A87"},
    ):
        made = await client.post("/api/v1/entities/vehicle", json=vehicle, headers=auth())
        assert made.status == 201, await made.text()
    made = await client.post(create["path"], headers=create["headers"], data=create["body"])
    trigger = await made.json()
    assert made.status == 201, trigger
    headers = {k: v for k, v in hook["headers"].items() if k != "Accept"}
    headers["Authorization"] = f"Bearer {trigger['token']}"
    path = hook["path"].replace("trg_…", trigger["id"])
    answer = await client.post(path, headers=headers, data=hook["body"])
    body = await answer.text()
    assert answer.status == 200 and answer.content_type == "text/xml", body
    assert "Envelope" in body and "schemas.xmlsoap.org/soap/envelope" in body
