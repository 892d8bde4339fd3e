"""Name resolution for the sender's connector: the gateway's own resource, under its own rules.

`getaddrinfo` blocks a thread for as long as a name server takes (glibc: 5 s per attempt). On
aiohttp's default resolver those threads are the event loop's default executor (CPUs + 4 of
them, shared with password hashing and more), and the wait for one ran inside the partner's
timeout: one tenant's slowly resolving names made another tenant's healthy partner time
out, blamed for it. Here:

- the lookups run on threads of their own (`threads`), a place in which a lookup waits for at
  most the call's wait for our resources (`waiting`, set by the sender to the partner's
  `max_wait`); still none free, it raises `ResolverBusy`: the sender's `overloaded`, ours,
  never the partner's;
- one lookup per name at a time: concurrent calls to a partner share it;
- the sender resolves a partner's host before the partner's timeout starts (`Sender`), the
  lookup itself bounded by that timeout; its answer (or the name's failure) is kept `_FRESH`
  seconds, for the connection that follows and the calls after it;
- a lookup that fails while this process has no file descriptor left (glibc then answers
  "Name or service not known": it cannot open /etc/hosts nor a socket) is `EMFILE`, the
  sender's `overloaded`, not the partner's `connect` failure.
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
from typing import Any, Final

from aiohttp.abc import AbstractResolver, ResolveResult

waiting: contextvars.ContextVar[float] = contextvars.ContextVar("resolver_wait", default=5.0)
"""Seconds a lookup of the current call may wait for a resolver thread (the sender sets it
to the partner's `max_wait`)."""


class ResolverBusy(OSError):
    """Every resolver thread was busy for as long as the call could wait: ours, not the
    partner's. An OSError, as aiohttp expects of a resolver (`ClientConnectorDNSError`)."""

    def __init__(self, threads: int) -> None:
        super().__init__(
            errno.EBUSY,
            f"this gateway process has {threads} name lookups under way, its limit",
        )


class PartnerResolver(AbstractResolver):
    def __init__(self, threads: int = 64, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="resolver")
        self._places = asyncio.Semaphore(threads)
        self._clock = clock
        self._under_way: dict[tuple[str, int, int], asyncio.Future[list[ResolveResult]]] = {}
        # Answers (or failures) kept for the connection that follows a lookup ahead.
        self._kept: dict[tuple[str, int, int], tuple[float, list[ResolveResult] | OSError]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        kept = self._kept.get(key)
        if kept is not None and kept[0] > self._clock():
            if isinstance(kept[1], OSError):
                raise type(kept[1])(*kept[1].args)  # a fresh one each time (its traceback)
            return kept[1]
        shared = self._under_way.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._lookup(host, port, family))
            self._under_way[key] = shared
            shared.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(shared)

    async def ahead(
        self, host: str, port: int, family: socket.AddressFamily, timeout: float
    ) -> None:
        """Resolve `host` before the partner's timeout starts, its answer or failure kept for
        the connection that follows; the lookup itself is bounded by `timeout`. Raises only
        what is ours (`ResolverBusy`, EMFILE)."""
        key = (host, port, int(family))
        try:
            async with asyncio.timeout(timeout):
                await self.resolve(host, port, family)
        except TimeoutError:  # (an OSError too: caught first)
            failure = OSError(errno.ETIMEDOUT, f"no answer from the name server in {timeout:g} s")
            self._kept[key] = (self._clock() + _FRESH, failure)
        except OSError as exc:
            if _ours(exc):
                raise

    async def _lookup(
        self, host: str, port: int, family: socket.AddressFamily
    ) -> list[ResolveResult]:
        try:
            async with asyncio.timeout(waiting.get()):
                await self._places.acquire()
        except TimeoutError:
            raise ResolverBusy(self._threads) from None
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
                raise OSError(errno.EMFILE, "no file descriptor left to resolve a name") from exc
            raise
        return [_result(host, info) for info in infos if _usable(info)]

    def _done(self, key: tuple[str, int, int], done: asyncio.Future[list[ResolveResult]]) -> None:
        self._under_way.pop(key, None)
        if done.cancelled():
            return
        failure = done.exception()  # retrieved: nobody may be waiting for it any more
        if isinstance(failure, OSError) and not _ours(failure):
            self._kept[key] = (self._clock() + _FRESH, failure)
        elif failure is None:
            self._kept[key] = (self._clock() + _FRESH, done.result())
        if len(self._kept) > _KEPT:
            now = self._clock()
            self._kept = {k: v for k, v in self._kept.items() if v[0] > now}

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_FRESH: Final = 10.0
"""Seconds a lookup's answer is kept (aiohttp keeps its own for as long: `ttl_dns_cache`)."""
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
