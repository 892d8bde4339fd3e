"""Every problem `type` the code can answer is documented (docs/api.md "Problem types")."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import gateway
from gateway.errors import problem_types

ROOT = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (\d{3}) \| ([^|]+?) \|", re.MULTILINE)


def _code_types() -> dict[str, tuple[int, str]]:
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        importlib.import_module(module.name)
    return {slug: (cls.status, cls.title) for slug, cls in problem_types().items()}


def _documented() -> dict[str, tuple[int, str]]:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("### Problem types", 1)[1].split("\n## ", 1)[0]
    return {slug: (int(status), title) for slug, status, title in _ROW.findall(section)}


def test_every_problem_type_of_the_code_is_documented_with_its_status_and_title() -> None:
    assert _documented() == _code_types()


def test_no_problem_type_is_spelled_outside_the_error_tree() -> None:
    """A type URI written by hand (a bare status number, a slug no class has) escapes the
    table: every problem body is built from a class of gateway/errors.py's tree."""
    spelled = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "rabbot.dev/problems" in line and path.name != "errors.py"
    ]
    assert spelled == []
