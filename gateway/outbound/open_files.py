"""The open-file limit a process needs for its outbound capacity (`GATEWAY_OUTBOUND_CONNECTIONS`).

Each request in flight to a partner holds a file descriptor, an idle kept-alive connection one
more until it closes, and the process has its inbound connections, its database pool and its
files besides. A plain host or a systemd service starts with a soft limit of 1,024 (the hard
one is often 524,288): below the capacity, the process would run out of descriptors first
(each such call is the gateway's `overloaded`, never the partner's, but refused all the
same). So at start the soft limit is raised, towards the hard one, to what the capacity needs;
a hard limit below that is logged as a warning naming both settings (docs/operations.md)."""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

RESERVE = 1024
"""Descriptors beyond the capacity: inbound connections, the database pool, files."""


def needed(capacity: int) -> int:
    """The open-file limit a process with this outbound capacity should have."""
    return capacity + RESERVE


def raise_for(capacity: int) -> int:
    """The soft RLIMIT_NOFILE raised to `needed(capacity)` if it is lower, within the hard
    limit; a warning when that is not enough. The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed(capacity)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("the open-file limit (%d) could not be raised: %s", soft, exc)
        else:
            if target > soft:
                log.info("open-file limit raised from %d to %d (hard %d)", soft, target, hard)
            soft = target
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "GATEWAY_OUTBOUND_CONNECTIONS=%d needs an open-file limit of about %d; this "
            "process's is %d (its hard limit): calls will be held `overloaded` for want of "
            "file descriptors before the capacity is reached. Raise the hard limit (`ulimit "
            "-Hn`, systemd LimitNOFILE, docker --ulimit nofile) or lower "
            "GATEWAY_OUTBOUND_CONNECTIONS",
            capacity,
            want,
            soft,
        )
    return soft
