"""Import directions of STYLE.md and docs/architecture.md, read with `ast`: each library has
one home; nothing imports the entry layers (web/, app, cli, __main__) and only they open the
services; the pure domain reaches no adapter; packages point one way; models.py is a leaf;
only app.py and web/ build a web.Application."""

from __future__ import annotations

import ast
import functools
import gc
from dataclasses import dataclass
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


# What the tests below look for beyond imports, gathered in the same walk of each module.
APP_BUILDERS = frozenset({"Application", "AppRunner"})  # web.Application(), web.AppRunner()
WALL_CLOCK = frozenset(
    {("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}
    | {("datetime", "today"), ("time", "time"), ("time", "time_ns")}
)


@dataclass(frozen=True)
class Module:
    """What the tests read of one module of the package."""

    name: str
    imports: frozenset[str]
    app_builds: tuple[int, ...]  # lines of a call `x.Application(...)` or `x.AppRunner(...)`
    wall_clock_reads: tuple[int, ...]  # lines of a `datetime.now`, `time.time`, ... (WALL_CLOCK)
    guarded_sends: int  # calls `x.send(..., guard=...)`


@functools.cache
def _package() -> tuple[Module, ...]:
    """Every module of the package, parsed and walked once for all the tests here. The trees
    are dropped once read: kept (~480,000 nodes) every later full pass of the garbage
    collector in this test process walked them again, ~0.7 CPU-s each. They are built with
    the collector paused: its passes over the growing trees took two thirds of the parse (no
    tree holds a cycle)."""
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        collecting = gc.isenabled()
        gc.disable()
        try:
            tree = ast.parse(source)
        finally:
            if collecting:
                gc.enable()
        modules.append(_read(_module_name(path), tree))
    return tuple(modules)


def _read(name: str, tree: ast.Module) -> Module:
    imports: set[str] = set()
    app_builds: list[int] = []
    wall_clock: list[int] = []
    guarded_sends = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
            imports.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in APP_BUILDERS:
                app_builds.append(node.lineno)
            if node.func.attr == "send" and any(k.arg == "guard" for k in node.keywords):
                guarded_sends += 1
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in WALL_CLOCK:
                wall_clock.append(node.lineno)
    return Module(name, frozenset(imports), tuple(app_builds), tuple(wall_clock), guarded_sends)


def _modules() -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((module.name, module.imports) for module in _package())


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
    offenders = [
        f"{module.name}:{line}"
        for module in _package()
        if not _within(module.name, ("gateway.app", "gateway.web"))
        for line in module.app_builds
    ]
    assert offenders == []


def test_only_the_clock_reads_the_hosts_wall_clock() -> None:
    """What a process stamps, sends or compares with another's takes the gateway's time
    (`gateway.clock.utcnow`, `utc_timestamp`: the host's clock corrected to the database
    server's); a duration within one process, `time.monotonic`. The host's own wall clock is
    read in `gateway/clock.py` alone (`host_now`, what the offset is measured from): a process
    on a host 45 s behind stamped its events 45 s in the past, counted as relay lag."""
    readers = [
        f"{module.name}:{line}"
        for module in _package()
        if module.name != "gateway.clock"
        for line in module.wall_clock_reads
    ]
    assert readers == []


def test_every_call_of_a_partner_goes_through_partner_calls() -> None:
    """A partner's guard is given to the sender in one place, `PartnerCalls.send`, which also
    counts the answer for the partner's health: until 2026-12-06 six use cases called the
    sender themselves, and only the delivery worker's answers ended a partner's failing (a
    partner whose API answered every proxy call was disabled for its failing webhooks)."""
    callers = [module.name for module in _package() for _ in range(module.guarded_sends)]
    assert callers == ["gateway.actions.partner_calls"]
