// test/bench/peers/common.js -- helpers shared by the peer scripts of
// test/bench/peers.sh (graphile.js, pgboss.js).
//
// Connections use the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGAPPNAME), which node-postgres reads as libpq does.  Every script prints
// exactly one summary line of key=value pairs on stdout (times in ms; a
// distribution as KEY_p50 KEY_p95 KEY_p99 KEY_max, nearest rank, as
// test/bench/handoff_client.c prints them); everything else goes to stderr.
'use strict';

const { performance } = require('node:perf_hooks');
const pg = require('pg');

// Microseconds: monotonic (for durations) and wall clock (to compare with
// the server's commit timestamps, which use the same clock on this machine).
const monoUs = () => Number(process.hrtime.bigint() / 1000n);
const realUs = () => (performance.timeOrigin + performance.now()) * 1000;

function die(msg) {
    process.stderr.write(`${process.argv[1]}: ${msg}\n`);
    process.exit(2);
}

// Give up after PF_BENCH_PEERS_PHASE_TIMEOUT seconds (the shell wraps every
// phase in timeout(1) as well).
function armTimeout(what) {
    const secs = Number(process.env.PF_BENCH_PEERS_PHASE_TIMEOUT || 120);
    setTimeout(() => die(`${what}: timed out after ${secs} s`), secs * 1000).unref();
}

process.on('unhandledRejection', (e) => die(`unhandled rejection: ${e && e.stack ? e.stack : e}`));

// Nearest-rank percentile of a sorted array (handoff_client.c's pct()).
function pct(s, p) {
    if (s.length === 0) return 0;
    let k = Math.floor((p / 100) * s.length + 0.999999) - 1;
    if (k < 0) k = 0;
    if (k >= s.length) k = s.length - 1;
    return s[k];
}

// " KEY_p50=.. KEY_p95=.. KEY_p99=.. KEY_max=.." in ms, from samples in us.
function dist(key, v) {
    if (v.length === 0) return '';
    const s = Float64Array.from(v).sort();
    const f = (x) => (x / 1000).toFixed(3);
    return ` ${key}_p50=${f(pct(s, 50))} ${key}_p95=${f(pct(s, 95))} ${key}_p99=${f(pct(s, 99))} ${key}_max=${f(s[s.length - 1])}`;
}

// A connection of our own for bookkeeping (WAL position, counts).
async function probe() {
    const c = new pg.Client({ application_name: `${process.env.PGAPPNAME || 'pf_bench_peers'}_probe` });
    await c.connect();
    return c;
}

async function lsn(c) {
    return (await c.query('SELECT pg_current_wal_insert_lsn()::text AS l')).rows[0].l;
}

async function walDiff(c, l1, l0) {
    return (await c.query('SELECT pg_wal_lsn_diff($1, $2)::bigint::text AS d', [l1, l0])).rows[0].d;
}

// Poll (every ms) until sql returns a first column equal to want.
async function pollUntil(c, sql, params, want) {
    for (;;) {
        const r = await c.query(sql, params);
        if (String(r.rows[0][Object.keys(r.rows[0])[0]]) === String(want)) return;
        await new Promise((res) => setTimeout(res, 1));
    }
}

// The commit timestamps (us since the epoch) of these transaction ids
// (xid8 as text); null where unknown (track_commit_timestamp off).
async function commitTimes(c, xids) {
    const r = await c.query(
        `SELECT extract(epoch FROM pg_xact_commit_timestamp((x::bigint % 4294967296)::text::xid))::float8 * 1e6 AS t
           FROM unnest($1::text[]) WITH ORDINALITY AS u(x, i) ORDER BY i`, [xids]);
    return r.rows.map((row) => (row.t === null ? null : Number(row.t)));
}

async function commitTsOn(c) {
    return (await c.query("SELECT current_setting('track_commit_timestamp')::boolean AS on")).rows[0].on;
}

module.exports = { pg, monoUs, realUs, die, armTimeout, pct, dist, probe, lsn, walDiff, pollUntil, commitTimes, commitTsOn };
