// test/bench/peers/graphile.js -- graphile-worker's side of test/bench/peers.sh.
//
//   node graphile.js setup
//       Installs graphile-worker's schema (runMigrations) in the database.
//
//   node graphile.js throughput N CONCURRENCY CONFIG
//       One runner (run()) with `concurrency` CONCURRENCY -- graphile-worker's
//       documented way to run that many jobs at once in one Node process --
//       and a no-op task.  CONFIG:
//         default  everything else at its default (maxPoolSize 10, no batching)
//         batched  plus the batching of the "Performance" page of the docs:
//                  localQueue.size 500, completeJobBatchDelay 0,
//                  failJobBatchDelay 0
//       Once the runner listens, N jobs are added in one addJobs() call (one
//       statement, one transaction, from a WorkerUtils with its own pool);
//       the clock starts when that call returns (the jobs are invisible
//       until its commit, so no job ran before) and stops when the last
//       job's completion is committed (every handler returned and the job
//       table is empty: graphile-worker deletes a job when it completes).
//       Prints jobs= conc= config= enqueue= wall= wal= (WAL bytes from
//       before the addJobs to the end; the runner's start and stop excluded).
//
//   node graphile.js chain N CONCURRENCY
//       Latency from adding a job to its handler starting, over a chain: the
//       handler of job i records its start and adds job i+1 (SQL
//       graphile_worker.add_job, autocommit, returning the transaction id);
//       the runner (default configuration, CONCURRENCY slots) starts job i+1
//       in a free slot when the add's NOTIFY arrives.  hc = from the add's
//       commit (its commit timestamp; needs track_commit_timestamp) to the
//       handler's start; handoff = from the add call returning to the
//       handler's start (a start seen before the call returned counts 0,
//       "early").  N - 1 samples.
'use strict';

const { monoUs, realUs, die, armTimeout, dist, probe, lsn, walDiff, pollUntil, commitTimes, commitTsOn } =
    require('./common');
const { run, runMigrations, makeWorkerUtils, Logger } = require('graphile-worker');

// warnings and errors to stderr, nothing on stdout
const logger = new Logger(() => (level, message) => {
    if (level === 'error' || level === 'warning') process.stderr.write(`graphile-worker ${level}: ${message}\n`);
});

// graphile-worker makes its own pool from a connection string (maxPoolSize
// at its default, 10), from the libpq variables the script exports
const connectionString = `postgresql://${encodeURIComponent(process.env.PGUSER || 'postgres')}@/` +
    `${encodeURIComponent(process.env.PGDATABASE || 'postgres')}?host=${encodeURIComponent(process.env.PGHOST || 'localhost')}` +
    `&port=${encodeURIComponent(process.env.PGPORT || '5432')}`;

const JOBS_LEFT = 'SELECT count(*) AS n FROM graphile_worker._private_jobs';

// Start a runner and wait until its LISTEN connection is up and its workers
// have made their first (empty) fetch.
async function startRunner(concurrency, taskList, preset) {
    const { EventEmitter } = require('node:events');
    const events = new EventEmitter();
    const listening = new Promise((res) => events.once('pool:listen:success', res));
    const runner = await run({ connectionString, concurrency, noHandleSignals: true, taskList, logger, events, preset });
    await listening;
    await new Promise((res) => setTimeout(res, 300));
    return runner;
}

async function throughput(n, concurrency, config) {
    armTimeout(`graphile-worker throughput ${n}`);
    const c = await probe();
    const utils = await makeWorkerUtils({ connectionString, logger });
    const preset = config === 'batched'
        ? { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
        : config === 'default' ? undefined : die(`unknown config ${config}`);

    if (Number((await c.query(JOBS_LEFT)).rows[0].n) !== 0) die('graphile-worker jobs left from an earlier run');
    let handled = 0;
    let allHandled;
    const handledP = new Promise((res) => { allHandled = res; });
    const taskList = { noop: async () => { if (++handled === n) allHandled(); } };
    const runner = await startRunner(concurrency, taskList, preset);

    const specs = Array.from({ length: n }, (_, i) => ({ identifier: 'noop', payload: { i } }));
    const l0 = await lsn(c);
    const te = monoUs();
    await utils.addJobs(specs);
    const t0 = monoUs();
    await handledP;
    await pollUntil(c, JOBS_LEFT, [], 0);
    const t1 = monoUs();
    const l1 = await lsn(c);
    const wal = await walDiff(c, l1, l0);

    await runner.stop();
    await utils.release();
    await c.end();
    console.log(`jobs=${n} conc=${concurrency} config=${config} enqueue=${((t0 - te) / 1000).toFixed(1)} ` +
        `wall=${((t1 - t0) / 1000).toFixed(1)} wal=${wal}`);
}

const ADD = `SELECT pg_current_xact_id()::text AS x
               FROM graphile_worker.add_job('chain', json_build_object('i', $1::int))`;

async function chain(n, concurrency) {
    armTimeout(`graphile-worker chain ${n}`);
    const c = await probe();
    const cts = await commitTsOn(c);
    const startReal = new Array(n);
    const startMono = new Array(n);
    const addReturned = new Array(n);
    const xid = new Array(n);
    let finished;
    const done = new Promise((res) => { finished = res; });

    // add job i and note when the call returned and its transaction id
    const add = async (client, i) => {
        const r = await client.query(ADD, [i]);
        addReturned[i] = monoUs();
        xid[i] = r.rows[0].x;
    };
    const taskList = {
        chain: async (payload, helpers) => {
            const i = payload.i;
            startMono[i] = monoUs();
            startReal[i] = realUs();
            if (i + 1 < n) await helpers.withPgClient((client) => add(client, i + 1));
            else finished();
        },
    };
    const runner = await startRunner(concurrency, taskList, undefined);
    const t0 = monoUs();
    await add(c, 0);
    await done;
    const t1 = monoUs();
    await pollUntil(c, JOBS_LEFT, [], 0);
    await runner.stop();

    const hand = [];
    let early = 0;
    for (let i = 1; i < n; i++) {
        const d = startMono[i] - addReturned[i];
        if (d < 0) early++;
        hand.push(Math.max(d, 0));
    }
    let line = `jobs=${n} conc=${concurrency} handoffs=${n - 1} early=${early} commit_ts=${cts ? 1 : 0} ` +
        `wall=${((t1 - t0) / 1000).toFixed(1)}`;
    if (cts) {
        const ct = await commitTimes(c, xid.slice(1));
        const hc = [];
        ct.forEach((t, k) => { if (t !== null) hc.push(startReal[k + 1] - t); });
        line += dist('hc', hc);
    }
    line += dist('handoff', hand);
    await c.end();
    console.log(line);
}

async function main() {
    const [mode, ...a] = process.argv.slice(2);
    if (mode === 'setup') {
        armTimeout('graphile-worker setup');
        await runMigrations({ connectionString, logger });
        console.log(`setup=ok version=${require('graphile-worker/package.json').version}`);
    } else if (mode === 'throughput' && a.length === 3) {
        await throughput(Number(a[0]), Number(a[1]), a[2]);
    } else if (mode === 'chain' && a.length === 2) {
        await chain(Number(a[0]), Number(a[1]));
    } else {
        die('usage: graphile.js setup | throughput N CONCURRENCY default|batched | chain N CONCURRENCY');
    }
    process.exit(0);
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
