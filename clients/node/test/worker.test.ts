// The worker and the operator against the throwaway cluster: the SDLC
// workflow end to end, failures, a P0 run preempting, cancel, a backend
// terminated during work, the shutdown drain, batches.
import assert from 'node:assert/strict';
import { after, afterEach, describe, test } from 'node:test';
import { NonRetryableError, Operator, StopError, Worker, type Task } from '../src/index.js';
import { runSdlc } from '../examples/sdlc.js';
import { aborted, cancelRuns, closeSql, oneGroup, quiet, sleep, sql, until, work } from './helpers.js';

const op = new Operator();
const workers: Worker[] = [];
function worker(options: ConstructorParameters<typeof Worker>[0] = {}): Worker {
  const w = new Worker({ log: quiet, pollInterval: 200, ...options });
  workers.push(w);
  return w;
}
afterEach(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop({ timeout: 0 })));
  await cancelRuns('node\\_w\\_%');
});
after(async () => {
  await op.close();
  await closeSql();
});

async function events(run: number): Promise<string[]> {
  return (await sql<{ kind: string }>('SELECT kind FROM parflow.events WHERE run = $1 ORDER BY event', [run])).map((r) => r.kind);
}

describe('worker', () => {
  test('the SDLC workflow end to end, parallel and sequential', async () => {
    const r = await runSdlc({ name: 'node_w_sdlc', msPerMinute: 4 });
    assert.equal(r.estimatedSavingsPct, 30.6);
    assert.ok(r.realisedSavingsPct > 10, `realised ${r.realisedSavingsPct} %`);
    const res = await op.run(r.parallelRun).result();
    assert.equal(res.state, 'succeeded');
    assert.equal(Object.keys(res.outputs).length, 11);
    assert.deepEqual((res.outputs.critique as { accepted: number }).accepted, 2, 'critique read the research output');
  });

  test('outputs flow to dependents; a thrown error is retried, a NonRetryableError is not', async () => {
    let flaky = 0;
    const w = worker({ concurrency: 2 })
      .handle('node_w_flow', async (task: Task) => {
        if (task.stage === 'first') return { n: 41 };
        if (task.stage === 'flaky' && ++flaky === 1) throw new Error('first try fails');
        if (task.stage === 'doomed') throw new NonRetryableError('cannot ever work', { output: { reason: 'no' } });
        return { got: (task.input.upstream as Record<string, { n: number }>).first.n + 1 };
      });
    await w.start();
    await op.define('node_w_flow', {
      groups: [
        { name: 'a', stages: [{ name: 'first', agent: 'node_w_flow', estimate: '1 min' }] },
        { name: 'b', stages: [
          { name: 'flaky', agent: 'node_w_flow', estimate: '1 min', retry_backoff: '0 s' },
          { name: 'doomed', agent: 'node_w_flow', estimate: '1 min', max_attempts: 3 }] }],
    });
    const run = await op.start('node_w_flow', { parallel: true });
    const outcome = await run.wait({ timeout: 20000 });
    assert.equal(outcome.state, 'blocked');
    assert.equal(outcome.failures.length, 1);
    assert.equal(outcome.failures[0].stage, 'doomed');
    assert.equal(outcome.failures[0].attempts, 1, 'not retried');
    assert.match(outcome.failures[0].last_error, /NonRetryableError: cannot ever work/);
    const result = await run.result();
    assert.deepEqual(result.outputs.flaky, { got: 42 });
    assert.equal(flaky, 2);
    assert.equal((await run.state()), 'blocked');
  });

  test('an output that is not a JSON object fails the task with a clear error', async () => {
    const w = worker().handle('node_w_badout', async () => 'done' as never);
    await w.start();
    await op.define('node_w_badout', oneGroup('node_w_badout', 1));
    const outcome = await (await op.start('node_w_badout')).wait({ timeout: 20000 });
    assert.equal(outcome.state, 'blocked');
    assert.match(outcome.failures[0].last_error, /handler of agent kind "node_w_badout" returned a string \(done\): the output must be a JSON object/);
    assert.equal(outcome.failures[0].attempts, 1);
  });

  test('a P0 run preempts: the interrupted handler is aborted and its task released, not failed', async () => {
    const cap = Number((await sql<{ c: string }>("SELECT current_setting('parflow.max_parallel_stages') AS c"))[0].c);
    const reasons: unknown[] = [];
    const p0 = new AbortController();
    const w = worker({ concurrency: cap + 1 })
      .handle('node_w_low', async (_task, { signal }) => {
        try {
          await work(60000, AbortSignal.any([signal, p0.signal]));
        } catch (err) {
          if (!signal.aborted) return {};          // the P0 run is done: so are we
          reasons.push((err as StopError).reason);
          throw err;
        }
        return {};
      })
      .handle('node_w_p0', async () => {
        setTimeout(() => p0.abort(), 100);
        return { hotfix: true };
      });
    await w.start();
    await op.define('node_w_low', oneGroup('node_w_low', cap, '1 min', { retry_backoff: '0 s' }));
    await op.define('node_w_p0', oneGroup('node_w_p0', 1));
    const low = await op.start('node_w_low', { priority: 2, parallel: true });
    await until("SELECT count(*) = $2 FROM parflow.tasks WHERE run = $1 AND state = 'running'", [low.id, cap]);
    const hot = await op.start('node_w_p0', { priority: 0 });
    assert.equal((await hot.wait({ timeout: 20000 })).state, 'succeeded');
    assert.deepEqual(reasons, ['interrupt']);
    assert.equal((await low.wait({ timeout: 30000 })).state, 'succeeded');
    const ev = await events(low.id);
    assert.equal(ev.filter((k) => k === 'interrupt').length, 1);
    assert.equal(ev.filter((k) => k === 'released').length, 1);
    assert.equal(ev.filter((k) => k === 'retry' || k === 'failed').length, 0, 'an interrupt is not a failed attempt');
  });

  test('cancel aborts the handler and wait() resolves cancelled', async () => {
    let reason: unknown;
    const started = new Promise<void>((resolve) => {
      worker().handle('node_w_cancel', async (_t, { signal }) => {
        resolve();
        reason = await aborted(signal);
        throw reason;
      });
    });
    await workers[0].start();
    await op.define('node_w_cancel', oneGroup('node_w_cancel', 1));
    const run = await op.start('node_w_cancel');
    const waiting = run.wait({ timeout: 20000 });
    await started;
    await run.cancel();
    assert.equal((await waiting).state, 'cancelled');
    await until('SELECT $1::int = 0', [0]);
    for (let i = 0; i < 100 && workers[0].holding > 0; i++) await sleep(20);
    assert.ok(reason instanceof StopError && reason.reason === 'cancel', String(reason));
    assert.equal(workers[0].holding, 0);
  });

  test('a backend terminated during work: the worker reconnects and reports the result', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const w = worker({ connection: { application_name: 'node-w-lost' }, concurrency: 2 })
      .handle('node_w_lost', async (task) => {
        if (task.stage === 's1') await gate;
        return { stage: task.stage };
      });
    await w.start();
    await op.define('node_w_lost', { groups: [{ name: 'g', stages: [{ name: 's1', agent: 'node_w_lost', estimate: '1 min' }] },
      { name: 'h', stages: [{ name: 's2', agent: 'node_w_lost', estimate: '1 min' }] }] });
    const run = await op.start('node_w_lost');
    await until("SELECT count(*) = 1 FROM parflow.tasks WHERE run = $1 AND state = 'running'", [run.id]);
    const killed = await sql<{ n: string }>("SELECT count(pg_terminate_backend(pid))::text AS n FROM pg_stat_activity WHERE application_name = 'node-w-lost'");
    assert.equal(killed[0].n, '1');
    release();          // the work ends while the connection is down
    const outcome = await run.wait({ timeout: 30000 });
    assert.equal(outcome.state, 'succeeded');
    assert.ok(w.stats.reconnects >= 1, 'reconnected');
    assert.deepEqual((await run.result()).outputs.s1, { stage: 's1' });
  });

  test('the operator\'s wait() survives its listener being terminated (catch-up from the event log)', async () => {
    const op2 = new Operator({ connection: { application_name: 'node-w-waiter' } });
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    await worker().handle('node_w_wait', async () => { await gate; return {}; }).start();
    await op2.define('node_w_wait', oneGroup('node_w_wait', 1));
    const run = await op2.start('node_w_wait');
    const waiting = run.wait({ timeout: 30000 });
    await sleep(200);
    await sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'node-w-waiter'");
    release();          // the run finishes while nobody listens
    assert.equal((await waiting).state, 'succeeded');
    await op2.close();
  });

  test('stop() drains: a handler that finishes in time is completed, one that does not is aborted and released', async () => {
    const reasons: unknown[] = [];
    const w = worker({ concurrency: 2, drainTimeout: 300 })
      .handle('node_w_drain', async (task, { signal }) => {
        try {
          await work(task.stage === 'quick' ? 100 : 60000, signal);
        } catch (err) {
          reasons.push((err as StopError).reason);
          throw err;
        }
        return { stage: task.stage };
      });
    await w.start();
    await op.define('node_w_drain', oneGroup('node_w_drain', ['quick', 'slow']));
    const run = await op.start('node_w_drain', { parallel: true });
    await until("SELECT count(*) = 2 FROM parflow.tasks WHERE run = $1 AND state = 'running'", [run.id]);
    await w.stop();
    assert.deepEqual(reasons, ['shutdown']);
    const states = await sql<{ stage: string; state: string }>('SELECT stage, state FROM parflow.tasks WHERE run = $1 ORDER BY stage', [run.id]);
    assert.equal(states.find((s) => s.stage === 'quick')!.state, 'succeeded');
    assert.ok(['ready', 'dispatched'].includes(states.find((s) => s.stage === 'slow')!.state), JSON.stringify(states));
    assert.ok((await events(run.id)).includes('released'));
    // another worker finishes it
    await worker().handle('node_w_drain', async () => ({})).start();
    assert.equal((await run.wait({ timeout: 20000 })).state, 'succeeded');
  });

  test('a map stage, a human approval and a sub-workflow through the clients', async () => {
    const w = worker({ concurrency: 4 }).handle('node_w_shapes', async (t: Task) => {
      if (t.stage === 'research') return { items: [1, 2, 3] };
      if (t.stage === 'impl') {
        assert.equal(t.item, t.input.index, 'the claim gives the instance its index');
        return { sq: (t.input.item as number) ** 2 };
      }
      if (t.stage === 'check') return { checked: (t.input.upstream as Record<string, unknown>).approve };
      return { sum: ((t.input.upstream as Record<string, { sq: number }[]>).impl).reduce((a, x) => a + x.sq, 0) };
    });
    await w.start();
    await op.define('node_w_shapes_qa', { groups: [{ name: 'q', stages: [{ name: 'check', agent: 'node_w_shapes', estimate: '1 min' }] }] });
    await op.define('node_w_shapes', {
      groups: [
        { name: 'a', stages: [{ name: 'research', agent: 'node_w_shapes', estimate: '1 min' }] },
        { name: 'b', stages: [{ name: 'impl', agent: 'node_w_shapes', estimate: '1 min', map: { over: 'research', key: 'items', max: 10 } }] },
        { name: 'c', stages: [{ name: 'approve', wait: { event: 'ok', timeout: '1 hour' } }] },
        { name: 'd', stages: [{ name: 'qa', workflow: 'node_w_shapes_qa' }, { name: 'done', agent: 'node_w_shapes', estimate: '1 min', depends_on: ['impl'] }] }],
    });
    const run = await op.start('node_w_shapes', { parallel: true });
    await until("SELECT state = 'awaiting' FROM parflow.tasks WHERE run = $1 AND stage = 'approve'", [run.id]);
    assert.equal(await run.signal('ok', { by: 'node' }), 1);
    const outcome = await run.wait({ timeout: 20000 });
    assert.equal(outcome.state, 'succeeded');
    const res = await run.result();
    assert.deepEqual(res.outputs.impl, [{ sq: 1 }, { sq: 4 }, { sq: 9 }]);
    assert.deepEqual(res.outputs.approve, { by: 'node' });
    assert.equal((res.outputs.qa as { state: string }).state, 'succeeded');
    assert.deepEqual(((res.outputs.qa as { outputs: Record<string, unknown> }).outputs).check, { checked: { by: 'node' } });
    assert.deepEqual(res.outputs.done, { sum: 14 });
    await assert.rejects(run.signal('ok'), (e: Error & { sqlstate?: string }) => e.sqlstate === '55000');
  });

  test('a batch: 200 stages through claims of many tasks and parflow_complete_many', async () => {
    const seen = new Set<number>();
    const w = worker({ concurrency: 8, batch: 8 }).handle('node_w_batch', async (t) => {
      seen.add(t.id);
      return { i: t.stage };
    });
    await w.start();
    await op.define('node_w_batch', oneGroup('node_w_batch', 200));
    const run = await op.start('node_w_batch', { parallel: true });
    assert.equal((await run.wait({ timeout: 60000 })).state, 'succeeded');
    assert.equal(seen.size, 200);
    // the run's announcement may come before the answer to the last completion
    for (let i = 0; i < 100 && w.stats.completed < 200; i++) await sleep(20);
    assert.equal(w.stats.completed, 200);
  });
});
