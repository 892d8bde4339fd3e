"""The HTTP examples in docs/api.md, replayed in order against a fresh gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from gateway.web.state import services_key
from tests.support import auth

Client = TestClient[Any, Any]
DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
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
