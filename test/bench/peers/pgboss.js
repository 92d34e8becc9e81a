// test/bench/peers/pgboss.js -- pg-boss's side of test/bench/peers.sh.
//
//   node pgboss.js setup
//       Installs pg-boss's schema (start() migrates) in the database.
//
//   node pgboss.js throughput N WORKERS BATCH
//       pg-boss 10 has no teamSize/teamConcurrency any more: its documented
//       way to work a queue concurrently is several work() calls (each one a
//       polling worker) with a batchSize, the handler running the batch's
//       jobs concurrently (Promise.allSettled(jobs.map(handler)), as the
//       maintainer recommends for v10).  So: WORKERS work() subscriptions on
//       one queue, each fetching up to BATCH jobs per poll, polling at the
//       smallest interval pg-boss allows (pollingIntervalSeconds 0.5; a
//       worker goes again at once when a fetch and its handler took longer),
//       one pg-boss instance with its default pool (max 10), cron scheduling
//       off (unused here), supervision (maintenance) at its default.
//       A fresh queue (createQueue, standard policy) each run; N jobs are
//       inserted with one insert() call (one statement) before the workers
//       start; the clock starts at the first work() call and stops when every
//       job's completion is committed (pg-boss completes a batch with one
//       UPDATE after the handler returns; we wait until all N rows are in
//       state 'completed').  Prints jobs= workers= batch= enqueue= wall= wal=
//       (WAL bytes from before the insert to the end).
//       Statistics are left to autovacuum, as pg-boss leaves them.  Note: on
//       the queue's new partition pg-boss's completion UPDATE (WHERE name = $1
//       AND id IN (SELECT UNNEST($2)) AND state = 'active') plans as a scan of
//       every job of the queue (bitmap scan on name without statistics, a
//       sequential scan once analyzed) in a nested loop with the batch's ids,
//       so each completion costs in proportion to the jobs in the queue: with
//       50000 jobs pg-boss is several times slower per job than with 10000,
//       and an ANALYZE right after the insert makes even 10000 jobs 3-4x
//       slower (seen with auto_explain; not tuned away here).
'use strict';

const { monoUs, die, armTimeout, probe, lsn, walDiff, pollUntil } = require('./common');
const PgBoss = require('pg-boss');

// a queue of its own for each run (deleteQueue() of a queue that still has
// jobs fails in 10.4.2 on the partition's foreign key; the database is
// dropped at the end anyway)
const QUEUE = `bench_peers_tp_${process.pid}_${Date.now()}`;

function newBoss() {
    const boss = new PgBoss({
        host: process.env.PGHOST,
        port: Number(process.env.PGPORT || 5432),
        user: process.env.PGUSER,
        database: process.env.PGDATABASE,
        application_name: process.env.PGAPPNAME || 'pf_bench_peers_pgboss',
        max: 10,
        schedule: false,
    });
    boss.on('error', (e) => process.stderr.write(`pg-boss error: ${e && e.message}\n`));
    return boss;
}

async function throughput(n, workers, batch) {
    armTimeout(`pg-boss throughput ${n}`);
    const c = await probe();
    const boss = newBoss();
    await boss.start();
    await boss.createQueue(QUEUE);
    // open the pool's connections before the clock starts
    const db = boss.getDb();
    await Promise.all(Array.from({ length: 10 }, () => db.executeSql('SELECT pg_sleep(0.02)', [])));

    let handled = 0;
    let allHandled;
    const handledP = new Promise((res) => { allHandled = res; });
    const noop = async () => {};
    const handler = async (jobs) => {
        await Promise.allSettled(jobs.map(noop));
        handled += jobs.length;
        if (handled >= n) allHandled();
    };

    const jobs = Array.from({ length: n }, (_, i) => ({ name: QUEUE, data: { i } }));
    const l0 = await lsn(c);
    const te = monoUs();
    await boss.insert(jobs);
    const t0 = monoUs();
    for (let w = 0; w < workers; w++) {
        await boss.work(QUEUE, { batchSize: batch, pollingIntervalSeconds: 0.5 }, handler);
    }
    await handledP;
    await pollUntil(c, "SELECT count(*) AS n FROM pgboss.job WHERE name = $1 AND state = 'completed'", [QUEUE], n);
    const t1 = monoUs();
    const l1 = await lsn(c);
    const wal = await walDiff(c, l1, l0);

    await boss.stop({ graceful: true, wait: true, timeout: 5000 });
    await c.end();
    console.log(`jobs=${n} workers=${workers} batch=${batch} enqueue=${((t0 - te) / 1000).toFixed(1)} ` +
        `wall=${((t1 - t0) / 1000).toFixed(1)} wal=${wal}`);
}

async function main() {
    const [mode, ...a] = process.argv.slice(2);
    if (mode === 'setup') {
        armTimeout('pg-boss setup');
        const boss = newBoss();
        await boss.start();
        await boss.stop({ graceful: true, wait: true, timeout: 5000 });
        console.log(`setup=ok version=${require('pg-boss/package.json').version}`);
    } else if (mode === 'throughput' && a.length === 3) {
        await throughput(Number(a[0]), Number(a[1]), Number(a[2]));
    } else {
        die('usage: pgboss.js setup | throughput N WORKERS BATCH');
    }
    process.exit(0);
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
