// Shared measurement loop of the Node.js peer drivers (graphile-worker, pg-boss) of
// scripts/bench-peers.sh. It mirrors `cortex bench queue` (crates/cortex/src/bench/queue.rs);
// scripts/bench-peers/pgqueuer_driver.py is the same loop in Python. A driver supplies an adapter:
//
//   setup()                   install the peer's schema on the (empty, throw-away) database
//   enqueueBatch(n)           insert n no-op jobs in one call (one transaction)
//   enqueueOne(seq)           insert one job whose payload carries `seq` (one transaction)
//   startWorker(c, onRun)     start a worker running at most c jobs at once; its handler calls
//                             onRun(payload) first thing; resolves to { stop() }
//   unfinished()              jobs not yet finished (queued, locked or running), read from the database
//   sql(text)                 run one statement (used for ANALYZE)
//   close()
//
// and calls `main(name, version, settings, makeAdapter)`. The report is printed on stdout as JSON
// in the shape of `cortex bench queue --json` plus `system`, `version` and `settings`.

import os from "node:os";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

// The constants of crates/cortex/src/bench/queue.rs.
export const ENQUEUE_BATCH = 500;
export const LATENCY_SAMPLES = 500;
export const LATENCY_RATE_PER_SECOND = 100;
export const LATENCY_CONCURRENCY = 16;
export const PROCESS_CONCURRENCIES = [1, 16, 64];

/** The payload of every bulk job, as `cortex bench queue` enqueues it. */
export const NO_OP_PAYLOAD = { prompt: "no-op" };

/** A promise with its resolve function outside. */
function deferred() {
  let resolve;
  const promise = new Promise((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** Nearest-rank percentile of sorted values (the same rule as `cortex bench`). */
export function percentile(sorted, quantile) {
  const rank = Math.ceil(quantile * sorted.length);
  return sorted[Math.max(rank - 1, 0)] ?? 0;
}

/** Inserts `jobs` jobs in calls of ENQUEUE_BATCH; returns the seconds taken. */
async function enqueueBulk(adapter, jobs) {
  const start = performance.now();
  for (let left = jobs; left > 0; left -= ENQUEUE_BATCH) {
    await adapter.enqueueBatch(Math.min(left, ENQUEUE_BATCH));
  }
  return (performance.now() - start) / 1000;
}

/**
 * Drains the waiting backlog with a worker of `concurrency`; returns the seconds from the first
 * handler call until the database shows no unfinished job (every completion committed).
 */
async function drain(adapter, jobs, concurrency) {
  let runs = 0;
  let first = null;
  const allRan = deferred();
  const worker = await adapter.startWorker(concurrency, () => {
    first ??= performance.now();
    runs += 1;
    if (runs >= jobs) allRan.resolve();
  });
  await allRan.promise;
  // Completions may still be buffered or in flight: read the table until none is left. This
  // polling starts only once every handler has run, so it does not load the drain itself.
  while ((await adapter.unfinished()) > 0) {
    await sleep(1);
  }
  const end = performance.now();
  await worker.stop();
  if (runs !== jobs) {
    throw new Error(`the worker ran ${runs} handler calls for ${jobs} jobs`);
  }
  return (end - first) / 1000;
}

/**
 * Enqueues `samples` jobs one per call at LATENCY_RATE_PER_SECOND into a running, idle worker;
 * returns each job's delay in ms from its enqueue call returning to its handler starting.
 */
async function latency(adapter, samples) {
  const started = new Map();
  let runs = 0;
  const waiters = [];
  const worker = await adapter.startWorker(LATENCY_CONCURRENCY, (payload) => {
    started.set(payload.seq, performance.now());
    runs += 1;
    for (const waiter of waiters.filter((w) => runs >= w.count)) waiter.resolve();
  });
  const ran = (count) => {
    const waiter = { count, ...deferred() };
    waiters.push(waiter);
    if (runs >= count) waiter.resolve();
    return waiter.promise;
  };

  // A first job, not measured, proves the worker is up and listening.
  await adapter.enqueueOne(-1);
  await ran(1);

  // A steady tick; a late tick delays the following ones (tokio's MissedTickBehavior::Delay).
  const period = 1000 / LATENCY_RATE_PER_SECOND;
  const committed = new Map();
  let next = performance.now();
  for (let seq = 0; seq < samples; seq += 1) {
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    next = Math.max(next, performance.now()) + period;
    await adapter.enqueueOne(seq);
    committed.set(seq, performance.now());
  }
  await ran(samples + 1);
  await worker.stop();
  const missing = [...committed.keys()].filter((seq) => !started.has(seq));
  if (missing.length > 0) throw new Error(`${missing.length} sampled jobs never started`);
  // The worker may start a job before the enqueue acknowledgement reaches the enqueuer.
  return [...committed].map(([seq, at]) => Math.max(0, started.get(seq) - at)).sort((a, b) => a - b);
}

/** Runs the three measurements of `cortex bench queue` against one peer and prints the report. */
export async function main(system, version, settings, makeAdapter) {
  const [databaseUrl, jobsArg] = process.argv.slice(2);
  const jobs = Number.parseInt(jobsArg ?? "", 10);
  if (!databaseUrl || !(jobs > 0)) {
    throw new Error(`usage: node ${process.argv[1]} <database-url> <jobs>`);
  }
  const adapter = await makeAdapter(databaseUrl);
  const figures = [];
  const figure = (name, value, unit) => figures.push({ name, value, unit });
  try {
    await adapter.setup();
    figure("enqueue_jobs_per_second", jobs / (await enqueueBulk(adapter, jobs)), "jobs/s");
    for (const [run, concurrency] of PROCESS_CONCURRENCIES.entries()) {
      if (run > 0) await enqueueBulk(adapter, jobs);
      // As `cortex bench queue` does after each bulk load: planner statistics a running server has.
      await adapter.sql("ANALYZE");
      const seconds = await drain(adapter, jobs, concurrency);
      figure(`process_concurrency_${concurrency}_jobs_per_second`, jobs / seconds, "jobs/s");
    }
    const latencies = await latency(adapter, Math.min(jobs, LATENCY_SAMPLES));
    figure("latency_p50_ms", percentile(latencies, 0.5), "ms");
    figure("latency_p99_ms", percentile(latencies, 0.99), "ms");
  } finally {
    await adapter.close();
  }
  const report = {
    system,
    version,
    scenario: "queue",
    engine: "postgres",
    cores: os.availableParallelism(),
    runtime: `node ${process.version}`,
    settings,
    figures,
  };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** Entry point of a driver: run `main` and exit non-zero with the error on stderr. */
export function run(system, version, settings, makeAdapter) {
  main(system, version, settings, makeAdapter).then(
    () => process.exit(0),
    (err) => {
      console.error(`${system}: ${err?.stack ?? err}`);
      process.exit(1);
    },
  );
}
