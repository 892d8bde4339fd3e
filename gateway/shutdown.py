"""The fixed bounds of a process's shutdown steps (docs/operations.md, "Shutdown"), in one
place: the steps use them, and `serve --workers N`'s parent adds them up to know how long its
processes may take (`prefork.stop_seconds`)."""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""What stops a gateway process gracefully (`serve`, `serve --workers N`'s parent, `worker`; a
one-shot command is interrupted). SIGHUP too (a terminal or SSH session closed on a gateway
started in it, a `kill -HUP` for a log reopen, a supervisor's reload): its default action
killed the process outright, and under `--workers N` the database stopped first, under the
processes' own shutdown. The gateway rereads nothing on SIGHUP: a new setting takes a
restart."""

HAND_BACK_SECONDS = 3.0
"""At shutdown, past the runners' bound for their work under way: how long they may take to
hand back the leases they still hold and the Idempotency-Keys left to release (a database that
answers does it in milliseconds; what one that does not keeps expires instead)."""

RELEASE_SECONDS = 0.5
"""Of `HAND_BACK_SECONDS`, what a fold's hand-back keeps for letting its shards go after
writing its memory (`shares.ShardedLoop._hand_back`): a write that takes its whole share still
leaves the release its own attempt (a database that answers does it in milliseconds)."""

CLOSE_SECONDS = 2.0
"""At shutdown, how long the client may take to close (it ends its sessions on the server)."""

TEARDOWN_SECONDS = 3.0
"""What the event loop's own teardown gets once every shutdown step has run: cancelling the
tasks left (a database client's close cut short at its deadline), closing async generators,
joining the default executor's threads. A task stuck there (a driver waiting on a database
that froze) would hold the process past its deadlines, and a process manager's grace."""
