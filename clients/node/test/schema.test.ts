// The workflow schema against the server's own validation: every valid
// fixture is accepted by both, every invalid one refused by both (the client
// names the schema path), and the schema knows exactly the keys the server
// knows at every level (read from the server's "Valid keys are: ..." detail).
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { Operator, ParflowError, SpecError, validateSpec, workflowSchema } from '../src/index.js';
import { closeSql, fixtures, sql } from './helpers.js';

const f = fixtures();
after(closeSql);

async function serverDefine(name: string, spec: unknown): Promise<{ ok: boolean; code?: string }> {
  try {
    await sql('SELECT parflow_define($1, $2::jsonb)', [name, JSON.stringify(spec)]);
    return { ok: true };
  } catch (err) {
    return { ok: false, code: (err as { code?: string }).code };
  }
}

describe('valid specs', () => {
  for (const [name, spec] of Object.entries(f.valid)) {
    test(`${name}: accepted by the schema and by parflow_define`, async () => {
      validateSpec(spec);
      assert.deepEqual(await serverDefine(`node_schema_${name.replace(/\W/g, '_')}`, spec), { ok: true });
    });
  }
});

describe('invalid specs', () => {
  for (const [name, c] of Object.entries(f.invalid)) {
    test(`${name}: refused by the schema at ${c.schema_path} and by parflow_define`, async () => {
      assert.throws(() => validateSpec(c.spec), (err: unknown) => {
        assert.ok(err instanceof SpecError, String(err));
        assert.equal(err.schemaPath, c.schema_path);
        assert.match(err.message, new RegExp(`schema path ${c.schema_path.replace(/[/#]/g, '\\$&')}`));
        return true;
      });
      const r = await serverDefine(`node_schema_bad`, c.spec);
      assert.equal(r.ok, false, 'the server accepted it');
      assert.equal(r.code, c.sqlstate);
    });
  }
  test('the operator refuses an invalid spec before any SQL is sent', async () => {
    // nothing listens on this port: any SQL would fail with a connection error instead
    const op = new Operator({ connection: 'postgresql://127.0.0.1:1/nowhere' });
    await assert.rejects(op.define('x', f.invalid['stage without estimate'].spec as never), SpecError);
    await op.close();
  });
  for (const [name, c] of Object.entries(f.server_only)) {
    if (typeof c === 'string') continue;
    test(`${name}: passes the schema, refused by the server with ${c.sqlstate}, detail and hint intact`, async () => {
      validateSpec(c.spec);
      const op = new Operator();
      await assert.rejects(op.define('node_schema_server_only', c.spec as never), (err: unknown) => {
        assert.ok(err instanceof ParflowError, String(err));
        assert.equal(err.sqlstate, c.sqlstate);
        assert.ok(err.message.length > 0);
        return true;
      });
      await op.close();
    });
  }
});

describe('the schema and the server know the same keys', () => {
  const base = { name: 'g', stages: [{ name: 's', agent: 'a', estimate: '1 min' }] };
  const levels: Array<[string, (k: string) => unknown, Record<string, unknown>]> = [
    ['workflow', (k) => ({ groups: [base], [k]: 1 }), workflowSchema.properties],
    ['group', (k) => ({ groups: [{ ...base, [k]: 1 }] }), workflowSchema.definitions.Group.properties],
    ['stage', (k) => ({ groups: [{ name: 'g', stages: [{ ...base.stages[0], [k]: 1 }] }] }), workflowSchema.definitions.Stage.properties],
    ['affinity rule', (k) => ({ groups: [base], affinity: [{ agents: ['a'], max_concurrent: 1, [k]: 1 }] }), workflowSchema.definitions.AffinityRule.properties],
  ];
  for (const [level, spec, props] of levels) {
    test(`${level} keys`, async () => {
      let detail = '';
      try {
        await sql('SELECT parflow_define($1, $2::jsonb)', ['node_schema_keys', JSON.stringify(spec('zz_no_such_key'))]);
      } catch (err) {
        detail = (err as { detail?: string }).detail ?? '';
      }
      const m = /^Valid keys are: (.*)\.$/.exec(detail);
      assert.ok(m, `no list of keys in the server's detail: ${detail}`);
      assert.deepEqual(Object.keys(props).sort(), m[1].split(', ').sort(),
        'schema/workflow.schema.json and parflow_define disagree on the keys: update the schema');
    });
  }
});
