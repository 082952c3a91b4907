"""pgqueuer 1.6 driver of scripts/bench-peers.sh: the three measurements of `cortex bench queue`.

The same loop as scripts/bench-peers/common.mjs (the Node.js drivers), in Python, through pgqueuer's
public API with its asyncpg driver. Run with the virtualenv the script creates, as
`python pgqueuer_driver.py <database-url> <jobs>`; prints one JSON report on stdout.

Settings: bulk enqueue is `Queries.enqueue` with lists (one multi-row insert per 500 jobs), single
enqueue `Queries.enqueue` with one job. A worker of concurrency c is one `PgQueuer` on its own asyncpg
connection (as in pgqueuer's own benchmark, tools/benchmark.py) whose entrypoint has
`concurrency_limit=c`, run with `batch_size=c`; idle workers are woken by pgqueuer's LISTEN/NOTIFY.

Equivalence caveats (what still differs from `cortex bench queue`):
- pgqueuer's concurrency limit is enforced in its dequeue query by counting the entrypoint's picked
  rows; a finished job stays picked until the completion log buffer flushes (at `batch_size`
  completions or after 0.1 s), so `batch_size=c` lets a full set of c completions flush at once. A
  completed job row is moved to the log table (cortex keeps the job row, writes an event row per state
  change and checks the agent's concurrency limit per claim).
- Processing is timed from the first handler call to the moment the queue table holds no job;
  enqueue→start from `enqueue` returning to the handler starting. Enqueuer and worker share one
  asyncio event loop on one thread (uvloop, as pgqueuer's own benchmark and CLI run it; cortex:
  tokio's multi-threaded runtime).
- Planner statistics: `ANALYZE` of the whole database after each bulk load, as cortex analyses its job
  table.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import asyncpg
import uvloop
from pgqueuer import AsyncpgDriver, Job, PgQueuer, Queries

# The constants of crates/cortex/src/bench/queue.rs (and of common.mjs).
ENQUEUE_BATCH = 500
LATENCY_SAMPLES = 500
LATENCY_RATE_PER_SECOND = 100
LATENCY_CONCURRENCY = 16
PROCESS_CONCURRENCIES = (1, 16, 64)

ENTRYPOINT = "noop"
NO_OP_PAYLOAD = json.dumps({"prompt": "no-op"}).encode()


def percentile(values: list[float], quantile: float) -> float:
    """Nearest-rank percentile of sorted values (the same rule as `cortex bench`)."""
    if not values:
        return 0.0
    rank = math.ceil(quantile * len(values))
    return values[max(rank - 1, 0)]


class Worker:
    """A running PgQueuer with one no-op entrypoint limited to `concurrency` jobs at once."""

    def __init__(self, url: str, concurrency: int, on_run: Callable[[bytes | None], None]) -> None:
        self.url = url
        self.concurrency = concurrency
        self.on_run = on_run
        self.task: asyncio.Task[None] | None = None
        self.manager: PgQueuer | None = None
        self.connection: asyncpg.Connection | None = None

    async def start(self) -> Worker:
        self.connection = await asyncpg.connect(self.url)
        self.manager = PgQueuer(AsyncpgDriver(self.connection))
        on_run = self.on_run

        @self.manager.entrypoint(ENTRYPOINT, concurrency_limit=self.concurrency)
        async def noop(job: Job) -> None:
            on_run(job.payload)

        self.task = asyncio.create_task(self.manager.run(batch_size=self.concurrency))
        return self

    async def stop(self) -> None:
        assert self.manager is not None and self.task is not None and self.connection is not None
        self.manager.shutdown.set()
        await self.task
        await self.connection.close()


class Peer:
    """The adapter of common.mjs, for pgqueuer."""

    def __init__(self, url: str, connection: asyncpg.Connection) -> None:
        self.url = url
        self.connection = connection
        self.queries = Queries(AsyncpgDriver(connection))

    async def setup(self) -> None:
        await self.queries.install()

    async def enqueue_batch(self, n: int) -> None:
        await self.queries.enqueue([ENTRYPOINT] * n, [NO_OP_PAYLOAD] * n, [0] * n)

    async def enqueue_one(self, seq: int) -> None:
        await self.queries.enqueue(ENTRYPOINT, json.dumps({"seq": seq}).encode())

    async def unfinished(self) -> int:
        return await self.connection.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = $1", ENTRYPOINT)

    async def start_worker(self, concurrency: int, on_run: Callable[[bytes | None], None]) -> Worker:
        return await Worker(self.url, concurrency, on_run).start()


async def enqueue_bulk(peer: Peer, jobs: int) -> float:
    """Inserts `jobs` jobs in calls of ENQUEUE_BATCH; returns the seconds taken."""
    start = time.perf_counter()
    left = jobs
    while left > 0:
        await peer.enqueue_batch(min(left, ENQUEUE_BATCH))
        left -= ENQUEUE_BATCH
    return time.perf_counter() - start


class Runs:
    """Counts handler calls and lets the measurement wait for a number of them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.started: dict[int, float] = {}
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def on_run(self, payload: bytes | None) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        if payload is not None:
            seq = json.loads(payload).get("seq")
            if seq is not None:
                self.started[seq] = now
        self.count += 1
        for count, waiter in self.waiters:
            if self.count >= count and not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, count: int) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append((count, waiter))
        if self.count >= count:
            waiter.set_result(None)
        await waiter


async def drain(peer: Peer, jobs: int, concurrency: int) -> float:
    """Seconds from the first handler call until the queue table holds no job."""
    runs = Runs()
    worker = await peer.start_worker(concurrency, runs.on_run)
    await runs.wait_for(jobs)
    # Completions may still be buffered: read the table until none is left. This polling starts
    # only once every handler has run, so it does not load the drain itself.
    while await peer.unfinished() > 0:
        await asyncio.sleep(0.001)
    end = time.perf_counter()
    await worker.stop()
    if runs.count != jobs or runs.first is None:
        raise RuntimeError(f"the worker ran {runs.count} handler calls for {jobs} jobs")
    return end - runs.first


async def latency(peer: Peer, samples: int) -> list[float]:
    """Enqueue→start delays in ms of `samples` jobs enqueued one per call at a steady rate."""
    runs = Runs()
    worker = await peer.start_worker(LATENCY_CONCURRENCY, runs.on_run)
    # A first job, not measured, proves the worker is up and listening.
    await peer.enqueue_one(-1)
    await runs.wait_for(1)

    # A steady tick; a late tick delays the following ones (tokio's MissedTickBehavior::Delay).
    period = 1 / LATENCY_RATE_PER_SECOND
    committed: dict[int, float] = {}
    next_tick = time.perf_counter()
    for seq in range(samples):
        wait = next_tick - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        next_tick = max(next_tick, time.perf_counter()) + period
        await peer.enqueue_one(seq)
        committed[seq] = time.perf_counter()
    await runs.wait_for(samples + 1)
    await worker.stop()
    if missing := [seq for seq in committed if seq not in runs.started]:
        raise RuntimeError(f"{len(missing)} sampled jobs never started")
    # The worker may start a job before the enqueue acknowledgement reaches the enqueuer.
    return sorted(max(0.0, (runs.started[seq] - at) * 1000) for seq, at in committed.items())


async def measure(url: str, jobs: int) -> dict[str, object]:
    connection = await asyncpg.connect(url)
    peer = Peer(url, connection)
    figures: list[dict[str, object]] = []

    def figure(name: str, value: float, unit: str) -> None:
        figures.append({"name": name, "value": value, "unit": unit})

    try:
        await peer.setup()
        figure("enqueue_jobs_per_second", jobs / await enqueue_bulk(peer, jobs), "jobs/s")
        for run, concurrency in enumerate(PROCESS_CONCURRENCIES):
            if run > 0:
                await enqueue_bulk(peer, jobs)
            # As `cortex bench queue` does after each bulk load: planner statistics a running server has.
            await connection.execute("ANALYZE")
            seconds = await drain(peer, jobs, concurrency)
            figure(f"process_concurrency_{concurrency}_jobs_per_second", jobs / seconds, "jobs/s")
        latencies = await latency(peer, min(jobs, LATENCY_SAMPLES))
        figure("latency_p50_ms", percentile(latencies, 0.50), "ms")
        figure("latency_p99_ms", percentile(latencies, 0.99), "ms")
    finally:
        await connection.close()
    return {
        "system": "pgqueuer",
        "version": version("pgqueuer"),
        "scenario": "queue",
        "engine": "postgres",
        "cores": os.cpu_count(),
        "runtime": f"python {sys.version.split()[0]}, uvloop {version('uvloop')}, asyncpg {version('asyncpg')}",
        "settings": {
            "entrypoint": {"concurrency_limit": "the measured concurrency"},
            "run": {"batch_size": "the measured concurrency"},
            "driver": "AsyncpgDriver, one connection per worker",
            "enqueue": f"Queries.enqueue with lists, {ENQUEUE_BATCH} per call; one job for latency",
        },
        "figures": figures,
    }


def main() -> None:
    if len(sys.argv) != 3 or not sys.argv[2].isdigit() or int(sys.argv[2]) < 1:
        sys.exit(f"usage: python {sys.argv[0]} <database-url> <jobs>")
    report = uvloop.run(measure(sys.argv[1], int(sys.argv[2])))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
