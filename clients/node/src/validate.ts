// validate.ts -- check a workflow spec against schema/workflow.schema.json
// before parflow_define is called: the first problem becomes a SpecError
// naming where in the spec it is and which rule of the schema it breaks.
import AjvModule, { type ErrorObject } from 'ajv';
import { SpecError } from './errors.js';
import { workflowSchema } from './schema.js';
import type { WorkflowSpec } from './spec.js';

type AjvClass = typeof AjvModule.default;
const Ajv: AjvClass = (AjvModule as unknown as { default: AjvClass }).default ?? (AjvModule as unknown as AjvClass);
const ajv = new Ajv({ allErrors: false, strict: true, verbose: true });
const check = ajv.compile(workflowSchema);

/** The message of one schema error, with the offending key named. */
function text(e: ErrorObject): string {
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'additionalProperties') return `unknown key "${String(p.additionalProperty)}"`;
  if (e.keyword === 'required') return `lacks required key "${String(p.missingProperty)}"`;
  if (e.keyword === 'enum') return `${e.message} (${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')})`;
  return e.message ?? e.keyword;
}

/** The node at a JSON Pointer ('#/a/b') under base. */
function at(base: unknown, pointer: string): unknown {
  let node = base;
  for (const part of pointer.replace(/^#\/?/, '').split('/').filter((p) => p !== '')) {
    if (typeof node !== 'object' || node === null) return undefined;
    node = (node as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return node;
}

/**
 * The error's schema path from the root of the schema: ajv gives it from
 * the definition a $ref led to ('#/required' inside Stage); find which
 * definition holds the failing rule.
 */
function absoluteSchemaPath(e: ErrorObject): string {
  const rel = e.schemaPath;
  const parent = rel.slice(0, rel.lastIndexOf('/'));
  if (at(workflowSchema, parent) === e.parentSchema) return rel;
  for (const [name, def] of Object.entries(workflowSchema.definitions)) {
    if (at(def, parent) === e.parentSchema) return `#/definitions/${name}${rel.slice(1)}`;
  }
  return rel;
}

/** Throw a SpecError unless spec satisfies the workflow schema. */
export function validateSpec(spec: unknown): asserts spec is WorkflowSpec {
  if (check(spec)) return;
  const e = (check.errors ?? [])[0];
  const where = e?.instancePath ?? '';
  const schemaPath = e ? absoluteSchemaPath(e) : '#';
  throw new SpecError(
    `workflow spec is invalid at ${where === '' ? 'its top level' : where}: ${e ? text(e) : 'invalid'} (schema path ${schemaPath})`,
    where, schemaPath);
}
