"""The commands a store sends, and what the database did for each (its own `explain`): a
second client of the test's database records them. The embedded SecantusDB's `explain` of its
primary index is not to be trusted (it reports three documents where it read every id), so a
plan names the index read. Nor is its count of documents examined for a plan it does not call
an index scan: it reports the whole collection (`count_matching(coll, {})`), while the query
itself reads through the index of the filter's first indexed member and checks the rest on
what it read (`tests/query_plans.py` `Plan.via` follows that rule): a `COLLSCAN` with the
collection's size here is not, by itself, a full scan (rev62 F2/F4, timed: 9 ms on 200,000
deliveries where a true full scan took 8 s)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import monitoring


class Reads(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("find", "aggregate"):
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextmanager
def heard() -> Iterator[Reads]:
    """The reads of every client made until the end (the services' when made inside it, as
    `query_plans.listening`), to count what a use case sends."""
    reads = Reads()
    listeners = monitoring._LISTENERS.command_listeners
    listeners.append(reads)
    try:
        yield reads
    finally:
        listeners.remove(reads)


def reads_of(reads: Reads, collection: str) -> list[dict[str, Any]]:
    """The reads sent of one collection."""
    return [c for c in reads.sent if c.get("find", c.get("aggregate")) == collection]


async def read_plans(db: Any, reads: Reads) -> list[tuple[str, int]]:
    """For each command sent: the index the database read (by name: its `explain` of the
    primary index is not to be trusted) and how many documents it examined."""
    plans = []
    for command in reads.sent:
        sent = {k: v for k, v in command.items() if k not in ("lsid", "$db", "$clusterTime")}
        plan = await db.command("explain", sent, verbosity="executionStats")
        index = re.search(r"'indexName': '(\w+)'", str(plan["queryPlanner"]["winningPlan"]))
        used = index.group(1) if index else "COLLSCAN"
        plans.append((used, int(plan["executionStats"]["totalDocsExamined"])))
    reads.sent.clear()
    return plans
