"""`secantusd-py` with a transaction lifetime other than its 60 s (MongoDB's
`transactionLifetimeLimitSeconds`, which a MongoDB deployment may set lower; SecantusDB's
command line has no option for it):

    python tests/secantusd_lifetime.py SECONDS [secantusd-py's options]

A test that shows what the gateway does about a transaction a killed process left open
starts its database with this, so as not to wait a whole minute for the server's reaping."""

from __future__ import annotations

import functools
import sys
from typing import Any

from secantus import cli
from secantus.server import SecantusDBServer


def main() -> int:
    seconds = float(sys.argv[1])
    original = SecantusDBServer.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("transaction_lifetime_seconds", seconds)
        original(self, *args, **kwargs)

    SecantusDBServer.__init__ = init  # type: ignore[method-assign]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
