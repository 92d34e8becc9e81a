// operator.ts -- the operator side: define workflows, start runs, wait for
// them, read their results and control them.
//
// Calls go over one connection, opened on first use. run.wait() uses a
// second one that LISTENs on parflow_orchestrator: a run's succeeded /
// blocked / cancelled announcement resolves its waiters. A notification
// reaches only sessions listening when it is sent, so each time the listener
// (re)connects it catches up from the event log: the last run_* event of
// every run waited for says whether it already finished. Arguments are
// checked before any SQL is sent; server errors come back as ParflowError
// with their SQLSTATE, detail and hint.
import pg from 'pg';
import { ArgumentError, ParflowError, fromServer, isConnectionError } from './errors.js';
import type { WorkflowSpec } from './spec.js';
import { clientConfig, describe, isPlainObject, sleep, type Connection } from './util.js';
import { validateSpec } from './validate.js';

export type RunState = 'running' | 'paused' | 'blocked' | 'succeeded' | 'cancelled';
export type FinalState = 'succeeded' | 'blocked' | 'cancelled';

/** One failed stage in parflow_failures(run). */
export interface Failure {
  task: number;
  stage: string;
  agent: string;
  attempts: number;
  last_error: string;
  errors: unknown[];
  failed_at: string;
  [key: string]: unknown;
}

export interface RunOutcome {
  run: number;
  state: FinalState;
  /** The failure report when blocked. */
  failures: Failure[];
}

export interface StartOptions {
  flags?: string[];
  /** 0 (most urgent, preempts) .. 3; default 2. */
  priority?: number;
  /** true: parallel, false: one task at a time; default parflow.parallel_default. */
  parallel?: boolean | null;
  /** A JSON object every stage finds in its input. */
  input?: Record<string, unknown>;
}

export interface WaitOptions {
  /** Give up after this many ms (rejects with an Error). */
  timeout?: number;
  signal?: AbortSignal;
  /** Keep waiting while the run is blocked (for someone to retry it); default false. */
  throughBlocked?: boolean;
}

export interface RunReport {
  workflow: string;
  version: number;
  state: RunState;
  parallel: boolean;
  planned: string | null;
  actual: string | null;
  work: string | null;
  realised_savings_pct: number | null;
  off_plan_pct: number | null;
}

export interface OperatorOptions {
  connection?: Connection;
}

const FINAL = new Set(['succeeded', 'blocked', 'cancelled']);

function checkRunId(run: unknown): number {
  if (typeof run !== 'number' || !Number.isSafeInteger(run) || run < 1) throw new ArgumentError(`run must be a positive integer, not ${describe(run)}`);
  return run;
}

function checkName(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.trim() === '') throw new ArgumentError(`${what} must be a non-empty string, not ${describe(v)}`);
  return v;
}

interface Waiter {
  run: number;
  throughBlocked: boolean;
  resolve: (o: RunOutcome) => void;
  reject: (e: unknown) => void;
}

export class Operator {
  private readonly config: pg.ClientConfig;
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client> | null = null;
  private listener: pg.Client | null = null;
  private listening: Promise<void> | null = null;
  private readonly waiters = new Set<Waiter>();
  private closed = false;

  constructor(options: OperatorOptions = {}) {
    this.config = clientConfig(options.connection);
    this.config.connectionTimeoutMillis ??= 10000;
    this.config.application_name ??= 'parflow-node-operator';
  }

  /** Run a statement on the call connection (reopened when lost); server errors as ParflowError. */
  async query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<pg.QueryResult<R>> {
    if (this.closed) throw new ArgumentError('the operator is closed');
    const c = await this.connection();
    try {
      return await c.query<R>(sql, params);
    } catch (err) {
      if (isConnectionError(err) && this.client === c) {
        this.client = null;
        c.end().catch(() => undefined);
      }
      throw fromServer(err);
    }
  }

  private async connection(): Promise<pg.Client> {
    if (this.client) return this.client;
    if (!this.connecting) {
      this.connecting = (async () => {
        const c = new pg.Client(this.config);
        c.on('error', () => { if (this.client === c) this.client = null; });
        try {
          await c.connect();
        } catch (err) {
          throw fromServer(err);
        } finally {
          this.connecting = null;
        }
        this.client = c;
        return c;
      })();
    }
    return this.connecting;
  }

  /** Validate spec against the workflow schema, then parflow_define; the new version number. */
  async define(name: string, spec: WorkflowSpec): Promise<number> {
    checkName(name, 'workflow name');
    validateSpec(spec);
    const r = await this.query<{ v: string }>('SELECT parflow_define($1::text, $2::jsonb)::text AS v', [name, JSON.stringify(spec)]);
    return Number(r.rows[0].v);
  }

  /** Start a run of the latest version of a workflow. */
  async start(workflow: string, options: StartOptions = {}): Promise<Run> {
    checkName(workflow, 'workflow name');
    if (!isPlainObject(options)) throw new ArgumentError(`start options must be an object, not ${describe(options)}`);
    const flags = options.flags ?? [];
    if (!Array.isArray(flags) || flags.some((f) => typeof f !== 'string' || f.trim() === ''))
      throw new ArgumentError('flags must be an array of non-empty strings');
    const priority: unknown = options.priority ?? 2;
    if (typeof priority !== "number" || !Number.isInteger(priority) || priority < 0 || priority > 3) throw new ArgumentError(`priority must be 0, 1, 2 or 3 (found ${describe(priority)})`);
    const parallel = options.parallel ?? null;
    if (parallel !== null && typeof parallel !== 'boolean') throw new ArgumentError(`parallel must be a boolean or null, not ${describe(parallel)}`);
    const input = options.input ?? {};
    if (!isPlainObject(input)) throw new ArgumentError(`input must be a JSON object, not ${describe(input)}`);
    const r = await this.query<{ run: string }>(
      'SELECT parflow_start($1::text, $2::text[], $3::int, $4::boolean, $5::jsonb)::text AS run',
      [workflow, flags, priority, parallel, JSON.stringify(input)]);
    return new Run(this, Number(r.rows[0].run));
  }

  /** A handle on an existing run. */
  run(id: number): Run {
    return new Run(this, checkRunId(id));
  }

  /** parflow_estimate of a workflow. */
  async estimate(workflow: string, flags: string[] = []): Promise<{ sequential: string; parallel: string; savings_pct: number; critical_path: string; lower_bound: string }> {
    checkName(workflow, 'workflow name');
    const r = await this.query(
      `SELECT sequential::text, parallel::text, savings_pct::float8 AS savings_pct, critical_path::text, lower_bound::text
         FROM parflow_estimate($1::text, $2::text[])`, [workflow, flags]);
    return r.rows[0] as never;
  }

  /** Close both connections; pending waits reject. */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters) w.reject(new Error('the operator was closed'));
    this.waiters.clear();
    const cs = [this.client, this.listener];
    this.client = this.listener = null;
    await Promise.all(cs.map((c) => c?.end().catch(() => undefined)));
  }

  // ---- waiting ------------------------------------------------------------

  /** @internal */
  wait(run: number, options: WaitOptions): Promise<RunOutcome> {
    if (this.closed) return Promise.reject(new ArgumentError('the operator is closed'));
    return new Promise<RunOutcome>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        this.waiters.delete(w);
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const w: Waiter = {
        run, throughBlocked: options.throughBlocked ?? false,
        resolve: (o) => { done(); resolve(o); },
        reject: (e) => { done(); reject(e); },
      };
      const onAbort = () => w.reject(options.signal!.reason ?? new Error('aborted'));
      if (options.signal?.aborted) return reject(options.signal.reason ?? new Error('aborted'));
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (options.timeout !== undefined) timer = setTimeout(() => w.reject(new Error(`run ${run} did not finish within ${options.timeout} ms`)), options.timeout);
      this.waiters.add(w);
      this.listen().then(() => this.catchUp([w]), (err) => w.reject(err));
    });
  }

  private listen(): Promise<void> {
    if (this.listener) return Promise.resolve();
    if (!this.listening) {
      this.listening = (async () => {
        const c = new pg.Client(this.config);
        c.on('error', () => undefined);
        try {
          await c.connect();
          await c.query('LISTEN parflow_orchestrator');
        } catch (err) {
          await c.end().catch(() => undefined);
          this.listening = null;
          throw fromServer(err);
        }
        this.adopt(c);
      })();
    }
    return this.listening;
  }

  /** A connected LISTENing client becomes the listener. */
  private adopt(c: pg.Client): void {
    c.on('notification', (m) => this.announced(m.payload));
    c.on('error', () => this.listenerLost(c));
    c.on('end', () => this.listenerLost(c));
    this.listener = c;
    this.listening = null;
  }

  private listenerLost(c: pg.Client): void {
    if (this.listener !== c) return;
    this.listener = null;
    c.end().catch(() => undefined);
    if (this.closed || this.waiters.size === 0) return;
    // reconnect; once listening again, the event log says what was missed
    (async () => {
      await sleep(100);
      const p = this.listening ?? (this.listening = this.relisten());
      await p;
    })().catch((err) => { for (const w of this.waiters) w.reject(err); });
  }

  private async relisten(): Promise<void> {
    let backoff = 100;
    for (;;) {
      if (this.closed) return;
      const c = new pg.Client(this.config);
      c.on('error', () => undefined);
      try {
        await c.connect();
        await c.query('LISTEN parflow_orchestrator');
      } catch {
        await c.end().catch(() => undefined);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 5000);
        continue;
      }
      this.adopt(c);
      await this.catchUp([...this.waiters]);
      return;
    }
  }

  /** Resolve the waiters whose run's last run_* event in the log is final. */
  private async catchUp(ws: Waiter[]): Promise<void> {
    const runs = [...new Set(ws.map((w) => w.run))];
    if (runs.length === 0) return;
    let rows: Array<{ run: string; kind: string | null; exists: boolean }>;
    try {
      const r = await this.query<{ run: string; kind: string | null; exists: boolean }>(
        `SELECT r.run::text, e.kind, EXISTS (SELECT FROM parflow.runs x WHERE x.run = r.run) AS exists
           FROM unnest($1::bigint[]) AS r(run)
           LEFT JOIN LATERAL (SELECT substr(e.kind, 5) AS kind FROM parflow.events e
                               WHERE e.run = r.run AND e.kind LIKE 'run\\_%'
                               ORDER BY e.event DESC LIMIT 1) e ON true`, [runs]);
      rows = r.rows;
    } catch (err) {
      for (const w of ws) w.reject(err);
      return;
    }
    for (const row of rows) {
      const run = Number(row.run);
      if (!row.exists) {
        for (const w of ws) if (w.run === run) w.reject(new ParflowError(`run ${run} does not exist`, { sqlstate: '42704' }));
      } else if (row.kind && FINAL.has(row.kind)) await this.finished(run, row.kind as FinalState, null);
    }
  }

  private announced(payload: string | undefined): void {
    let m: { kind?: string; run?: number; failures?: Failure[]; truncated?: boolean };
    try {
      m = JSON.parse(payload ?? '{}');
    } catch {
      return;
    }
    if (typeof m.run === 'number' && m.kind && FINAL.has(m.kind))
      void this.finished(m.run, m.kind as FinalState, m.truncated ? null : (m.failures ?? null));
  }

  private async finished(run: number, state: FinalState, failures: Failure[] | null): Promise<void> {
    const ws = [...this.waiters].filter((w) => w.run === run && !(state === 'blocked' && w.throughBlocked));
    if (ws.length === 0) return;
    if (state === 'blocked' && failures === null) {
      try {
        failures = await this.run(run).failures();
      } catch (err) {
        for (const w of ws) w.reject(err);
        return;
      }
    }
    for (const w of ws) w.resolve({ run, state, failures: failures ?? [] });
  }
}

/** A run: wait for it, read its results, control it. */
export class Run {
  constructor(readonly operator: Operator, readonly id: number) {}

  /** Resolves when the run has succeeded, is blocked (unless throughBlocked) or was cancelled. */
  wait(options: WaitOptions = {}): Promise<RunOutcome> {
    return this.operator.wait(this.id, options);
  }

  async state(): Promise<RunState> {
    const r = await this.operator.query<{ state: RunState }>('SELECT state FROM parflow.runs WHERE run = $1', [this.id]);
    if (r.rows.length === 0) throw new ParflowError(`run ${this.id} does not exist`, { sqlstate: '42704' });
    return r.rows[0].state;
  }

  /** parflow_result: state, input, every stage's output, each group's result. */
  async result(): Promise<{ state: RunState; input: Record<string, unknown>; outputs: Record<string, Record<string, unknown>>; groups: Record<string, unknown>; [k: string]: unknown }> {
    const r = await this.operator.query<{ r: never }>('SELECT parflow_result($1::bigint) AS r', [this.id]);
    return r.rows[0].r;
  }

  /** parflow_failures: every failed stage with its attempts' errors. */
  async failures(): Promise<Failure[]> {
    const r = await this.operator.query<{ f: Failure[] | null }>('SELECT parflow_failures($1::bigint) AS f', [this.id]);
    return r.rows[0].f ?? [];
  }

  /** parflow_report: planned against actual, realised savings. */
  async report(): Promise<RunReport> {
    const r = await this.operator.query<RunReport>(
      `SELECT workflow, version, state, parallel, planned::text, actual::text, work::text,
              realised_savings_pct::float8 AS realised_savings_pct, off_plan_pct::float8 AS off_plan_pct
         FROM parflow_report($1::bigint)`, [this.id]);
    return r.rows[0];
  }

  async cancel(): Promise<void> {
    await this.operator.query('SELECT parflow_cancel($1::bigint)', [this.id]);
  }

  async pause(): Promise<void> {
    await this.operator.query('SELECT parflow_pause($1::bigint)', [this.id]);
  }

  async resume(): Promise<void> {
    await this.operator.query('SELECT parflow_resume($1::bigint)', [this.id]);
  }

  /** Re-open a failed stage with fresh attempts. */
  async retry(stage: string): Promise<void> {
    checkName(stage, 'stage name');
    await this.operator.query('SELECT parflow_retry($1::bigint, $2::text)', [this.id, stage]);
  }

  async restartGroup(group: string): Promise<void> {
    checkName(group, 'group name');
    await this.operator.query('SELECT parflow_restart_group($1::bigint, $2::text)', [this.id, group]);
  }

  /** Deliver an event to the run's wait stages (needs a server with parflow_signal). */
  async signal(event: string, payload: Record<string, unknown> = {}): Promise<number> {
    checkName(event, 'event name');
    if (!isPlainObject(payload)) throw new ArgumentError(`payload must be a JSON object, not ${describe(payload)}`);
    return this.waitStageCall('SELECT parflow_signal($1::bigint, $2::text, $3::jsonb)::int AS n', [this.id, event, JSON.stringify(payload)], 'parflow_signal');
  }

  /** Refuse an event the run's wait stages await (needs a server with parflow_reject). */
  async reject(event: string, reason: string): Promise<number> {
    checkName(event, 'event name');
    checkName(reason, 'reason');
    return this.waitStageCall('SELECT parflow_reject($1::bigint, $2::text, $3::text)::int AS n', [this.id, event, reason], 'parflow_reject');
  }

  private async waitStageCall(sql: string, params: unknown[], fn: string): Promise<number> {
    try {
      const r = await this.operator.query<{ n: number }>(sql, params);
      return Number(r.rows[0].n);
    } catch (err) {
      if (err instanceof ParflowError && err.sqlstate === '42883')
        throw new ParflowError(`this server has no ${fn}: wait stages need a newer parflow`, { sqlstate: '42883', detail: err.message, cause: err });
      throw err;
    }
  }
}

