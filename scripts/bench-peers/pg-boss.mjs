// pg-boss 12 driver of scripts/bench-peers.sh: the three measurements of `cortex bench queue` (see
// common.mjs) through pg-boss's public API.
//
// Run from the temporary install directory the script creates (it copies this file there), as
// `node pg-boss.mjs <database-url> <jobs>`; prints one JSON report on stdout.
//
// Settings: bulk enqueue is `insert` (one multi-row insert per 500 jobs), single enqueue `send`. The
// queue is created with `notify: true` and the instance with `useListenNotify: true`, pg-boss's
// documented way to wake idle workers at once instead of at their next poll. A worker of concurrency c
// is `work(queue, { localConcurrency: c, batchSize: 10, burstWhenBatchFull: true })`: c polling loops,
// each fetching up to 10 jobs, running them one after another and settling them together, and fetching
// again at once while fetches come back full (pg-boss's documented fast path for a backlog);
// `pollingIntervalSeconds: 0.5` (its minimum) otherwise. The connection pool keeps pg-boss's default
// size (10, as cortex's), whatever the concurrency.
//
// Equivalence caveats (what still differs from `cortex bench queue`):
// - At most c jobs run at once, as in cortex, but up to 10 × c are fetched (locked) ahead. pg-boss only
//   fetches again without waiting out its poll interval while its last fetch came back full and
//   `batchSize` > 1; with `batchSize: 1` a loop runs at most two jobs a second from a backlog, and the
//   other burst trigger (`burstWhenReadyExceeds`) follows cached queue statistics refreshed every second
//   at best: tried, 44 jobs/s at concurrency 1.
// - pg-boss keeps completed jobs in its job table (state `completed`); cortex keeps them too, and
//   also writes an event row per state change and checks the agent's concurrency limit per claim.
// - Processing is timed from the first handler call to the moment no job of the queue is in state
//   created, retry or active; enqueue→start from `send` returning to the handler starting. Node.js is
//   single threaded: enqueuer and worker share one event loop (cortex: tokio's multi-threaded runtime).
// - Planner statistics: `ANALYZE` of the whole database after each bulk load, as cortex analyses its
//   job table. pg-boss's own maintenance and monitoring timers keep running, as in production.

import { readFileSync } from "node:fs";
import { PgBoss } from "pg-boss";
import { NO_OP_PAYLOAD, ENQUEUE_BATCH, run } from "./common.mjs";

const { version } = JSON.parse(readFileSync(new URL("./node_modules/pg-boss/package.json", import.meta.url), "utf8"));
const QUEUE = "noop";
/** Jobs per fetch of one polling loop (see the caveats above). */
const BATCH = 10;

/** The handler of one job: nothing but the measurement's own callback. */
async function noOp(data, onRun) {
  onRun(data);
}

const settings = {
  useListenNotify: true,
  queue: { notify: true },
  work: { localConcurrency: "the measured concurrency", batchSize: BATCH, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 },
  enqueue: `insert, ${ENQUEUE_BATCH} per call; send for latency`,
};

run("pg-boss", version, settings, async (connectionString) => {
  const boss = new PgBoss({ connectionString, useListenNotify: true });
  boss.on("error", (err) => console.error(`pg-boss error: ${err?.message ?? err}`));
  const bulk = (n) => Array.from({ length: n }, () => ({ data: NO_OP_PAYLOAD }));
  return {
    async setup() {
      await boss.start();
      await boss.createQueue(QUEUE, { notify: true });
    },
    enqueueBatch: (n) => boss.insert(QUEUE, bulk(n)),
    enqueueOne: (seq) => boss.send(QUEUE, { seq }),
    async startWorker(concurrency, onRun) {
      await boss.work(
        QUEUE,
        { localConcurrency: concurrency, batchSize: BATCH, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 },
        async (jobs) => {
          for (const job of jobs) await noOp(job.data, onRun);
        },
      );
      return { stop: () => boss.offWork(QUEUE, { wait: true }) };
    },
    async unfinished() {
      const { rows } = await boss
        .getDb()
        .executeSql("SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state < 'completed'", [QUEUE]);
      return rows[0].n;
    },
    sql: (text) => boss.getDb().executeSql(text),
    close: () => boss.stop({ graceful: true, wait: true }),
  };
});
