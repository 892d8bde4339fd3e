"""Import directions of STYLE.md and docs/architecture.md, read with `ast`: each library has
one home; nothing imports the entry layers (web/, app, cli, __main__) and only they open the
services; the pure domain reaches no adapter; packages point one way; models.py is a leaf;
only app.py and web/ build a web.Application."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gateway"
ENTRY = ("gateway.web", "gateway.ui", "gateway.app", "gateway.cli", "gateway.__main__")
# library → the modules (prefixes) allowed to import it
HOMES = {
    "aiohttp.web": ("gateway.web", "gateway.ui", "gateway.app", "gateway.cli"),
    "pymongo": ("gateway.store",),
    "bson": ("gateway.store",),
    "jsonschema_rs": ("gateway.schemas",),
    "jwt": ("gateway.auth",),
    "prometheus_client": ("gateway.metrics",),
    "phonenumbers": ("gateway.schemas.ids",),
    "secantus": (),
}


@functools.cache
def _trees() -> tuple[tuple[str, ast.Module], ...]:
    """Every module of the package, parsed once for all the tests here (none changes a tree):
    parsing the package took most of a CPU-second, and each test did it again."""
    return tuple(
        (_module_name(path), ast.parse(path.read_text())) for path in sorted(PACKAGE.rglob("*.py"))
    )


@functools.cache
def _modules() -> tuple[tuple[str, frozenset[str]], ...]:
    found = []
    for name, tree in _trees():
        imports: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imports.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module)
                imports.update(f"{node.module}.{alias.name}" for alias in node.names)
        found.append((name, frozenset(imports)))
    return tuple(found)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize(("library", "homes"), HOMES.items())
def test_each_library_is_imported_only_from_its_home(library: str, homes: tuple[str, ...]) -> None:
    offenders = [
        name
        for name, imports in _modules()
        if any(_within(i, (library,)) for i in imports) and not _within(name, homes)
    ]
    assert offenders == [], f"{library} imported outside {homes}"


def test_nothing_imports_the_entry_layers() -> None:
    offenders = []
    for name, imports in _modules():
        if _within(name, ENTRY):
            continue
        offenders += [f"{name} → {i}" for i in imports if _within(i, ENTRY)]
    assert offenders == []


USE_CASES = (
    "gateway.entities",
    "gateway.events",
    "gateway.kinds",
    "gateway.mapping_files",
    "gateway.triggers",
    "gateway.actions",
    "gateway.delivery",
    "gateway.schedules",
    "gateway.demo",
    "gateway.accounts",
    "gateway.dashboard",
    "gateway.notify",
    "gateway.flows",
    "gateway.assignments",
    "gateway.assignment_feed",
    "gateway.fleet",
)
ADAPTERS = ("gateway.store", "gateway.metrics", "gateway.outbound")
PURE = (
    "gateway.schemas",
    "gateway.mapping",
    "gateway.auth",
    "gateway.delivery.retry",
    "gateway.outbound.verdict",
    "gateway.errors",
    "gateway.formats",
    "gateway.config",
    "gateway.models",
    "gateway.paging",
    "gateway.doorbell",
    "gateway.fleet.odometer",
    "gateway.fleet.quality",
    "gateway.fleet.state",
    "gateway.fleet.fix",
    "gateway.fleet.geometry",
    "gateway.fleet.geofences",
    "gateway.fleet.maintenance",
)


def test_pure_domain_reaches_no_adapter_or_use_case() -> None:
    offenders = [
        f"{name} → {i}"
        for name, imports in _modules()
        if _within(name, PURE)
        for i in imports
        if _within(i, (*USE_CASES, *ADAPTERS, "gateway.services")) and not _within(i, PURE)
    ]
    assert offenders == []


# package → the packages it must not import (arrows point down: web → use cases → outbound).
FORBIDDEN = {
    "gateway.outbound": (*USE_CASES, "gateway.store", "gateway.metrics"),
    "gateway.actions": ("gateway.delivery", "gateway.triggers", "gateway.schedules"),
    # The worker sends notifications through the sender it is given (delivery/kinds.py).
    "gateway.delivery": (
        "gateway.triggers",
        "gateway.schedules",
        "gateway.notify",
        "gateway.flows",
    ),
    "gateway.triggers": ("gateway.actions", "gateway.delivery", "gateway.schedules"),
    "gateway.store": (*USE_CASES, "gateway.outbound", "gateway.metrics"),
    "gateway.services": ENTRY,
}


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN.items())
def test_packages_import_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{name} → {i}"
        for name, imports in _modules()
        if _within(name, (package,))
        for i in imports
        if _within(i, forbidden)
    ]
    assert offenders == []


def test_the_models_leaf_imports_nothing_of_the_gateway_but_errors() -> None:
    (imports,) = [imports for name, imports in _modules() if name == "gateway.models"]
    gateway = [i for i in imports if _within(i, ("gateway",))]
    assert [i for i in gateway if not _within(i, ("gateway.errors",))] == []


def test_only_the_entry_layers_open_the_services() -> None:
    """Use cases are given what they need; only the entry layers reach the composition root."""
    offenders = [
        name
        for name, imports in _modules()
        if "gateway.services" in imports and not _within(name, (*ENTRY, "gateway.services"))
    ]
    assert offenders == []


def test_only_app_and_web_build_a_web_application() -> None:
    """Workers and CLI commands open `gateway.services` without a web app around them."""
    builders = {"Application", "AppRunner"}
    offenders = []
    for name, tree in _trees():
        if _within(name, ("gateway.app", "gateway.web")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in builders:
                    offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_only_the_clock_reads_the_hosts_wall_clock() -> None:
    """What a process stamps, sends or compares with another's takes the gateway's time
    (`gateway.clock.utcnow`, `utc_timestamp`: the host's clock corrected to the database
    server's); a duration within one process, `time.monotonic`. The host's own wall clock is
    read in `gateway/clock.py` alone (`host_now`, what the offset is measured from): a process
    on a host 45 s behind stamped its events 45 s in the past, counted as relay lag."""
    wall_clock = {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}
    wall_clock |= {("datetime", "today"), ("time", "time"), ("time", "time_ns")}
    readers = []
    for name, tree in _trees():
        if name == "gateway.clock":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in wall_clock:
                    readers.append(f"{name}:{node.lineno}")
    assert readers == []


def test_every_call_of_a_partner_goes_through_partner_calls() -> None:
    """A partner's guard is given to the sender in one place, `PartnerCalls.send`, which also
    counts the answer for the partner's health: until 2026-12-06 six use cases called the
    sender themselves, and only the delivery worker's answers ended a partner's failing (a
    partner whose API answered every proxy call was disabled for its failing webhooks)."""
    callers = []
    for name, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and any(k.arg == "guard" for k in node.keywords):
                if isinstance(node.func, ast.Attribute) and node.func.attr == "send":
                    callers.append(name)
    assert callers == ["gateway.actions.partner_calls"]
