"""What each `gateway` command does (argument parsing lives in `__main__`). Each command
imports what it runs: `mapping validate` and `--help` start in a fraction of a second, not
after the whole app is imported; one-shot database commands import the services, and only
`serve`, `demo` and `worker` the web app."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from gateway.errors import FieldProblem, GatewayError, InvalidPayload
from gateway.shutdown import STOP_SIGNALS

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.config import Settings
    from gateway.demo import DemoTrigger
    from gateway.fleet.failures import SetAside
    from gateway.retention import Cleaned
    from gateway.services import Services
    from gateway.store.sealed import Forgotten, Resealed

T = TypeVar("T")

# Where `gateway demo-partners` listens by default (its --port and --smtp-port), which is
# where `gateway demo` points the demo's partners and e-mail channel unless told otherwise.
DEMO_PARTNERS_PORT = 8090
DEMO_SMTP_PORT = 8025


def serve(
    settings: Settings,
    extend: Callable[[web.Application], None] | None = None,
    *,
    workers: int = 1,
    reuse_port: bool = False,
    parent: int | None = None,
    heartbeat: int | None = None,
) -> int:
    """One process, or with `workers` > 1 that many on one port (`prefork.py`). A child of
    `--workers` is started with `reuse_port` and quietly (the parent says where it listens),
    and stops once its `parent` pipe closes (the parent died); it beats on its `heartbeat`
    pipe, which the parent watches to replace a child that hangs."""
    if not reuse_port and not _can_listen(settings.host, settings.port):
        return 1
    if not reuse_port:  # a child of `--workers`: its parent waited
        _wait_for_one_shot(settings)
    listening, recorded = None, None
    if settings.port == 0 and workers == 1:  # `--workers` refuses port 0
        from gateway.web import server

        listening = server.bind_any_port(settings.host)
        settings = replace(settings, port=listening.getsockname()[1])
    try:
        if not reuse_port and (warning := unreachable_url_warning(settings)) is not None:
            print(warning, file=sys.stderr)  # once: by the parent of `--workers`, not each child
        if not reuse_port:
            from gateway import served_url

            recorded = served_url.record(settings)  # for `gateway trigger` beside it
        if workers > 1:
            from gateway.prefork import serve_processes

            return serve_processes(settings, workers)
        if parent is not None:
            from gateway.prefork import watch_parent

            watch_parent(parent)
        from gateway.app import create_app
        from gateway.web import server

        app = create_app(settings)
        if heartbeat is not None:
            from gateway.prefork import beat_to_parent

            async def beat(app: web.Application, fd: int = heartbeat) -> None:
                await beat_to_parent(fd)

            app.on_startup.insert(0, beat)
        if extend is not None:
            extend(app)
        # SIGTERM/SIGINT/SIGHUP shut down gracefully: stop accepting, finish requests, then run
        # every cleanup context (workers stop claiming, the database closes).
        server.run(
            app,
            host=settings.host,
            port=settings.port,
            on_listening=(lambda url: None)
            if reuse_port
            else lambda url: print(f"gateway listening on {url}", file=sys.stderr),
            reuse_port=reuse_port,
            sock=listening,
            event_loop=settings.event_loop,
            access_log=None,
            shutdown_timeout=settings.request_shutdown_seconds,
            write_timeout=settings.write_timeout_seconds,
            keepalive_timeout=75,
        )
        return 0
    finally:  # the socket bound for port 0, when the start failed before serving it
        if listening is not None:
            listening.close()
        _forget_url(settings, recorded)


def _forget_url(settings: Settings, recorded: str | None) -> None:
    """Stopped: a one-shot command beside it no longer uses the URL it recorded."""
    if recorded is not None:
        from gateway import served_url

        served_url.remove(settings, recorded)


def unreachable_url_warning(settings: Settings) -> str | None:
    """Trigger URLs name `GATEWAY_PUBLIC_URL`, else the address listened on: an unspecified
    one (0.0.0.0, the container image's) is no address a partner can call."""
    if settings.public_url or settings.host not in ("0.0.0.0", "::", ""):
        return None
    return (
        f"warning: GATEWAY_PUBLIC_URL is not set: trigger URLs will name {settings.base_url},"
        " which no partner can call; set it to the address partners reach this gateway at"
    )


def demo(
    settings: Settings,
    tenant: str,
    partners_port: int = DEMO_PARTNERS_PORT,
    smtp_port: int = DEMO_SMTP_PORT,
) -> int:
    """Load the demo tenant, print where to start, then serve (with a stand-in Geotab server,
    which the demo's schedule polls). Its other partners are local (`gateway demo-partners`
    on 127.0.0.1, `partners_port` and `smtp_port`), so this process may call its own
    loopback address and 127.0.0.1."""

    from gateway import shipped
    from gateway.auth.tokens import issue_admin_token, parse_ttl
    from gateway.demo import (
        seed_entities,
        seed_fleet_rules,
        seed_geotab,
        seed_mappings,
        seed_triggers,
    )
    from gateway.demo_integrations import seed_automations
    from gateway.services import open_services
    from gateway.web import demo_partner

    if not _can_listen(settings.host, settings.port):  # before seeding starts the database
        return 1
    _wait_for_one_shot(settings)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    geotab_url = f"http://{host}:{settings.port}{demo_partner.PATH.removesuffix('/apiv1')}"
    # Demo only: every tenant of this process may call these addresses, on any port (the SSRF
    # guard allows addresses, not ports); the summary and docs/operations.md say so.
    geotab = {
        "database": demo_partner.DATABASE,
        "username": demo_partner.USER,
        "password": demo_partner.PASSWORD,
    }
    allow = {host, "127.0.0.1"} - set(settings.outbound_allow)
    settings = replace(settings, outbound_allow=(*settings.outbound_allow, *sorted(allow)))

    async def seed() -> str:
        async with open_services(settings, run_workers=False) as services:
            created = await seed_entities(services.entities, tenant)
            rules = await seed_fleet_rules(services.geofences, services.maintenance_plans, tenant)
            mappings = await seed_mappings(services.mappings, tenant, shipped.MAPPINGS)
            flows = await seed_automations(
                services.actions,
                services.notify,
                tenant,
                shipped.FLOWS,
                partners_url=f"http://127.0.0.1:{partners_port}",
                smtp_port=smtp_port,
            )
            hooks = await seed_triggers(services.triggers, tenant)
            schedule = await seed_geotab(
                services.actions, services.schedules, tenant, geotab_url, geotab
            )
            token = issue_admin_token(
                services.keyring, tenant=tenant, role="admin", subject="demo", ttl=parse_ttl("30d")
            )
        counts = (
            f"{created} entities, {rules} geofences and plans created, {mappings} mappings, "
            f"{flows.flows} flows loaded"
        )
        partners = "gateway demo-partners"
        if (partners_port, smtp_port) != (DEMO_PARTNERS_PORT, DEMO_SMTP_PORT):
            partners += f" --port {partners_port} --smtp-port {smtp_port}"
        summary = _demo_summary(
            settings.base_url, tenant, counts, hooks, token, sorted(allow), partners
        )
        return summary + _schedule_summary(settings.base_url, schedule)

    print(_run(seed), flush=True)
    return serve(settings, demo_partner.add_demo_partner)


def _wait_for_one_shot(settings: Settings) -> None:
    """Before a gateway process starts the embedded database (no MONGODB_URI): a one-shot
    command that manages it (a cron `gateway cleanup` while the gateway was down) is waited
    for, at most `ONE_SHOT_WAIT_SECONDS`; a start meanwhile was refused (exit 1), and a
    service manager's restarts with it."""
    if not settings.mongodb_uri:
        from gateway.store.embedded import wait_for_one_shot

        wait_for_one_shot(Path(settings.data_dir) / "db")


def _can_listen(host: str, port: int, *names: str) -> bool:
    """Whether the port is free; if not, said on stderr (before the database starts), naming
    the options and variables to change (`names`: the port's, the host's)."""
    from gateway.web import server

    if (problem := server.taken(host, port, *names)) is None:
        return True
    print(f"error: {problem}", file=sys.stderr)
    return False


def _schedule_summary(base: str, schedule: dict[str, object]) -> str:
    from gateway.web import demo_partner

    runs = f"{base}/api/v1/schedules/{schedule['id']}/runs"
    return "\n".join(
        [
            f"  Polling: schedule {schedule['name']!r} reads a Geotab feed (a stand-in MyGeotab",
            f"  server at {base}{demo_partner.PATH}) every {schedule['every']}; its runs:",
            f'  curl -s -H "Authorization: Bearer $ADMIN_TOKEN" {runs}',
            "",
        ]
    )


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run(main()), with SIGTERM, SIGINT and SIGHUP cancelling it, so that the services
    it opened close (the embedded database stops) instead of being left behind. Interrupted,
    it raises KeyboardInterrupt (exit 130)."""

    async def guarded() -> T:
        task = asyncio.current_task()
        assert task is not None
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, task.cancel)
        return await main()

    try:
        return asyncio.run(guarded())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


def _demo_summary(
    base: str,
    tenant: str,
    counts: str,
    hooks: list[DemoTrigger],
    token: str,
    loopback: list[str],
    partners: str,
) -> str:
    lines = [
        f"\nRabbot gateway demo: tenant {tenant!r} ({counts})",
        f"  DEMO ONLY: the SSRF guard lets every tenant here call {', '.join(loopback)} on any",
        "  port (the demo's partners are local): never give this process real tenants or",
        "  expose it to others (--host 0.0.0.0); run `gateway serve` for that.",
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
        "  Try the curl examples in README.md (section 'Try it') with these variables;",
        f"  the flows' partners and an SMTP server: `{partners}` in another shell.",
        "",
    ]
    return "\n".join(lines)


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def demo_partners(host: str, port: int, smtp_port: int) -> int:
    """The demo's partners (HR, ERP, SMS, FCM) and an SMTP server, printing what they get."""
    from gateway.web.demo_partners import serve_demo_partners

    for each, name in ((port, "--port"), (smtp_port, "--smtp-port")):
        if not _can_listen(host, each, name, "--host"):
            return 1
    with contextlib.suppress(KeyboardInterrupt):
        try:
            _run(lambda: serve_demo_partners(host, port, smtp_port))
        except OSError as exc:  # a port taken between the check and the bind
            print(f"error: cannot listen on {host}: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


def worker(settings: Settings) -> int:
    """The background jobs (`settings.jobs`: event relay, deliveries) without the web app,
    with a small listener for health and metrics (`settings.worker_port`, 0: none); several
    such processes share the work through leases in MongoDB."""
    from gateway import eventloop
    from gateway.services import open_services
    from gateway.shutdown import TEARDOWN_SECONDS
    from gateway.web import server
    from gateway.web.worker_listener import worker_listener

    if not _can_listen(settings.host, settings.worker_port, "--port, GATEWAY_WORKER_PORT"):
        return 1
    _wait_for_one_shot(settings)

    async def run() -> None:
        # Signals first: a SIGTERM while the services open still shuts them down cleanly.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        async with (
            open_services(settings, run_workers=True) as services,
            worker_listener(services, settings.host, settings.worker_port) as url,
        ):
            where = f"; health and metrics at {url}/readyz, {url}/metrics" if url else ""
            print(f"gateway worker running: {', '.join(settings.jobs)}{where}", file=sys.stderr)
            await stop.wait()
        server.exit_after(TEARDOWN_SECONDS)

    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(run(), settings.event_loop)
    return 0


def admin_token(settings: Settings, tenant: str, role: str, ttl: str, subject: str) -> int:
    """An admin token, signed and printed once the database is open, as every one-shot command
    does: with the key the database's key check took (`open_services`; a token signed with a
    key the gateway does not have would be refused on every call), and stamped (iat, exp) on
    the database server's clock, read as the services opened (`gateway.clock`), as the
    gateway that verifies it reads the time. Signed before, on this host's clock, a host
    ahead by more than the verifier's leeway printed a token refused on every call, and one
    behind printed a token that lived that much shorter (or had expired already)."""
    from gateway.auth.tokens import issue_admin_token, parse_ttl
    from gateway.services import load_secret_key

    try:
        lifetime = parse_ttl(ttl)
    except ValueError as exc:
        print(f"error: --ttl: {exc}", file=sys.stderr)
        return 2
    load_secret_key(settings, generate=False)  # a key missing or damaged: said before anything

    async def signed(services: Services) -> str | ValueError:
        try:
            return issue_admin_token(
                services.keyring,
                tenant=tenant,
                role=role,  # type: ignore[arg-type]
                subject=subject,
                ttl=lifetime,
            )
        except ValueError as exc:  # a lifetime past year 9999
            return exc

    token = _on_services(settings, signed)
    if isinstance(token, ValueError):
        print(f"error: {token}", file=sys.stderr)
        return 2
    if token is None:
        return 1
    print(token)
    return 0


def _not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as a mapping or a sample, or None when it is a file."""
    if path.is_file():
        return None
    if path.is_dir():
        return "is a directory, not a file"
    if path.exists():
        return "is not a regular file (a device, a pipe or a socket)"
    return "no such file"


def mapping(
    command: str,
    file: str,
    sample: str | None,
    *,
    response: bool = False,
    params: list[str] | None = None,
    charset: str | None = None,
    schema_dir: Path | None = None,
) -> int:
    """Check a mapping file (and run it on a sample) exactly as an upload would: against the
    entity schemas, with the API's problems (pointer, line, message). Exit 0 when it passes,
    1 when it does not, 2 when a file cannot be read."""
    from gateway.mapping import test_file, validate_file
    from gateway.mapping_files.catalog import TenantCatalog
    from gateway.schemas.registry import SchemaRegistry, default_schema_dir

    for path in (file, sample):
        if path is not None and (why := _not_a_file(Path(path))) is not None:
            print(f"error: {path}: {why}", file=sys.stderr)
            return 2
    # No tenant here: a tenant's custom kind is unknown, and its fields are not checked.
    catalog = TenantCatalog(SchemaRegistry.load(schema_dir or default_schema_dir()), {})
    problems, warnings = validate_file(Path(file), catalog=catalog, charset=charset)
    for warning in warnings:  # as an upload answers them: taken, but write the new names
        print(f"{file}: warning: {warning}", file=sys.stderr)
    if command == "validate":
        _print_problems(problems, file, file)
        if not problems:
            print(f"{file}: ok")
        return 1 if problems else 0
    assert sample is not None
    values = dict(_param(text) for text in params or ())
    try:
        result = test_file(
            Path(file),
            Path(sample),
            response=response,
            params=values,
            catalog=catalog,
            charset=charset,
        )
    except InvalidPayload as exc:
        print(f"{file}: {exc.detail}", file=sys.stderr)
        _print_problems(exc.problems, file, sample)
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    # Items that do not fit, or whose fix the append would refuse: shown among the others'
    # results, and named here (a batch's by their index)
    results = result.get("results") or ()
    batch = len(results) > 1 or any(item.get("errors") for item in results)
    refused = 0
    for item in results:
        shown = item.get("errors") or (item.get("fix") or {}).get("errors")
        if shown:
            refused += 1
            problems = [_problem(p) for p in shown]
            _print_problems(problems, file, sample, item=item["index"] if batch else None)
    return 1 if refused else 0


def _problem(shown: dict[str, Any]) -> FieldProblem:
    """A problem back from its `as_dict` form."""
    extra = {k: v for k, v in shown.items() if k not in ("pointer", "message", "keyword")}
    return FieldProblem(shown["pointer"], shown["message"], shown["keyword"], extra)


def _param(text: str) -> tuple[str, object]:
    """`name=value`: the value is JSON when it reads as JSON (12, true), else text (mi)."""
    name, _, value = text.partition("=")
    try:
        return name, orjson.loads(value)
    except orjson.JSONDecodeError:
        return name, value


def _print_problems(
    problems: list[FieldProblem], file: str, sample: str, *, item: object = None
) -> None:
    """`FILE:LINE: /pointer: message` for the mapping file, `SAMPLE: /pointer: message
    (target ...)` for a payload that does not fit it, `SAMPLE: item N: /pointer: ...` for
    one item of a batch (N: its index in the results, the partner's place in its list)."""
    for problem in problems:
        line = problem.extra.get("line")
        where = file if problem.extra.get("file") or problem.keyword == "file" else sample
        where = f"{where}:{line}" if line else where
        where = where if item is None else f"{where}: item {item}"
        target = problem.extra.get("target")
        suffix = f" (target {target})" if target else ""
        print(f"{where}: {problem.pointer or '/'}: {problem.message}{suffix}", file=sys.stderr)


def trigger(settings: Settings, command: str, options: dict[str, object]) -> int:
    """`gateway trigger create|list`, through the trigger use case (with the embedded
    database, on the one a running gateway has on the data dir)."""
    from gateway import served_url

    tenant = str(options["tenant"])
    settings = served_url.served(settings)  # the URLs the running gateway serves

    async def work(services: Services) -> dict[str, object]:
        if command == "create":
            return (await services.triggers.create(tenant, _trigger_spec(options))).as_dict()
        return {"items": await services.triggers.list(tenant, after=None, limit=200)}

    result = _on_services(settings, work)
    if result is None:
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2, default=str).decode())
    sys.stdout.write("\n")
    return 0


def _trigger_spec(options: dict[str, object]) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": options["name"],
        "methods": [m.strip().upper() for m in str(options["methods"]).split(",") if m.strip()],
        "format": options["format"],
    }
    if options.get("target") == "positions":
        spec["target"] = "positions"
    for name in ("entity_type", "kind", "mapping", "response_mapping"):
        if options.get(name):
            spec[name] = options[name]
    if options.get("token_in_query"):
        spec["auth"] = {"token_in_query": options["token_in_query"]}
    return spec


def ui_user(settings: Settings, command: str, options: Mapping[str, Any]) -> int:
    """`gateway ui-user create|list|set-role|set-password|delete`: the admin UI's users. A
    password comes from stdin when it is not a terminal (one line), else from a prompt asked
    twice; never from the command line, where `ps` and shell history would keep it. A new
    role or password, and a removal, end the user's sessions."""
    tenant, email, role = options["tenant"], options.get("email") or "", options.get("role")
    password = None
    if command in ("create", "set-password"):
        password = _read_password()
        if password is None:
            print("error: the two passwords differ", file=sys.stderr)
            return 2

    async def work(services: Services) -> str:
        from gateway.store.ui_accounts import account_email  # loaded with the services already

        accounts = services.accounts
        # A new user under its stored form; another by the e-mail given, which names the user
        # stored so first (one the start's rewrite kept as stored), not the form's user.
        who = f"{account_email(email) if command == 'create' else email.strip()} of tenant {tenant}"
        if command == "list":
            for user in await accounts.users(tenant):
                created = user["created_at"].strftime("%Y-%m-%d %H:%M")
                print(f"{user['email']}\t{user['role']}\tcreated {created} UTC")
            return ""
        if command == "create":
            assert password is not None and role is not None
            await accounts.create_user(tenant, email, role, password)
            return f"created {role} {who}"
        if command == "delete":
            ended = await accounts.delete_user(tenant, email)
            return f"deleted {who}; {ended} session(s) ended"
        ended = await accounts.change_user(tenant, email, role=role, password=password)
        what = f"role {role}" if command == "set-role" else "password"
        return f"{what} of {who} set; {ended} session(s) ended"

    said = _on_services(settings, work)
    if said is None:
        return 1
    if said:
        print(said, file=sys.stderr)
    return 0


def cleanup(settings: Settings, days: int, *, dry_run: bool) -> int:
    """`gateway cleanup`: the history older than `days` dropped (docs/operations.md "Data
    retention"); prints what was dropped, or would be with `--dry-run`."""
    from datetime import timedelta

    from gateway.retention import clean_up

    async def work(services: Services) -> Cleaned:
        return await clean_up(services.store, timedelta(days=days), dry_run=dry_run)

    cleaned = _on_services(settings, work)
    if cleaned is None:
        return 1
    verb = "would drop" if dry_run else "dropped"
    print(
        f"{verb} {cleaned.events} events, {cleaned.deliveries} finished deliveries and "
        f"{cleaned.flow_runs} finished flow runs from before "
        f"{cleaned.before.isoformat(timespec='seconds')}"
    )
    return 0


def reseal(settings: Settings, *, dry_run: bool, confirm: bool = False) -> int:
    """`gateway reseal`: every stored secret sealed again under the first key of
    GATEWAY_SECRET_KEY (docs/security.md, rotating the key). Exit 1 when a secret no key
    opens remains (named, not touched): the old key must not be dropped yet."""
    if confirm:
        print("error: --yes confirms --forget-unreadable only", file=sys.stderr)
        return 2
    from gateway.auth.keyring import KeyRing
    from gateway.auth.secretbox import SecretBox
    from gateway.keys import reseal_secrets
    from gateway.services import load_secret_key

    box = SecretBox(KeyRing.from_secret(load_secret_key(settings, generate=False)))

    async def work(services: Services) -> Resealed:
        return await reseal_secrets(services.store, box, dry_run=dry_run)

    done = _on_services(settings, work)
    if done is None:
        return 1
    verb = "would seal" if dry_run else "sealed"
    print(
        f"{verb} {done.resealed} secrets again under the current key; {done.current} already "
        f"were; {done.changed} records changed meanwhile (left as they are)"
    )
    for where in done.unreadable:
        print(f"no key opens {where}", file=sys.stderr)
    return 1 if done.unreadable else 0


def forget_unreadable(settings: Settings, *, confirmed: bool, given_up: Sequence[str] = ()) -> int:
    """`gateway reseal --forget-unreadable [--yes]`: the last resort after a key is lost for
    good (docs/operations.md "A lost key"). Lists each stored secret no key of
    GATEWAY_SECRET_KEY opens (where, never a value); `confirmed`, clears them to read as lost
    and narrows the key check's keys, so that `serve` starts again; a recorded key id the
    list lacks must be named in `given_up` (`--forget-key`). It opens the store alone: the
    services' start is the very check that refuses such a database."""
    from gateway.auth.keyring import KeyRing
    from gateway.auth.secretbox import SecretBox
    from gateway.keys import forget_unreadable as forget
    from gateway.services import load_secret_key
    from gateway.store.connection import open_store

    box = SecretBox(KeyRing.from_secret(load_secret_key(settings, generate=False)))

    async def run() -> Forgotten:
        async with open_store(settings, settings.mongodb_uri, attach=True) as store:
            return await forget(store, box, dry_run=not confirmed, given_up=tuple(given_up))

    try:
        done = _run(run)
    except GatewayError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    for s in done.secrets:
        ended = " (rotated out: dropped, nothing to redo)" if s.ended else ""
        print(f"no key opens: tenant {s.tenant} {s.kind} {s.id} {s.field}{ended}")
    redo = sum(not s.ended for s in done.secrets)
    if done.missing and not confirmed:
        kids = ", ".join(done.missing)
        print(
            f"the key check records key id(s) {kids}, which GATEWAY_SECRET_KEY lacks: forgetting "
            f"gives {kids} up for good; a key list that has them opens the secrets under them (use "
            "it instead, then `gateway reseal`)"
        )
    if not confirmed:
        print(
            f"{len(done.secrets)} stored secrets no key opens ({redo} to save again once "
            "cleared); nothing changed: `gateway reseal --forget-unreadable --yes"
            + "".join(f" --forget-key {kid}" for kid in done.missing)
            + "` clears them"
        )
        return 0
    print(
        f"cleared {len(done.secrets)} stored secrets no key opens: save the {redo} listed "
        "again (a subscription's: give its partner the new secret)"
    )
    if done.changed or not done.narrowed:
        print(
            f"error: {done.changed} records changed meanwhile, or a process started with "
            "another key: run it again",
            file=sys.stderr,
        )
        return 1
    return 0


def fold_failures(settings: Settings, tenant: str | None) -> int:
    """`gateway fold-failures`: the vehicles' batches the fleet fold set aside (its fold
    raised an error of the code), one line each (docs/operations.md "A vehicle the fold set
    aside")."""
    from gateway.fleet.failures import set_aside

    async def work(services: Services) -> list[SetAside]:
        return await set_aside(services.store, tenant)

    batches = _on_services(settings, work)
    if batches is None:
        return 1
    for b in batches:
        when = b.at.isoformat(timespec="seconds") if b.at is not None else "?"
        print(
            f"{b.tenant} vehicle {b.vehicle}: inbox {b.inbox[0] if b.inbox else '?'}..{b.through}, "
            f"{b.fixes} fixes, {b.items} items, at {when}: {b.error}"
        )
    print(f"{len(batches)} {'batch' if len(batches) == 1 else 'batches'} set aside")
    return 0


def _on_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T | None:
    """`work` on this deployment's services, for a one-shot command (with the embedded
    database, the one a running gateway has on the data dir); None once a use case's
    refusal is printed on stderr (its detail and problems)."""
    from gateway.services import open_services

    async def run() -> T:
        async with open_services(settings, run_workers=False, attach=True) as services:
            return await work(services)

    try:
        return _run(run)
    except GatewayError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        for problem in getattr(exc, "problems", ()):
            where = f"{problem.pointer or '/'}: "
            # Most messages name their pointer already (`/mapping: no mapping 'osmand'`).
            said = problem.message if problem.message.startswith(where) else where + problem.message
            print(f"  {said}", file=sys.stderr)
        return None


def _read_password() -> str | None:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    return first if getpass.getpass("again: ") == first else None
