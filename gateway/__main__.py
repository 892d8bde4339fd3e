"""The `gateway` command: serve [--workers N] | worker [--jobs ...] | admin-token | mapping
validate/test | demo | trigger create/list | ui-user create/list/set-role/set-password/delete |
cleanup [--days N] [--dry-run] | reseal [--dry-run] [--forget-unreadable [--yes [--forget-key
KID]...]] | fold-failures [--tenant T]."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace

from gateway import eventloop
from gateway.config import JOBS, ConfigError, Settings, StartRefused, parse_jobs
from gateway.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Rabbot webhook gateway",
        epilog="Settings come from the environment (MONGODB_URI, GATEWAY_SECRET_KEY, "
        "GATEWAY_DATA_DIR, GATEWAY_PORT, ...): docs/operations.md, Configuration. "
        "`gateway COMMAND --help` for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server and the workers")
    serve.add_argument("--host", help="interface to listen on (default: GATEWAY_HOST)")
    serve.add_argument("--port", type=_port, help="port (default: GATEWAY_PORT)")
    serve.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help=f"gateway processes sharing the port (SO_REUSEPORT), 1-{MAX_WORKERS}; default 1",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--parent-pipe", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--heartbeat-pipe", type=int, help=argparse.SUPPRESS)

    worker = commands.add_parser(
        "worker", help="run the workers only (no web app; /healthz, /readyz, /metrics)"
    )
    worker.add_argument("--host", help="health and metrics interface (default: GATEWAY_HOST)")
    worker.add_argument(
        "--port",
        type=_port,
        help="serve /healthz, /readyz and /metrics on this port (default: GATEWAY_WORKER_PORT; "
        "0 or unset: no listener)",
    )
    worker.add_argument(
        "--jobs",
        type=_jobs,
        metavar="JOBS",
        help=f"comma-separated background jobs to run: {', '.join(JOBS)} "
        "(default: GATEWAY_WORKERS, or all)",
    )

    demo = commands.add_parser("demo", help="load the demo tenant, then serve")
    demo.add_argument("--host", help="interface to listen on (default: GATEWAY_HOST)")
    demo.add_argument("--port", type=_port, help="port (default: GATEWAY_PORT)")
    demo.add_argument(
        "--tenant", type=_tenant, default="demo", help="the demo tenant's name (demo)"
    )
    demo.add_argument(
        "--partners-port",
        type=_port,
        default=8090,
        help="port of `gateway demo-partners` on 127.0.0.1, which the demo's partners call (8090)",
    )
    demo.add_argument(
        "--smtp-port",
        type=_port,
        default=8025,
        help="port of its SMTP server, which the demo's e-mail channel sends to (8025)",
    )

    partners = commands.add_parser(
        "demo-partners",
        help="serve the demo's partners and an SMTP server that print what they get",
    )
    partners.add_argument("--host", default="127.0.0.1", help="interface (127.0.0.1)")
    partners.add_argument(
        "--port", type=_port, default=8090, help="HTTP port of the partners (8090)"
    )
    partners.add_argument(
        "--smtp-port", type=_port, default=8025, help="port of the SMTP server (8025)"
    )

    token = commands.add_parser("admin-token", help="print an admin API token")
    token.add_argument("--tenant", type=_tenant, required=True, help="1-100 letters, digits, _.-")
    token.add_argument(
        "--role",
        choices=("admin", "viewer"),
        default="admin",
        help="viewer reads and dry-runs only (admin)",
    )
    token.add_argument("--ttl", default="30d", help="lifetime: 3600s, 15m, 12h, 30d, 2w (30d)")
    token.add_argument("--subject", default="cli", help="who the token is for (cli)")

    mapping = commands.add_parser("mapping", help="check mapping files")
    mapping_commands = mapping.add_subparsers(
        dest="mapping_command", required=True, metavar="COMMAND"
    )
    validate = mapping_commands.add_parser("validate", help="compile a mapping file")
    validate.add_argument("file")
    validate.add_argument(
        "--charset",
        metavar="NAME",
        help="the file's charset when it is not UTF-8, as an upload's Content-Type names it "
        "(e.g. windows-1252); a byte order mark (UTF-16, UTF-32) is read whatever it says",
    )
    test = mapping_commands.add_parser("test", help="run a mapping file on a sample payload")
    test.add_argument("file")
    test.add_argument("sample")
    test.add_argument(
        "--response",
        action="store_true",
        help="outbound mappings: the sample is the partner's answer (default: the context)",
    )
    test.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_name_value,
        help="a trigger param the mapping declares, e.g. distance_unit=mi (repeatable)",
    )
    test.add_argument(
        "--charset",
        metavar="NAME",
        help="the sample's charset, as a partner's Content-Type names it (e.g. windows-1252): "
        "a JSON or form sample not in UTF-8; the mapping file's too, when it is not UTF-8",
    )

    trigger = commands.add_parser("trigger", help="create or list triggers")
    trigger_commands = trigger.add_subparsers(
        dest="trigger_command", required=True, metavar="COMMAND"
    )
    create = trigger_commands.add_parser("create", help="create a trigger; prints url and token")
    create.add_argument(
        "--tenant", type=_tenant, required=True, help="the tenant the trigger belongs to"
    )
    create.add_argument("--name", required=True, help="unique within the tenant")
    create.add_argument("--entity-type", help="required unless --target positions")
    create.add_argument(
        "--target",
        choices=("entities", "positions"),
        default="entities",
        help="positions: fixes appended to vehicles' tracks (docs/fleet.md)",
    )
    create.add_argument("--kind", help="for --entity-type other: the kind written")
    create.add_argument("--mapping", help="inbound mapping name")
    create.add_argument("--response-mapping", help="outbound mapping shaping GET answers")
    create.add_argument("--methods", default="POST", help="comma-separated: GET,POST")
    create.add_argument(
        "--format",
        choices=("json", "form", "xml"),
        default="json",
        help="the partner's body: JSON, a form or query string, XML/SOAP (json)",
    )
    create.add_argument("--token-in-query", help="query parameter that may carry the token")
    listing = trigger_commands.add_parser("list", help="list a tenant's triggers")
    listing.add_argument("--tenant", type=_tenant, required=True, help="whose triggers")

    cleanup = commands.add_parser(
        "cleanup",
        help="drop events, finished deliveries and finished flow runs older than --days",
    )
    cleanup.add_argument(
        "--days", type=_days, default=90, help=f"keep this many, 1-{MAX_DAYS:,} (90)"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="count, drop nothing")

    fold_failures = commands.add_parser(
        "fold-failures",
        help="list the vehicles' batches the fleet fold set aside (its fold raised an error)",
    )
    fold_failures.add_argument("--tenant", type=_tenant, help="of one tenant (all when not given)")

    reseal = commands.add_parser(
        "reseal",
        help="seal every stored secret again under the first key of GATEWAY_SECRET_KEY",
    )
    reseal.add_argument("--dry-run", action="store_true", help="count, change nothing")
    reseal.add_argument(
        "--forget-unreadable",
        action="store_true",
        help="the last resort after a lost key: list every stored secret no key of "
        "GATEWAY_SECRET_KEY opens; with --yes, clear them (each must be saved again) so that "
        "the gateway starts (docs/operations.md)",
    )
    reseal.add_argument(
        "--yes", action="store_true", help="with --forget-unreadable: clear what it lists"
    )
    reseal.add_argument(
        "--forget-key",
        action="append",
        default=[],
        metavar="KID",
        help="with --forget-unreadable --yes: a key id the key check records and "
        "GATEWAY_SECRET_KEY lacks, given up for good (each one it names; repeat)",
    )

    ui_user = commands.add_parser("ui-user", help="manage admin UI users")
    ui_user_commands = ui_user.add_subparsers(
        dest="ui_user_command", required=True, metavar="COMMAND"
    )
    user_commands = {
        "create": "create a user; the password is read from stdin (or asked for)",
        "list": "list a tenant's users",
        "set-role": "change a user's role; ends the user's sessions",
        "set-password": "change a user's password (stdin, or asked for); ends their sessions",
        "delete": "remove a user; ends the user's sessions",
    }
    for name, text in user_commands.items():
        user_command = ui_user_commands.add_parser(name, help=text)
        user_command.add_argument("--tenant", type=_tenant, required=True, help="the user's tenant")
        if name != "list":
            user_command.add_argument("--email", required=True, help="the user's login")
        if name == "create":
            user_command.add_argument(
                "--role",
                choices=("admin", "viewer"),
                default="admin",
                help="viewer reads and dry-runs only (admin)",
            )
        if name == "set-role":
            user_command.add_argument(
                "--role", choices=("admin", "viewer"), required=True, help="the new role"
            )
    return parser


def _positive(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


MAX_WORKERS = 64
"""`serve --workers N`: 64 processes. Each is a whole gateway (about 90 MB, its database pool,
its background jobs) that gains little past one a core (docs/scaling.md); 64 covers the
largest machine one port and one database are sensibly run on, while a slip (`--workers
100000`, `$(nproc)0`) is refused before anything starts instead of starting processes
until the host gives way. A fixed bound rather than a multiple of `os.cpu_count()`: that
counts the host's cores, not a container's CPU quota, and a range is said the same on
every machine."""
MAX_DAYS = 10_000
"""`cleanup --days`: about 27 years. Further back is before any event (and ids hold no time
before 1970)."""
# gateway.metrics.MULTIPROCESS_DIR, not imported from there: that imports prometheus_client,
# which reads the variable once, as it is imported.
_MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _name_value(text: str) -> str:
    name, equals, _ = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (a JSON value or text), got {text!r}"
        )
    return text


def _days(text: str) -> int:
    value = _positive(text)
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DAYS}, not {value}")
    return value


def _workers(text: str) -> int:
    value = _positive(text)
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_WORKERS}, not {value} (processes on this machine: "
            "docs/scaling.md)"
        )
    return value


def _jobs(text: str) -> tuple[str, ...]:
    try:
        return parse_jobs(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _tenant(text: str) -> str:
    """Every command's `--tenant`: a name an admin token can carry (a trigger or user made
    under any other would be out of reach of every token and the admin UI)."""
    from gateway.auth.tokens import TENANT  # jwt and the key ring: imported when needed

    if not TENANT.match(text):
        raise argparse.ArgumentTypeError(f"a tenant is 1-100 letters, digits, _.-, not {text!r}")
    return text


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}")
    return port


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The command `argv` (default: the command line) with the settings of `environ`
    (default: the process's environment); its exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(os.environ if environ is None else environ)
        if settings.mongodb_uri is not None:
            from gateway.store.client import check_uri  # the driver: imported when needed

            check_uri("MONGODB_URI", settings.mongodb_uri)  # the driver's parser: store/'s
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.event_loop == "uvloop" and not eventloop.uvloop_installed():
        print("configuration error: GATEWAY_EVENT_LOOP is uvloop, not installed", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, json=settings.log_json)
    _keep_metrics_in_memory(args)
    if args.command in ("serve", "demo"):
        settings = replace(
            settings,
            host=args.host or settings.host,
            port=settings.port if args.port is None else args.port,
        )
    if args.command == "worker":
        settings = replace(
            settings,
            jobs=settings.jobs if args.jobs is None else args.jobs,
            host=args.host or settings.host,
            worker_port=settings.worker_port if args.port is None else args.port,
        )
    from gateway import cli

    handlers = {
        "serve": lambda: cli.serve(
            settings,
            workers=args.workers,
            reuse_port=args.reuse_port,
            parent=args.parent_pipe,
            heartbeat=args.heartbeat_pipe,
        ),
        "demo": lambda: cli.demo(settings, args.tenant, args.partners_port, args.smtp_port),
        "worker": lambda: cli.worker(settings),
        "demo-partners": lambda: cli.demo_partners(args.host, args.port, args.smtp_port),
        "admin-token": lambda: cli.admin_token(
            settings, args.tenant, args.role, args.ttl, args.subject
        ),
        "mapping": lambda: cli.mapping(
            args.mapping_command,
            args.file,
            getattr(args, "sample", None),
            response=getattr(args, "response", False),
            params=getattr(args, "param", []),
            charset=getattr(args, "charset", None),
            schema_dir=settings.schema_dir,
        ),
        "trigger": lambda: cli.trigger(settings, args.trigger_command, vars(args)),
        "ui-user": lambda: cli.ui_user(settings, args.ui_user_command, vars(args)),
        "cleanup": lambda: cli.cleanup(settings, args.days, dry_run=args.dry_run),
        "reseal": lambda: (
            cli.forget_unreadable(
                settings, confirmed=args.yes and not args.dry_run, given_up=args.forget_key
            )
            if args.forget_unreadable
            else cli.reseal(settings, dry_run=args.dry_run, confirm=args.yes)
        ),
        "fold-failures": lambda: cli.fold_failures(settings, args.tenant),
    }
    try:
        return handlers[args.command]()
    except ConfigError as exc:  # found by the command (a one-shot command without a key)
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except StartRefused as exc:  # a port taken, a data dir another process holds
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        # The system refused a directory a setting names (a special or read-only file
        # system, no permission): that setting's error, not the gateway's.
        if (name := settings.setting_of(exc.filename)) is None:
            return _failed(exc)
        said = f"{name}: {exc.strerror or exc}: {exc.filename}"
        print(f"configuration error: {said}", file=sys.stderr)
        return 2
    except Exception as exc:
        return _failed(exc)


def _keep_metrics_in_memory(args: argparse.Namespace) -> None:
    """PROMETHEUS_MULTIPROC_DIR is `serve --workers N`'s: its parent makes an instance's
    directory there, hands it to its processes and marks those that die. Any other process
    (a plain `serve`, a `worker`, a one-shot command) drops it before prometheus_client is
    imported (which chooses its multiprocess mode by the variable): it wrote its files into
    the directory itself, where no one marked it dead (a killed process's live gauges were
    added to its successor's for good) and a `serve --workers N` removed them as stale."""
    workers = args.command == "serve" and (args.workers > 1 or args.parent_pipe is not None)
    if workers or not os.environ.get(_MULTIPROCESS_DIR):
        return
    del os.environ[_MULTIPROCESS_DIR]
    logging.getLogger("gateway").warning(
        "PROMETHEUS_MULTIPROC_DIR is read by `serve --workers N` only: this process keeps its "
        "metrics in memory, and its /metrics shows them"
    )


def _failed(exc: Exception) -> int:
    """The last line of defence for a command-line user: logged with its traceback."""
    logging.getLogger("gateway").exception("command failed")
    print(f"error: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
