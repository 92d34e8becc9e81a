// util.ts -- argument checks shared by the worker and the operator.
import { ArgumentError } from './errors.js';
import type pg from 'pg';

/** How to connect: a connection string, or node-postgres' client config. */
export type Connection = string | pg.ClientConfig;

export function clientConfig(conn: Connection | undefined): pg.ClientConfig {
  if (conn === undefined) return {};                    // the PG* environment variables
  if (typeof conn === 'string') return { connectionString: conn };
  if (typeof conn !== 'object' || conn === null) throw new ArgumentError('connection must be a connection string or a pg ClientConfig object');
  return { ...conn };
}

const CONTROL = /[\u0000-\u001f\u007f]/;

/** An agent kind as parflow_define accepts it (channel "parflow_<kind>" fits 63 bytes). */
export function checkKind(kind: unknown, what = 'agent kind'): string {
  if (typeof kind !== 'string') throw new ArgumentError(`${what} must be a string, not ${describe(kind)}`);
  if (kind.trim() === '') throw new ArgumentError(`${what} must not be empty`);
  if (Buffer.byteLength(kind) > 55) throw new ArgumentError(`${what} "${kind.slice(0, 20)}..." is longer than 55 bytes`);
  if (CONTROL.test(kind)) throw new ArgumentError(`${what} ${JSON.stringify(kind)} contains a control character`);
  return kind;
}

const UNITS: Record<string, number> = {
  ms: 0.001, msec: 0.001, millisecond: 0.001, milliseconds: 0.001,
  s: 1, sec: 1, secs: 1, second: 1, seconds: 1,
  m: 60, min: 60, mins: 60, minute: 60, minutes: 60,
  h: 3600, hour: 3600, hours: 3600, d: 86400, day: 86400, days: 86400,
};

/**
 * Seconds of a duration given as a number of seconds or as an interval
 * string of number-unit pairs ("5 min", "1 hour 30 min", "90 s").
 */
export function seconds(v: unknown, what: string): number {
  let s: number;
  if (typeof v === 'number') s = v;
  else if (typeof v === 'string') {
    if (!/^\s*(?:[-+]?\d+(?:\.\d+)?\s*[a-z]+\s*)+$/i.test(v))
      throw new ArgumentError(`${what} ${JSON.stringify(v)} is not a duration such as "5 min" or "90 s"`);
    const parts = [...v.matchAll(/([-+]?\d+(?:\.\d+)?)\s*([a-z]+)/gi)];
    s = 0;
    for (const p of parts) {
      const unit = UNITS[p[2].toLowerCase()];
      if (unit === undefined) throw new ArgumentError(`${what} ${JSON.stringify(v)}: unknown unit "${p[2]}"`);
      s += Number(p[1]) * unit;
    }
  } else throw new ArgumentError(`${what} must be a number of seconds or a string such as "5 min", not ${describe(v)}`);
  if (!Number.isFinite(s) || s <= 0) throw new ArgumentError(`${what} must be positive (found ${JSON.stringify(v)})`);
  return s;
}

/** A positive integer option. */
export function positiveInt(v: unknown, what: string, max = 2147483647): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
    throw new ArgumentError(`${what} must be an integer from 1 to ${max} (found ${typeof v === 'number' ? v : describe(v)})`);
  return v;
}

/** Whether v is a plain JSON object (not an array, not null, not a class instance such as Date). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return `an object of class ${(v as object).constructor?.name ?? '?'}`;
  if (typeof v === 'undefined') return 'undefined';
  return `a ${typeof v} (${String(v).slice(0, 40)})`;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); }
    signal?.addEventListener('abort', done, { once: true });
  });
}
