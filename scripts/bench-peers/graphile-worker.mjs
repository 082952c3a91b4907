// graphile-worker 0.18 driver of scripts/bench-peers.sh: the three measurements of
// `cortex bench queue` (see common.mjs) through graphile-worker's public API.
//
// Run from the temporary install directory the script creates (it copies this file there), as
// `node graphile-worker.mjs <database-url> <jobs>`; prints one JSON report on stdout.
//
// Settings: graphile-worker's documented fast path, the configuration of its published performance
// figures (worker.graphile.org/docs/performance): `concurrentJobs` = the measured concurrency,
// `maxPoolSize` = max(10, concurrency + 2) as its docs recommend, a local queue of 500 jobs, completion
// and failure batching on (`completeJobBatchDelay: 0`, `failJobBatchDelay: 0`). Bulk enqueue is
// `addJobs` (one `add_jobs` call per 500 jobs), single enqueue `addJob`.
//
// Equivalence caveats (what still differs from `cortex bench queue`):
// - The local queue locks up to 500 jobs per fetch, ahead of the free slots; cortex's engine claims at
//   most as many jobs as it has free slots. At concurrency 1 graphile-worker still fetches in batches
//   of up to 500 and runs them one at a time.
// - Completions are batched after the handler returns; cortex batches completions too, but records an
//   event row per state change (claim, completion) and checks the agent's concurrency limit per claim,
//   which graphile-worker has no equivalent of. A graphile-worker job row is deleted on completion.
// - Its processing figure is timed from the first handler call to the moment the table holds no job;
//   the enqueue→start figure from `addJob` returning to the handler starting. Node.js is single
//   threaded: enqueuer and worker share one event loop (cortex: tokio's multi-threaded runtime).
// - Planner statistics: `ANALYZE` of the whole database after each bulk load, as cortex analyses its
//   job table.

import { readFileSync } from "node:fs";
import { Logger, makeWorkerUtils, run as runWorker } from "graphile-worker";
import { NO_OP_PAYLOAD, ENQUEUE_BATCH, run } from "./common.mjs";

const { version } = JSON.parse(
  readFileSync(new URL("./node_modules/graphile-worker/package.json", import.meta.url), "utf8"),
);
const LOCAL_QUEUE_SIZE = 500;

/** Warnings and errors only: info lines per worker start would clutter the report. */
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

const settings = {
  concurrentJobs: "the measured concurrency",
  maxPoolSize: "max(10, concurrency + 2)",
  localQueue: { size: LOCAL_QUEUE_SIZE },
  completeJobBatchDelay: 0,
  failJobBatchDelay: 0,
  enqueue: `addJobs, ${ENQUEUE_BATCH} per call; addJob for latency`,
};

run("graphile-worker", version, settings, async (connectionString) => {
  const utils = await makeWorkerUtils({ connectionString, logger });
  const bulk = (n) => Array.from({ length: n }, () => ({ identifier: "noop", payload: NO_OP_PAYLOAD }));
  return {
    setup: () => utils.migrate(),
    enqueueBatch: (n) => utils.addJobs(bulk(n)),
    enqueueOne: (seq) => utils.addJob("noop", { seq }),
    async startWorker(concurrency, onRun) {
      const runner = await runWorker({
        connectionString,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        noHandleSignals: true,
        logger,
        taskList: {
          noop: async (payload) => {
            onRun(payload);
          },
        },
        preset: {
          worker: { localQueue: { size: LOCAL_QUEUE_SIZE }, completeJobBatchDelay: 0, failJobBatchDelay: 0 },
        },
      });
      return { stop: () => runner.stop() };
    },
    async unfinished() {
      return utils.withPgClient(async (client) => {
        const { rows } = await client.query("SELECT count(*)::int AS n FROM graphile_worker._private_jobs");
        return rows[0].n;
      });
    },
    sql: (text) => utils.withPgClient((client) => client.query(text)),
    close: () => utils.release(),
  };
});
