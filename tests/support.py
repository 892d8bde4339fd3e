"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from gateway import clock
from gateway.auth.keyring import KeyRing
from gateway.auth.tokens import issue_admin_token
from gateway.config import Settings
from gateway.store.positions import inbox_items as items_of

SECRET_KEY = "test-secret-key-0123456789abcdef0123456789abcdef"


def admin_token(
    tenant: str = "acme",
    role: str = "admin",
    ttl: timedelta = timedelta(hours=1),
    secret: str = SECRET_KEY,
    now: float | None = None,
) -> str:
    return issue_admin_token(
        KeyRing.from_secret(secret),
        tenant=tenant,
        role=role,  # type: ignore[arg-type]
        subject="tester",
        ttl=ttl,
        now=now,
    )


def auth(tenant: str = "acme", role: str = "admin") -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(tenant, role)}"}


def cli_env(settings: Settings, mongodb_uri: str) -> dict[str, str]:
    """The environment a `python -m gateway ...` child needs to use the test's database."""
    return {
        **os.environ,
        "MONGODB_URI": mongodb_uri,
        "GATEWAY_DATABASE": settings.database,
        "GATEWAY_SECRET_KEY": SECRET_KEY,
        "GATEWAY_DATA_DIR": str(settings.data_dir),
        "GATEWAY_LOG_JSON": "false",
    }


async def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` in a child process with `env` (`cli_env`), off the event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def gateway_command(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS` run in this process through the console script's function
    (`gateway.__main__.main`, with the settings of `env`, default this process's): its exit
    code, stdout and stderr (its log lines included) as `run_cli` gives a child's, without
    the seconds a new interpreter takes to start and import the gateway. For what a command
    says and does; what only a process has (its entry point, stdin, signals, its exit) is
    tested with real ones (`run_cli`). `stdin`, if given, is what it reads as its standard
    input (a pipe's, not a terminal's). The logging it sets up is undone afterwards."""
    from gateway.__main__ import main

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    kept = [
        (each, each.level, each.handlers[:]) for each in loggers if isinstance(each, logging.Logger)
    ]
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            contextlib.nullcontext() if stdin is None else _stdin(stdin),
        ):
            try:
                code = main(list(args), env)
            except SystemExit as exc:  # argparse's usage errors and --help
                code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    finally:
        for each, level, handlers in kept:
            each.setLevel(level)
            each.handlers[:] = handlers
    return subprocess.CompletedProcess(["gateway", *args], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    """`sys.stdin` reads `text` meanwhile (a pipe's input: not a terminal)."""
    kept, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = kept


async def run_command(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`gateway_command(ARGS)` with `env` (`cli_env`) off the event loop, as `run_cli` runs a
    child: a command opens its own services and runs its own loop (`asyncio.run`)."""
    return await asyncio.to_thread(gateway_command, *args, env=env, stdin=stdin)


async def inbox_items(store: Any, tenant: str, vehicle: str, kind: str) -> list[dict[str, Any]]:
    """What waits in the fold's inbox for one vehicle (`k` "fix", "reading" or "service"), in
    inbox order: what a write handed to the fold before any fold ran."""
    docs = await store.db["fleet_inbox"].find({}).sort("_id", 1).to_list(None)
    return [
        item
        for doc in docs
        for item in items_of(doc)
        if (item["tenant"], item["vehicle"], item["k"]) == (tenant, vehicle, kind)
    ]


async def deliver_entity_events(services: Any, tenant: str = "acme") -> None:
    """A partner (on a closed loopback port), a `deliver` action and a subscription to every
    `entity.*` event: each relayed event of `tenant` gets one delivery."""
    partner = await services.actions.create_partner(tenant, {
        "name": "erp", "base_url": "http://127.0.0.1:9", "auth": {"type": "none"}
    })  # fmt: skip
    action = await services.actions.create_action(tenant, {
        "name": "push", "partner_id": str(partner["_id"]), "method": "POST", "path": "/",
        "mode": "deliver",
    })  # fmt: skip
    await services.actions.create_subscription(
        tenant, {"action_id": str(action["_id"]), "event_types": ["entity.*"]}
    )


def set_offset(offset: timedelta) -> None:
    """The gateway's time as a reading, taken now, of a database server's clock `offset` ahead
    of this host's sets it (`gateway.clock.measured`)."""
    clock.measured(clock.host_now() + offset, clock.ticks(), offset)


class AfterUpdate:
    """A collection whose next `update_one` runs `hook` once it is written."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.hook: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def update_one(self, *args: Any, **kw: Any) -> Any:
        result = await self._real.update_one(*args, **kw)
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()
        return result


def after_the_write_of(
    store: Any,
    method: str,
    hook: Callable[[], Awaitable[None]],
    when: Callable[..., bool] = lambda *args, **kw: True,
) -> None:
    """`hook` runs right after the update `store.<method>` writes, at each call `when` takes
    (given the call's arguments) until the hook has run once: another process's write
    landing between a store's write and its read back (`AfterUpdate` on `store._c`)."""
    proxy = AfterUpdate(store._c)
    store._c = proxy
    real = getattr(store, method)
    ran: list[None] = []

    async def run() -> None:
        await hook()
        ran.append(None)

    async def call(*args: Any, **kw: Any) -> Any:
        if not ran and when(*args, **kw):
            proxy.hook = run
        return await real(*args, **kw)

    setattr(store, method, call)


class HeldFirstRead:
    """A collection whose first `find` reads at once but answers only once `release` is set:
    a read of one coroutine that lands after another coroutine's work (`read` is set when
    the read was made)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._held = False
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def find(self, *args: Any, **kw: Any) -> Any:
        cursor = self._real.find(*args, **kw)
        if self._held:
            return cursor
        self._held = True
        return _HeldCursor(cursor, self)


class _HeldCursor:
    def __init__(self, real: Any, held: HeldFirstRead) -> None:
        self._real = real
        self._held = held

    def sort(self, *args: Any, **kw: Any) -> _HeldCursor:
        self._real = self._real.sort(*args, **kw)
        return self

    def limit(self, *args: Any, **kw: Any) -> _HeldCursor:
        self._real = self._real.limit(*args, **kw)
        return self

    async def to_list(self, *args: Any, **kw: Any) -> Any:
        found = await self._real.to_list(*args, **kw)
        self._held.read.set()
        await self._held.release.wait()
        return found
