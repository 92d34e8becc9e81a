// Bad arguments are refused by the client before any SQL is sent (the
// connection points at a port nobody listens on: a call that reached the
// network would fail differently), and server errors keep their fields.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { ArgumentError, Operator, ParflowError, Worker } from '../src/index.js';
import { closeSql, oneGroup, sql } from './helpers.js';

const nowhere = 'postgresql://127.0.0.1:1/nowhere';
after(closeSql);

describe('bad arguments, before any SQL', () => {
  test('worker options', () => {
    assert.throws(() => new Worker({ connection: nowhere, concurrency: -1 }), /concurrency must be an integer from 1/);
    assert.throws(() => new Worker({ connection: nowhere, concurrency: 0 }), ArgumentError);
    assert.throws(() => new Worker({ connection: nowhere, concurrency: 1.5 }), ArgumentError);
    assert.throws(() => new Worker({ connection: nowhere, lease: -5 }), /lease must be positive/);
    assert.throws(() => new Worker({ connection: nowhere, lease: '-5 min' }), /lease must be positive/);
    assert.throws(() => new Worker({ connection: nowhere, lease: 'soon' }), /lease "soon" is not a duration/);
    assert.throws(() => new Worker({ connection: nowhere, lease: '5 fortnights' }), /unknown unit "fortnights"/);
    assert.throws(() => new Worker({ connection: nowhere, batch: 1001 }), /batch must be an integer from 1 to 1000/);
  });
  test('agent kinds and handlers', async () => {
    const w = new Worker({ connection: nowhere });
    assert.throws(() => w.handle('', async () => ({})), /agent kind must not be empty/);
    assert.throws(() => w.handle('a'.repeat(56), async () => ({})), /longer than 55 bytes/);
    assert.throws(() => w.handle('a\nb', async () => ({})), /control character/);
    assert.throws(() => w.handle(42 as never, async () => ({})), /agent kind must be a string/);
    assert.throws(() => w.handle('ok', 'not a function' as never), /handler for agent kind "ok" must be a function/);
    assert.throws(() => w.handle('ok', async () => ({}), { concurrency: -2 }), /concurrency of "ok"/);
    await assert.rejects(w.start(), /no handler/);
  });
  test('operator arguments', async () => {
    const op = new Operator({ connection: nowhere });
    await assert.rejects(op.start(''), /workflow name must be a non-empty string/);
    await assert.rejects(op.start('wf', { priority: 7 }), /priority must be 0, 1, 2 or 3/);
    await assert.rejects(op.start('wf', { priority: -1 }), ArgumentError);
    await assert.rejects(op.start('wf', { input: [1] as never }), /input must be a JSON object, not an array/);
    await assert.rejects(op.start('wf', { flags: ['ok', ''] }), /flags must be an array of non-empty strings/);
    await assert.rejects(op.start('wf', { parallel: 'yes' as never }), /parallel must be a boolean/);
    assert.throws(() => op.run(-3), /run must be a positive integer/);
    await assert.rejects(op.run(1).retry(''), /stage name must be a non-empty string/);
    await assert.rejects(op.run(1).signal('ev', 'x' as never), /payload must be a JSON object/);
    await assert.rejects(op.define('wf', { groups: [{ name: 'g', stages: [{ name: 's', agent: 'a' }] }] } as never),
      /workflow spec is invalid at \/groups\/0\/stages\/0: lacks required key "estimate" \(schema path #\/definitions\/Stage\/allOf\/2\/then\/required\)/);
    await op.close();
  });
});

describe('server errors keep SQLSTATE, detail and hint', () => {
  test('a cycle, an unknown workflow, a finished run', async () => {
    await sql('SELECT 1');
    const op = new Operator();
    await assert.rejects(op.define('node_args_cycle', { groups: [{ name: 'g', stages: [
      { name: 'a', agent: 'x', estimate: '1 min', depends_on: ['b'] },
      { name: 'b', agent: 'x', estimate: '1 min', depends_on: ['a'] }] }] }), (err: unknown) => {
      assert.ok(err instanceof ParflowError);
      assert.equal(err.sqlstate, '22023');
      assert.match(err.message, /dependency cycle: a -> b -> a|dependency cycle: b -> a -> b/);
      return true;
    });
    await op.define('node_args_wf', oneGroup('node_args_kind', 1));
    await assert.rejects(op.start('node_args_wff'), (err: unknown) => {
      assert.ok(err instanceof ParflowError);
      assert.equal(err.sqlstate, '42704');
      assert.equal(err.message, 'workflow "node_args_wff" does not exist');
      assert.equal(err.hint, 'Did you mean "node_args_wf"?');
      return true;
    });
    const run = await op.start('node_args_wf');
    await run.cancel();
    await assert.rejects(run.resume(), (err: unknown) => err instanceof ParflowError && err.sqlstate === '55000');
    await assert.rejects(op.define('node_args_dup', { groups: [{ name: 'g', stages: [
      { name: 's', agent: 'x', estimate: '1 min' }, { name: 's', agent: 'x', estimate: '1 min' }] }] }),
      (err: unknown) => err instanceof ParflowError && err.sqlstate === '23505' && err.hint === 'Each stage of a workflow needs its own name.');
    await op.close();
  });
});
