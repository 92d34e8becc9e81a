// Shared by the tests: the cluster comes from the PG* variables (test/run.sh
// exports them); every workflow and agent kind is named node_<test>_... so
// that tests and the other suites on the same cluster do not meet.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

export function fixtures(): {
  valid: Record<string, unknown>;
  invalid: Record<string, { spec: unknown; schema_path: string; sqlstate: string }>;
  server_only: Record<string, { spec: unknown; sqlstate: string } | string>;
} {
  return JSON.parse(readFileSync(join(root, 'clients', 'fixtures', 'specs.json'), 'utf8'));
}

let shared: pg.Client | null = null;

/** A plain connection for the tests' own SQL. */
export async function sql<R extends pg.QueryResultRow = Record<string, unknown>>(text: string, params: unknown[] = []): Promise<R[]> {
  if (!shared) {
    shared = new pg.Client({ application_name: 'parflow-node-test' });
    await shared.connect();
    await shared.query("SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS parflow");
  }
  return (await shared.query<R>(text, params)).rows;
}

export async function closeSql(): Promise<void> {
  const c = shared;
  shared = null;
  await c?.end();
}

/** Poll until the query's first column of its first row is true. */
export async function until(text: string, params: unknown[] = [], ms = 20000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const rows = await sql<{ ok: boolean }>(text, params);
    if (rows[0] && Object.values(rows[0])[0] === true) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${text} ${JSON.stringify(params)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A spec of one group of stages for one kind. */
export function oneGroup(kind: string, stages: number | string[], estimate = '1 min', extra: Record<string, unknown> = {}) {
  const names = typeof stages === 'number' ? Array.from({ length: stages }, (_, i) => `s${i + 1}`) : stages;
  return { groups: [{ name: 'g', stages: names.map((name) => ({ name, agent: kind, estimate, ...extra })) }] } as never;
}

/** Cancel every live run of the workflows named like the pattern (cleanup). */
export async function cancelRuns(like: string): Promise<void> {
  const runs = await sql<{ run: string }>("SELECT run::text FROM parflow.runs WHERE workflow LIKE $1 AND state IN ('running', 'paused', 'blocked')", [like]);
  for (const r of runs) await sql('SELECT parflow_cancel($1::bigint)', [r.run]).catch(() => undefined);
}

export const quiet = () => undefined;

export function sleep(ms: number) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves when the signal aborts, with its reason. */
export function aborted(signal: AbortSignal): Promise<unknown> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(signal.reason);
    signal.addEventListener('abort', () => resolve(signal.reason), { once: true });
  });
}

/** Sleep ms, or reject with the signal's reason as soon as it aborts. */
export function work(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => { signal.removeEventListener('abort', stop); resolve(); }, ms);
    function stop() { clearTimeout(t); reject(signal.reason); }
    signal.addEventListener('abort', stop, { once: true });
  });
}
