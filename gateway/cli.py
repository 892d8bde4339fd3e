"""What each `gateway` command does (argument parsing lives in `__main__`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import orjson
from aiohttp import web

from gateway.app import create_app, load_secret_key
from gateway.auth.keys import KeyRing
from gateway.auth.tokens import issue_admin_token, parse_ttl
from gateway.config import Settings
from gateway.demo import DemoTrigger, seed_entities, seed_mappings, seed_triggers
from gateway.errors import FieldProblem, InvalidPayload
from gateway.keys import entities_key, keyring_key, mappings_key, triggers_key
from gateway.schemas.registry import default_schema_dir
from gateway.web import server


def serve(settings: Settings) -> int:
    app = create_app(settings)
    # SIGTERM/SIGINT shut down gracefully: stop accepting, finish requests, then run every
    # cleanup context (workers stop claiming, the database closes).
    server.run(
        app,
        host=settings.host,
        port=settings.port,
        on_listening=lambda: print(f"gateway listening on {settings.base_url}", file=sys.stderr),
        access_log=None,
        shutdown_timeout=15,
        keepalive_timeout=75,
    )
    return 0


def demo(settings: Settings, tenant: str) -> int:
    """Serve with the demo tenant loaded, and print where to start."""
    app = create_app(settings)

    async def on_startup(app: web.Application) -> None:
        created = await seed_entities(app[entities_key], tenant)
        shipped = (settings.schema_dir or default_schema_dir()).parent / "mappings"
        mappings = await seed_mappings(app[mappings_key], tenant, shipped)
        hooks = await seed_triggers(app[triggers_key], tenant)
        token = issue_admin_token(
            app[keyring_key], tenant=tenant, role="admin", subject="demo", ttl=parse_ttl("30d")
        )
        print(_demo_summary(settings.base_url, tenant, created, mappings, hooks, token), flush=True)

    app.on_startup.append(on_startup)
    server.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=None,
        shutdown_timeout=15,
        keepalive_timeout=75,
    )
    return 0


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
    """The app's background work (event relay, deliveries) without the HTTP server."""

    async def run() -> None:
        # Signals first: a SIGTERM while the app starts still shuts it down cleanly.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        print("gateway worker running", file=sys.stderr)
        await stop.wait()
        await runner.cleanup()

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
    schema_dir: Path | None = None,
) -> int:
    """Check a mapping file (and run it on a sample) exactly as an upload would: against the
    entity schemas, with the API's problems (pointer, line, message). Exit 0 when it passes,
    1 when it does not, 2 when a file cannot be read."""
    from gateway.mapping import test_file, validate_file
    from gateway.mappings import TenantCatalog
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
    try:
        result = test_file(Path(file), Path(sample), response=response, catalog=catalog)
    except InvalidPayload as exc:
        print(f"{file}: {exc.detail}", file=sys.stderr)
        _print_problems(exc.problems, file, sample)
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    return 0


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
    """`gateway trigger create|list`, through TriggerService on the app's own resources
    (with the embedded database, stop `gateway serve` first: they share the data dir)."""
    from dataclasses import replace

    from gateway.errors import GatewayError
    from gateway.keys import triggers_key

    tenant = str(options["tenant"])

    async def run() -> dict[str, object]:
        runner = web.AppRunner(create_app(replace(settings, run_workers=False)))
        await runner.setup()
        try:
            service = runner.app[triggers_key]
            if command == "create":
                return (await service.create(tenant, _trigger_spec(options))).as_dict()
            return {"items": await service.list(tenant, after=None, limit=200)}
        finally:
            await runner.cleanup()

    try:
        result = asyncio.run(run())
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
