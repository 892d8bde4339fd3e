"""How long journaled writes on the embedded SecantusDB wait for a busy disk: the worst
`ping`, unjournaled insert and journaled insert (`j: true`) of 40 rounds, on a quiet disk,
beside two threads writing and syncing files on the disk (`--writers-dir`), and beside those
and eight journaled writers.

SecantusDB answers a journaled write once its journal is flushed to the disk (`fsync`);
reads and unjournaled writes do not wait for it. To see a slow disk on a fast machine,
throttle this process and its children with cgroup v1 blkio (as root; `MAJ:MIN` from
`ls -l /dev/<disk>`; cgroup v2 has `io.max` instead):

    mkdir /sys/fs/cgroup/blkio/slowdisk
    echo "MAJ:MIN 8388608" > /sys/fs/cgroup/blkio/slowdisk/blkio.throttle.write_bps_device
    echo "MAJ:MIN 100" > /sys/fs/cgroup/blkio/slowdisk/blkio.throttle.write_iops_device
    sh -c 'echo $$ > /sys/fs/cgroup/blkio/slowdisk/cgroup.procs; exec python bench/journal_stall.py'

`--storage /dev/shm/x` puts the database in memory (the test suite's choice, README); the
writers stay on the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pymongo import MongoClient, WriteConcern

from gateway.store.embedded import EmbeddedServer

ROUNDS = 40


def worst_of(commands: dict[str, Callable[[], object]]) -> dict[str, float]:
    """The slowest of ROUNDS runs of each command, in ms."""
    worst = dict.fromkeys(commands, 0.0)
    for _ in range(ROUNDS):
        for name, command in commands.items():
            started = time.monotonic()
            command()
            worst[name] = max(worst[name], (time.monotonic() - started) * 1000)
        time.sleep(0.05)
    return worst


def disk_writer(path: Path, stop: threading.Event, synced: threading.Semaphore) -> None:
    """4 MiB at a time to `path`, each synced to the disk (`synced` released after each),
    until `stop`; the file wraps at 1 GiB."""
    with path.open("wb") as f:
        while not stop.is_set():
            f.write(os.urandom(4 << 20))
            f.flush()
            os.fsync(f.fileno())
            synced.release()
            if f.tell() > 1 << 30:
                f.seek(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--storage",
        type=Path,
        help="a directory for the database (default: a temporary one on the disk)",
    )
    parser.add_argument(
        "--writers-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the two disk writers write, on the disk (default: the temporary directory)",
    )
    args = parser.parse_args()
    args.writers_dir.mkdir(parents=True, exist_ok=True)
    writers = [args.writers_dir / f"journal-stall-{os.getpid()}-{n}" for n in range(2)]
    base = args.storage or Path(tempfile.mkdtemp(prefix="journal-stall-"))
    base.mkdir(parents=True, exist_ok=True)
    server = EmbeddedServer(base / "db")
    server.start()
    client: MongoClient[dict[str, object]] = MongoClient(server.uri, timeoutMS=60_000)
    stop = threading.Event()
    synced = threading.Semaphore(0)  # a writer's first chunk on the disk
    threads: list[threading.Thread] = []
    try:
        db = client["stall"]
        journaled = db.get_collection("journaled", write_concern=WriteConcern(j=True))
        commands: dict[str, Callable[[], object]] = {
            "ping": lambda: client.admin.command("ping"),
            "insert": lambda: db["plain"].insert_one({"a": 1}),
            "insert j:true": lambda: journaled.insert_one({"a": "x" * 1000}),
        }

        def report(label: str) -> None:
            worst = worst_of(commands)
            print(
                f"{label:<40}" + "  ".join(f"{k} {v:7.1f} ms" for k, v in worst.items()), flush=True
            )

        def journaled_writer() -> None:
            while not stop.is_set():
                journaled.insert_one({"a": "x" * 1000})

        print(f"database in {base}; worst of {ROUNDS} rounds")
        report("quiet")
        for writer in writers:
            threads.append(threading.Thread(target=disk_writer, args=(writer, stop, synced)))
            threads[-1].start()
        for _ in writers:  # both busy syncing before the rounds
            synced.acquire()
        report("two writers syncing to the disk")
        for _ in range(8):
            threads.append(threading.Thread(target=journaled_writer))
            threads[-1].start()
        report("and eight journaled writers")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
        server.stop()
        for writer in writers:
            writer.unlink(missing_ok=True)
        if args.storage is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
