"""Name resolution for the sender's connector: the gateway's own resource, under its own rules.

`getaddrinfo` blocks a thread for as long as a name server takes (glibc: 5 s per attempt). On
aiohttp's default resolver those threads are the event loop's default executor (CPUs + 4 of
them, shared with password hashing and more), and the wait for one ran inside the partner's
timeout: one tenant's slowly resolving names made another tenant's healthy partner time
out, blamed for it. Here:

- the lookups run on threads of their own (`threads`); a call waits for a free one at most
  its wait for our resources (`Call.wait`, the partner's `max_wait`), on a clock of its own:
  still none free, it raises `ResolverBusy`, the sender's `overloaded`, ours, never the
  partner's, whatever the partner's timeout;
- one lookup per name at a time: a call finding one under way waits for it, each call with
  its own bounds; a call giving up leaves the lookup to the others (a lookup nobody waits
  for any more is dropped only while it waits for a thread);
- the sender resolves a partner's host before the partner's timeout starts (`ahead`), the
  lookup bounded by that timeout from the moment a thread runs it: what the call got (its
  timeout, or the name server's failure) is that call's alone (`Call.failed`), met by its
  connection as the partner's `connect` failure; only a lookup's answer is kept for every
  call (`_FRESH` seconds), never a failure: a name server failing once (EAI_AGAIN) is asked
  again by the next call;
- a lookup started, or failing, while this process has no file descriptor left (glibc then
  answers "Name or service not known": it cannot open /etc/hosts nor a socket) is `EMFILE`,
  the sender's `overloaded`, not the partner's `connect` failure (judged before asking too:
  a descriptor freed by the time the lookup failed would hide the cause);
- a host name getaddrinfo cannot encode (an empty label, one over 63 characters) is a failure
  of the name (`EINVAL`), the partner's, not an exception out of the sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp.abc import AbstractResolver, ResolveResult

_Key = tuple[str, int, int]


@dataclass
class Call:
    """One partner call's terms with the resolver (the sender sets it, `call`)."""

    wait: float = 5.0
    """Seconds a lookup may wait for a resolver thread (the partner's `max_wait`)."""
    failed: dict[_Key, OSError] = field(default_factory=dict)
    """What this call's lookup ahead got instead of an answer, for its connection."""


call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("resolver_call", default=None)


class ResolverBusy(OSError):
    """Every resolver thread was busy for as long as the call could wait: ours, not the
    partner's. An OSError, as aiohttp expects of a resolver (`ClientConnectorDNSError`)."""

    def __init__(self, threads: int) -> None:
        super().__init__(
            errno.EBUSY,
            f"this gateway process has {threads} name lookups under way, its limit",
        )


class _Lookup:
    """One name's lookup under way: `placed` once a thread runs it, `task` its answer."""

    def __init__(self) -> None:
        self.placed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[list[ResolveResult]] | None = None
        self.waiting = 0


class _NoAnswer(Exception):
    """The call's own bound on a running lookup passed (the lookup goes on for others)."""


class PartnerResolver(AbstractResolver):
    def __init__(self, threads: int = 64, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="resolver")
        self._places = asyncio.Semaphore(threads)
        self._clock = clock
        self._under_way: dict[_Key, _Lookup] = {}
        # Answers kept for the connection that follows a lookup ahead, and the calls after.
        self._kept: dict[_Key, tuple[float, list[ResolveResult]]] = {}

    def saturated(self) -> bool:
        """Whether every resolver thread is taken (a lookup started now waits for one)."""
        return self._places.locked()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        terms = call.get()
        if terms is not None and (failed := terms.failed.get(key)) is not None:
            raise type(failed)(*failed.args)  # a fresh one each time (its traceback)
        return await self._answer(key, 5.0 if terms is None else terms.wait, None)

    async def ahead(
        self, host: str, port: int, family: socket.AddressFamily, timeout: float
    ) -> None:
        """Resolve `host` before the partner's timeout starts, the lookup bounded by `timeout`
        once a thread runs it; a failure is kept for this call's connection (`Call.failed`),
        which meets it as the partner's. Raises only what is ours (`ResolverBusy`, EMFILE)."""
        key = (host, port, int(family))
        terms = call.get()
        try:
            await self._answer(key, 5.0 if terms is None else terms.wait, timeout)
            return
        except _NoAnswer:
            failure: OSError = socket.gaierror(
                socket.EAI_AGAIN, f"no answer from the name server in {timeout:g} s"
            )
        except OSError as exc:
            if _ours(exc):
                raise
            failure = exc
        if terms is not None:
            terms.failed[key] = failure

    async def _answer(self, key: _Key, wait: float, timeout: float | None) -> list[ResolveResult]:
        """The name's answer: kept, or from its lookup (joined, or started), waited for a
        thread at most `wait` seconds (`ResolverBusy`), then for the answer at most
        `timeout` (`_NoAnswer`; None: as long as the caller)."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] > self._clock():
            return kept[1]
        lookup = self._under_way.get(key)
        if lookup is None:
            lookup = self._under_way[key] = _Lookup()
            lookup.task = asyncio.create_task(self._lookup(key, lookup))
            lookup.task.add_done_callback(lambda done: self._done(key, lookup, done))
        assert lookup.task is not None
        lookup.waiting += 1
        try:
            if not lookup.placed.done():
                try:
                    async with asyncio.timeout(wait):
                        await asyncio.shield(lookup.placed)
                except TimeoutError:
                    raise ResolverBusy(self._threads) from None
            bound = asyncio.timeout(timeout)
            try:
                async with bound:
                    return await asyncio.shield(lookup.task)
            except TimeoutError:
                if bound.expired():
                    raise _NoAnswer from None
                raise
        finally:
            lookup.waiting -= 1
            if not lookup.waiting and not lookup.placed.done():
                # Nobody waits for it any more, and no thread runs it: dropped.
                lookup.task.cancel()
                if self._under_way.get(key) is lookup:
                    del self._under_way[key]

    async def _lookup(self, key: _Key, lookup: _Lookup) -> list[ResolveResult]:
        host, port, family = key
        await self._places.acquire()
        lookup.placed.set_result(None)
        if _out_of_descriptors():  # judged before asking too: one freed meanwhile hides it
            self._places.release()
            raise _no_descriptor()
        loop = asyncio.get_running_loop()
        work = self._executor.submit(
            socket.getaddrinfo, host, port, family, socket.SOCK_STREAM, 0, _AI_ADDRCONFIG
        )
        # The place is the thread's until getaddrinfo returns, whoever stopped waiting for it.
        work.add_done_callback(lambda _: _call_soon(loop, self._places.release))
        try:
            infos = await asyncio.wrap_future(work)
        except UnicodeError as exc:  # the idna codec: a label empty or over 63 characters
            raise OSError(
                errno.EINVAL,
                f"{host} is not a valid host name (a label empty or over 63 characters)",
            ) from exc
        except OSError as exc:  # socket.gaierror included
            if _out_of_descriptors():
                raise _no_descriptor() from exc
            raise
        return [_result(host, info) for info in infos if _usable(info)]

    def _done(self, key: _Key, lookup: _Lookup, done: asyncio.Task[list[ResolveResult]]) -> None:
        if self._under_way.get(key) is lookup:
            del self._under_way[key]
        if done.cancelled():
            return
        if done.exception() is not None:  # retrieved; a failure is its callers', not kept
            return
        self._kept[key] = (self._clock() + _FRESH, done.result())
        if len(self._kept) > _KEPT:
            now = self._clock()
            self._kept = {k: v for k, v in self._kept.items() if v[0] > now}

    async def close(self) -> None:
        for lookup in list(self._under_way.values()):
            if lookup.task is not None:
                lookup.task.cancel()
        self._under_way.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)


_FRESH: Final = 10.0
"""Seconds a lookup's answer is kept (the connector keeps none of its own: `use_dns_cache`)."""
_KEPT: Final = 1000
"""Names kept before the stale ones are dropped."""
_AI_ADDRCONFIG: Final = socket.AI_ADDRCONFIG & getattr(socket, "AI_MASK", socket.AI_ADDRCONFIG)
_NUMERIC: Final = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    """`callback` run on `loop` from a resolver thread, unless the loop closed meanwhile."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback)


def _ours(exc: OSError) -> bool:
    """A failure of this process's resources, not of the name."""
    return isinstance(exc, ResolverBusy) or exc.errno in (errno.EMFILE, errno.ENFILE)


def _no_descriptor() -> OSError:
    return OSError(errno.EMFILE, "no file descriptor left to resolve a name")


def _out_of_descriptors() -> bool:
    """Whether this process cannot open a file now (its open-file limit reached)."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
    except OSError as exc:
        return exc.errno in (errno.EMFILE, errno.ENFILE)
    os.close(fd)
    return False


def _usable(info: tuple[Any, ...]) -> bool:
    family, address = info[0], info[4]
    return family != socket.AF_INET6 or len(address) >= 3


def _result(host: str, info: tuple[Any, ...]) -> ResolveResult:
    family, _, proto, _, address = info
    resolved = address[0]
    if family == socket.AF_INET6 and address[3]:  # a link-local address keeps its scope
        resolved = f"{address[0]}%{address[3]}"
    return ResolveResult(
        hostname=host,
        host=resolved,
        port=address[1],
        family=family,
        proto=proto,
        flags=_NUMERIC,
    )
