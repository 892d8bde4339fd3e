"""What each `gateway` command does (argument parsing lives in `__main__`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import orjson
from aiohttp import web

from gateway.app import create_app
from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import issue_admin_token, parse_ttl
from gateway.config import Settings
from gateway.demo import DemoTrigger, seed_entities, seed_mappings, seed_triggers
from gateway.errors import FieldProblem, GatewayError, InvalidPayload
from gateway.schemas.registry import default_schema_dir
from gateway.services import load_secret_key, open_services

T = TypeVar("T")


def serve(settings: Settings, *, workers: int = 1, reuse_port: bool = False) -> int:
    """One process, or with `workers` > 1 that many on one port (`prefork.py`). A child of
    `--workers` is started with `reuse_port` and quietly (the parent says where it listens)."""
    if workers > 1:
        from gateway.prefork import serve_processes

        return serve_processes(settings, workers)
    app = create_app(settings)
    # run_app turns SIGTERM/SIGINT into a graceful shutdown: stop accepting, finish requests,
    # then run every cleanup context (workers stop claiming, the database closes).
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        reuse_port=reuse_port or None,
        access_log=None,
        print=None
        if reuse_port
        else lambda msg: print(f"gateway listening on {settings.base_url}", file=sys.stderr),
        shutdown_timeout=15,
        keepalive_timeout=75,
    )
    return 0


def demo(settings: Settings, tenant: str) -> int:
    """Load the demo tenant, print where to start, then serve."""

    async def seed() -> str:
        async with open_services(settings, run_workers=False) as services:
            created = await seed_entities(services.entities, tenant)
            shipped = (settings.schema_dir or default_schema_dir()).parent / "mappings"
            mappings = await seed_mappings(services.mappings, tenant, shipped)
            hooks = await seed_triggers(services.triggers, tenant)
            token = issue_admin_token(
                services.keyring, tenant=tenant, role="admin", subject="demo", ttl=parse_ttl("30d")
            )
        return _demo_summary(settings.base_url, tenant, created, mappings, hooks, token)

    print(_run(seed), flush=True)
    return serve(settings)


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run(main()), with SIGTERM and SIGINT cancelling it, so that the services it
    opened close (the embedded database stops) instead of being left behind. Interrupted,
    it raises KeyboardInterrupt (exit 130)."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, task.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def _demo_summary(
    base: str, tenant: str, created: int, mappings: int, hooks: list[DemoTrigger], token: str
) -> str:
    lines = [
        f"\nRabbot gateway demo: tenant {tenant!r} ({created} entities created, "
        f"{mappings} mappings loaded)",
        f"  API reference   {base}/docs",
        f"  OpenAPI         {base}/openapi.json",
        f"  health/metrics  {base}/readyz  {base}/metrics",
        "",
        f"  export ADMIN_TOKEN={token}",
    ]
    lines += [
        f"  export {_env_name(h.name)}_URL={h.url} {_env_name(h.name)}_TOKEN={h.token}"
        for h in hooks
    ]
    lines += [
        "",
        "  Try the curl examples in README.md (section 'Try it') with these variables.",
        "",
    ]
    return "\n".join(lines)


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def worker(settings: Settings) -> int:
    """The background jobs (`settings.jobs`: event relay, deliveries) without the HTTP
    server; several such processes share the work through leases in MongoDB."""

    async def run() -> None:
        # Signals first: a SIGTERM while the services open still shuts them down cleanly.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_services(settings, run_workers=True):
            print(f"gateway worker running: {', '.join(settings.jobs)}", file=sys.stderr)
            await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def admin_token(settings: Settings, tenant: str, role: str, ttl: str, subject: str) -> int:
    try:
        lifetime = parse_ttl(ttl)
    except ValueError as exc:
        print(f"error: --ttl: {exc}", file=sys.stderr)
        return 2
    ring = KeyRing.from_secret(load_secret_key(settings))
    print(
        issue_admin_token(
            ring,
            tenant=tenant,
            role=role,  # type: ignore[arg-type]
            subject=subject,
            ttl=lifetime,
        )
    )
    return 0


def mapping(
    command: str,
    file: str,
    sample: str | None,
    *,
    response: bool = False,
    params: list[str] | None = None,
    schema_dir: Path | None = None,
) -> int:
    """Check a mapping file (and run it on a sample) exactly as an upload would: against the
    entity schemas, with the API's problems (pointer, line, message). Exit 0 when it passes,
    1 when it does not, 2 when a file cannot be read."""
    from gateway.mapping import test_file, validate_file
    from gateway.mapping_files.service import TenantCatalog
    from gateway.schemas.registry import SchemaRegistry, default_schema_dir

    for path in (file, sample):
        if path is not None and not Path(path).is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    # No tenant here: a tenant's custom kind is unknown, and its fields are not checked.
    catalog = TenantCatalog(SchemaRegistry.load(schema_dir or default_schema_dir()), {})
    if command == "validate":
        problems = validate_file(Path(file), catalog=catalog)
        _print_problems(problems, file, file)
        if not problems:
            print(f"{file}: ok")
        return 1 if problems else 0
    assert sample is not None
    values = dict(_param(text) for text in params or ())
    try:
        result = test_file(
            Path(file), Path(sample), response=response, params=values, catalog=catalog
        )
    except InvalidPayload as exc:
        print(f"{file}: {exc.detail}", file=sys.stderr)
        _print_problems(exc.problems, file, sample)
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    return 0


def _param(text: str) -> tuple[str, object]:
    """`name=value`: the value is JSON when it reads as JSON (12, true), else text (mi)."""
    name, _, value = text.partition("=")
    try:
        return name, orjson.loads(value)
    except orjson.JSONDecodeError:
        return name, value


def _print_problems(problems: list[FieldProblem], file: str, sample: str) -> None:
    """`FILE:LINE: /pointer: message` for the mapping file, `SAMPLE: /pointer: message
    (target ...)` for a payload that does not fit it."""
    for problem in problems:
        line = problem.extra.get("line")
        where = file if problem.extra.get("file") or problem.keyword == "file" else sample
        where = f"{where}:{line}" if line else where
        target = problem.extra.get("target")
        suffix = f" (target {target})" if target else ""
        print(f"{where}: {problem.pointer or '/'}: {problem.message}{suffix}", file=sys.stderr)


def trigger(settings: Settings, command: str, options: dict[str, object]) -> int:
    """`gateway trigger create|list`, through the trigger use case (with the embedded
    database, stop `gateway serve` first: they share the data dir)."""
    tenant = str(options["tenant"])

    async def run() -> dict[str, object]:
        async with open_services(settings, run_workers=False) as services:
            if command == "create":
                return (await services.triggers.create(tenant, _trigger_spec(options))).as_dict()
            return {"items": await services.triggers.list(tenant, after=None, limit=200)}

    try:
        result = _run(run)
    except GatewayError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        for problem in getattr(exc, "problems", ()):
            print(f"  {problem.pointer or '/'}: {problem.message}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    return 0


def _trigger_spec(options: dict[str, object]) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": options["name"],
        "entity_type": options["entity_type"],
        "methods": [m.strip().upper() for m in str(options["methods"]).split(",") if m.strip()],
        "format": options["format"],
    }
    for name in ("kind", "mapping", "response_mapping"):
        if options.get(name):
            spec[name] = options[name]
    if options.get("token_in_query"):
        spec["auth"] = {"token_in_query": options["token_in_query"]}
    return spec
