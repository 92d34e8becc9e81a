// worker.ts -- the agent side: handlers per agent kind on one connection.
//
// A Worker keeps one node-postgres connection. It LISTENs on
// "parflow_<kind>" for every kind it has a handler for, and one loop (the
// pump) sends every SQL call on it, one at a time, in this order: releases,
// reports (complete / fail), heartbeats that are due, then a claim while
// capacity is free. Claims ask for up to `batch` tasks (parflow_claim's
// max_tasks); successes that are ready together go in one
// parflow_complete_many, a lone one with the next claim of its kind in one
// parflow_complete_and_claim. Notifications wake the pump (dispatch) or stop
// a handler through its AbortSignal (interrupt: the task is then released;
// cancel: dropped). A lost connection is reopened with backoff; results that
// finished meanwhile, or whose report was lost with the connection, are sent
// after the reconnect (a refused resend, SQLSTATE 55000, was recorded the
// first time or lost its lease). stop() drains: no more claims, running
// handlers get `drainTimeout` to finish, then are aborted and released.
// The model is the reference agent, src/agent/*.c.
import { hostname } from 'node:os';
import pg from 'pg';
import { ArgumentError, NonRetryableError, fromServer, isConnectionError } from './errors.js';
import { checkKind, clientConfig, describe, isPlainObject, positiveInt, seconds, sleep, type Connection } from './util.js';

/** A claimed task, as the handler sees it. */
export interface Task {
  id: number;
  token: string;
  run: number;
  stage: string;
  /** The agent kind it was claimed for. */
  kind: string;
  attempt: number;
  /** The run's input plus "upstream" (outputs of its dependencies), "skipped", "route_back". */
  input: Record<string, unknown>;
  /** The stage's estimate in seconds (null if none). */
  estimateSeconds: number | null;
  leaseUntil: Date;
  /** A map instance's index (null for other stages). */
  item: number | null;
}

/** Why a handler's signal was aborted. */
export type StopReason = 'interrupt' | 'cancel' | 'lease-lost' | 'shutdown';

export interface HandlerContext {
  /** Aborted on interrupt, cancel, a lost lease or shutdown; signal.reason is a StopError. */
  signal: AbortSignal;
  /** Heartbeat now (they also run on their own every lease/3); resolves to the new lease end. */
  heartbeat(): Promise<Date>;
  /** This worker's name. */
  worker: string;
}

export type Output = Record<string, unknown>;
export type Handler = (task: Task, ctx: HandlerContext) => Promise<Output | void> | Output | void;

/** The reason of an aborted signal. */
export class StopError extends Error {
  override name = 'StopError';
  constructor(readonly reason: StopReason) {
    super(`task stopped: ${reason}`);
  }
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, message: string) => void;

export interface WorkerOptions {
  /** Connection string or pg ClientConfig; default: the PG* environment variables. */
  connection?: Connection;
  /** The worker name the server records; default <hostname>-<pid>. */
  worker?: string;
  /** Tasks at work at once, over all kinds (default 1). */
  concurrency?: number;
  /** Tasks asked of one claim (default: concurrency; at most 1000). */
  batch?: number;
  /** Lease: seconds or an interval string (default "5 min"); heartbeats every lease/3. */
  lease?: number | string;
  /** Claim at this interval (ms) while capacity is free, besides notifications (default 1000). */
  pollInterval?: number;
  /** Report a lone success with the next claim in one parflow_complete_and_claim (default true). */
  completeAndClaim?: boolean;
  /** stop(): how long (ms) running handlers may go on before they are aborted and released (default 30000). */
  drainTimeout?: number;
  /** Log sink; default: warnings and errors to stderr. */
  log?: Logger;
}

export interface HandleOptions {
  /** Tasks of this kind at once (default: the worker's concurrency). */
  concurrency?: number;
}

type Report =
  | { kind: 'complete'; output: string }
  | { kind: 'fail'; error: string; retryable: boolean; output: string | null };

interface Held {
  task: Task;
  state: 'working' | 'report' | 'release';
  controller: AbortController;
  /** What to do once a stopped handler settles. */
  after: 'release' | 'drop' | null;
  nextHeartbeat: number;
  heartbeatWaiters: Array<{ resolve: (d: Date) => void; reject: (e: unknown) => void }>;
  report: Report | null;
  resend: boolean;
  plain: boolean;
  retryAt: number;
  claimedAt: number;
}

interface KindState {
  kind: string;
  handler: Handler;
  concurrency: number;
  channel: string;
  want: boolean;
  /** A dispatch notification arrived while a claim of the kind was in flight. */
  again: boolean;
}

const MANY_MAX = 1000;
const MANY_MAX_BYTES = 8 * 1024 * 1024;
const BACKOFF_MIN = 100;
const BACKOFF_MAX = 5000;
const RETRY_MS = 1000;

const CLAIM_COLS = `SELECT c.task::text, c.token::text, c.run::text, c.stage, c.attempt, c.input,
  extract(epoch FROM c.estimate)::float8 AS estimate, c.lease_until, c.item`;

function defaultLog(level: LogLevel, message: string): void {
  if (level === 'warn' || level === 'error') process.stderr.write(`parflow worker ${level}: ${message}\n`);
}

function missingFunction(err: unknown): boolean {
  const code = (err as { code?: string })?.code;
  return code === '42883' || code === '42725';
}

function transient(code: string | undefined): boolean {
  return !!code && (code.startsWith('40') || code.startsWith('53'));
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.name && err.name !== 'Error' ? `${err.name}: ${err.message}` : err.message;
  return String(err);
}

export class Worker {
  readonly name: string;
  private readonly config: pg.ClientConfig;
  private readonly concurrency: number;
  private readonly batch: number;
  private readonly leaseSeconds: number;
  private readonly pollInterval: number;
  private readonly useCompleteAndClaim: boolean;
  private readonly drainTimeout: number;
  private readonly log: Logger;

  private readonly kinds = new Map<string, KindState>();
  private readonly channels = new Map<string, string>();
  private readonly held = new Map<number, Held>();
  private client: pg.Client | null = null;
  private connected = false;
  private started = false;
  private shuttingDown = false;
  private closed = false;
  private pumpDone: Promise<void> | null = null;
  private stopping: Promise<void> | null = null;
  private wakeUp: (() => void) | null = null;
  private nextPoll = 0;
  private backoff = BACKOFF_MIN;
  private claimMany = true;
  private cacOk = true;
  private manyOk = true;
  private lastClaimError = '';
  private firstConnect: { resolve: () => void; reject: (e: unknown) => void } | null = null;

  /** Counts since start. */
  readonly stats = { claimed: 0, completed: 0, failed: 0, released: 0, dropped: 0, reconnects: 0 };

  constructor(options: WorkerOptions = {}) {
    if (typeof options !== 'object' || options === null) throw new ArgumentError('options must be an object');
    this.config = clientConfig(options.connection);
    this.config.connectionTimeoutMillis ??= 10000;
    this.config.application_name ??= 'parflow-node-worker';
    this.name = options.worker ?? `${hostname()}-${process.pid}`;
    if (typeof this.name !== 'string' || this.name.trim() === '') throw new ArgumentError('worker name must be a non-empty string');
    this.concurrency = options.concurrency === undefined ? 1 : positiveInt(options.concurrency, 'concurrency', 100000);
    this.batch = options.batch === undefined ? Math.min(this.concurrency, MANY_MAX) : positiveInt(options.batch, 'batch', MANY_MAX);
    this.leaseSeconds = seconds(options.lease ?? '5 min', 'lease');
    this.pollInterval = options.pollInterval === undefined ? 1000 : positiveInt(options.pollInterval, 'pollInterval');
    this.useCompleteAndClaim = options.completeAndClaim ?? true;
    this.drainTimeout = options.drainTimeout === undefined ? 30000 : Math.max(0, Number(options.drainTimeout));
    if (!Number.isFinite(this.drainTimeout)) throw new ArgumentError('drainTimeout must be a number of milliseconds');
    this.log = options.log ?? defaultLog;
  }

  /** Register the handler of an agent kind (before start). */
  handle(kind: string, handler: Handler, options: HandleOptions = {}): this {
    checkKind(kind);
    if (typeof handler !== 'function') throw new ArgumentError(`handler for agent kind "${kind}" must be a function, not ${describe(handler)}`);
    if (this.kinds.has(kind)) throw new ArgumentError(`agent kind "${kind}" already has a handler`);
    if (this.started) throw new ArgumentError('handle() must be called before start()');
    const concurrency = options.concurrency === undefined ? this.concurrency : positiveInt(options.concurrency, `concurrency of "${kind}"`, 100000);
    const channel = `parflow_${kind}`;
    this.kinds.set(kind, { kind, handler, concurrency, channel, want: true, again: false });
    this.channels.set(channel, kind);
    return this;
  }

  /** Connect, LISTEN and start claiming; resolves once the first connection is up. */
  async start(): Promise<this> {
    if (this.started) throw new ArgumentError('the worker is already started');
    if (this.kinds.size === 0) throw new ArgumentError('no handler: call handle(kind, handler) before start()');
    this.started = true;
    const first = new Promise<void>((resolve, reject) => { this.firstConnect = { resolve, reject }; });
    this.pumpDone = this.pump();
    await first;
    return this;
  }

  /** stop() on SIGTERM and SIGINT (once each). */
  stopOnSignals(signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT']): this {
    for (const s of signals) process.once(s, () => { this.log('info', `${s}: draining`); void this.stop(); });
    return this;
  }

  /** How many tasks the worker holds (working, or to be reported or released). */
  get holding(): number {
    return this.held.size;
  }

  /**
   * Drain and close: no more claims; running handlers may finish within
   * `timeout` ms (default drainTimeout), then they are aborted and their
   * tasks released; pending reports are sent; the connection is closed.
   */
  stop(options: { timeout?: number } = {}): Promise<void> {
    if (this.stopping) return this.stopping;
    const timeout = options.timeout ?? this.drainTimeout;
    this.stopping = (async () => {
      this.shuttingDown = true;
      this.wake();
      const deadline = Date.now() + timeout;
      while (this.working() > 0 && Date.now() < deadline) await sleep(Math.min(50, deadline - Date.now()));
      for (const h of this.held.values()) {
        if (h.state === 'working' && h.after === null) {
          h.after = 'release';
          h.controller.abort(new StopError('shutdown'));
        }
      }
      // reports and releases go out; a handler that ignores its signal is waited for as long again
      const hard = Date.now() + Math.max(timeout, 10000);
      while (this.held.size > 0 && Date.now() < hard) {
        this.wake();
        await sleep(20);
      }
      if (this.held.size > 0) this.log('warn', `stopping with ${this.held.size} task(s) not reported: their leases will expire`);
      this.closed = true;
      this.wake();
      await this.pumpDone;
    })();
    return this.stopping;
  }

  // ---- the pump -----------------------------------------------------------

  private wake(): void {
    const w = this.wakeUp;
    this.wakeUp = null;
    w?.();
  }

  private waitFor(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wakeUp = null; resolve(); }, Math.max(0, ms));
      this.wakeUp = () => { clearTimeout(t); resolve(); };
    });
  }

  private working(): number {
    let n = 0;
    for (const h of this.held.values()) if (h.state === 'working') n++;
    return n;
  }

  private async pump(): Promise<void> {
    while (!this.closed) {
      if (!this.connected) {
        await this.connect();
        continue;
      }
      let did = false;
      try {
        did = await this.step();
      } catch (err) {
        if (isConnectionError(err)) this.lost(err);
        else this.log('error', `unexpected: ${errorText(err)}`);
      }
      if (!did && !this.closed && this.connected) await this.waitFor(this.deadline() - Date.now());
    }
    const c = this.client;
    this.client = null;
    this.connected = false;
    if (c) await c.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    const c = new pg.Client(this.config);
    c.on('error', (err) => { if (this.client === c) this.lost(err); });
    c.on('end', () => { if (this.client === c) this.lost(new Error('connection ended')); });
    c.on('notification', (msg) => { if (this.client === c) this.notified(msg.channel, msg.payload); });
    try {
      await c.connect();
      for (const k of this.kinds.values()) await c.query(`LISTEN ${c.escapeIdentifier(k.channel)}`);
    } catch (err) {
      await c.end().catch(() => undefined);
      if (this.firstConnect) {
        this.firstConnect.reject(fromServer(err));
        this.firstConnect = null;
        this.closed = true;
        return;
      }
      this.log('debug', `reconnect failed, next in ${this.backoff} ms: ${errorText(err)}`);
      await this.waitFor(this.backoff);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
      if (this.shuttingDown && this.held.size === 0) this.closed = true;
      return;
    }
    this.client = c;
    this.connected = true;
    this.backoff = BACKOFF_MIN;
    for (const k of this.kinds.values()) k.want = true;
    // leases held across the outage: heartbeat them at once
    for (const h of this.held.values()) if (h.state === 'working') h.nextHeartbeat = 0;
    if (this.firstConnect) {
      this.firstConnect.resolve();
      this.firstConnect = null;
    } else {
      this.stats.reconnects++;
      this.log('info', 'reconnected');
    }
  }

  private lost(err: unknown): void {
    if (!this.connected && !this.client) return;
    const c = this.client;
    this.client = null;
    this.connected = false;
    this.log('info', `connection lost, reconnecting: ${errorText(err)}`);
    c?.end().catch(() => undefined);
    this.wake();
  }

  /** When the pump next has something to do (ms since the epoch). */
  private deadline(): number {
    const now = Date.now();
    let d = now + 3600e3;
    for (const h of this.held.values()) {
      if (h.state !== 'working') d = Math.min(d, h.retryAt);
      else if (!this.shuttingDown) d = Math.min(d, h.heartbeatWaiters.length ? now : h.nextHeartbeat);
    }
    if (!this.shuttingDown && this.free() > 0) {
      for (const k of this.kinds.values()) if (k.want && this.freeFor(k) > 0) return now;
      d = Math.min(d, this.nextPoll);
    }
    return d;
  }

  private free(): number {
    return this.concurrency - this.held.size;
  }

  private freeFor(k: KindState, besides = 0): number {
    let n = 0;
    for (const h of this.held.values()) if (h.task.kind === k.kind) n++;
    return Math.min(this.free() + besides, k.concurrency - n + besides);
  }

  /** Send the next call; false when there was nothing to send. */
  private async step(): Promise<boolean> {
    const now = Date.now();
    const c = this.client!;
    // 1. releases
    for (const h of this.held.values()) {
      if (h.state === 'release' && h.retryAt <= now) {
        await this.release(c, h);
        return true;
      }
    }
    // 2. reports: failures one by one, successes together
    const ok: Held[] = [];
    for (const h of this.held.values()) {
      if (h.state !== 'report' || h.retryAt > now) continue;
      if (h.report!.kind === 'fail') {
        await this.fail(c, h);
        return true;
      }
      ok.push(h);
    }
    if (ok.length > 1 && this.manyOk) {
      const batch: Held[] = [];
      let bytes = 0;
      for (const h of ok) {
        if (h.plain) continue;
        const n = (h.report as { output: string }).output.length;
        if (batch.length >= MANY_MAX || (batch.length > 0 && bytes + n > MANY_MAX_BYTES)) break;
        batch.push(h);
        bytes += n;
      }
      if (batch.length > 1) {
        await this.completeMany(c, batch);
        return true;
      }
    }
    if (ok.length > 0) {
      await this.complete(c, ok[0]);
      return true;
    }
    // 3. heartbeats
    for (const h of this.held.values()) {
      if (h.state === 'working' && (h.heartbeatWaiters.length > 0 || (!this.shuttingDown && h.nextHeartbeat <= now))) {
        await this.heartbeat(c, h);
        return true;
      }
    }
    // 4. a claim
    if (this.shuttingDown || this.free() <= 0) return false;
    if (this.nextPoll <= now) {
      for (const k of this.kinds.values()) k.want = true;
      this.nextPoll = now + this.pollInterval;
    }
    for (const [kind, k] of this.kinds) {
      const n = Math.min(this.freeFor(k), this.batch);
      if (!k.want || n <= 0) continue;
      k.want = false;
      await this.claim(c, kind, k, n);
      return true;
    }
    return false;
  }

  private leaseText(): string {
    return `${this.leaseSeconds} seconds`;
  }

  private async claim(c: pg.Client, kind: string, k: KindState, n: number): Promise<void> {
    let res: pg.QueryResult;
    k.again = false;
    try {
      if (n > 1 && this.claimMany)
        res = await c.query(`${CLAIM_COLS} FROM parflow_claim($1::text, $2::text, $3::interval, max_tasks => $4::int) AS c`,
          [kind, this.name, this.leaseText(), n]);
      else res = await c.query(`${CLAIM_COLS} FROM parflow_claim($1::text, $2::text, $3::interval) AS c`, [kind, this.name, this.leaseText()]);
    } catch (err) {
      if (isConnectionError(err)) throw err;
      if (n > 1 && this.claimMany && missingFunction(err)) {
        this.claimMany = false;
        k.want = true;
        return;
      }
      const msg = errorText(fromServer(err));
      this.log(msg === this.lastClaimError ? 'debug' : 'error', `could not claim ${kind}: ${msg}`);
      this.lastClaimError = msg;
      return;
    }
    this.lastClaimError = '';
    const got = this.take(kind, res.rows);
    // a full claim: there may be more; fewer: wait for a dispatch
    k.want = got >= (n > 1 && this.claimMany ? n : 1) || k.again;
  }

  /** Start the handlers of claimed rows (or give them back when shutting down). */
  private take(kind: string, rows: Array<Record<string, unknown>>): number {
    let n = 0;
    for (const r of rows) {
      if (r.task === null || r.token === null) continue;
      const task: Task = {
        id: Number(r.task), token: String(r.token), run: Number(r.run), stage: String(r.stage), kind,
        attempt: Number(r.attempt), input: (r.input as Record<string, unknown>) ?? {},
        estimateSeconds: r.estimate === null ? null : Number(r.estimate),
        leaseUntil: r.lease_until as Date, item: r.item === null || r.item === undefined ? null : Number(r.item),
      };
      const h: Held = {
        task, state: 'working', controller: new AbortController(), after: null,
        nextHeartbeat: Date.now() + (this.leaseSeconds * 1000) / 3, heartbeatWaiters: [], report: null,
        resend: false, plain: false, retryAt: 0, claimedAt: Date.now(),
      };
      this.held.set(task.id, h);
      this.stats.claimed++;
      n++;
      if (this.shuttingDown) h.state = 'release';
      else this.run(h);
    }
    return n;
  }

  private run(h: Held): void {
    const k = this.kinds.get(h.task.kind)!;
    const ctx: HandlerContext = {
      signal: h.controller.signal,
      worker: this.name,
      heartbeat: () => new Promise<Date>((resolve, reject) => {
        if (h.state !== 'working' || h.after !== null) return reject(new StopError(h.after === 'drop' ? 'cancel' : 'interrupt'));
        h.heartbeatWaiters.push({ resolve, reject });
        this.wake();
      }),
    };
    Promise.resolve()
      .then(() => k.handler(h.task, ctx))
      .then((out) => this.settled(h, true, out), (err) => this.settled(h, false, err));
  }

  /** A handler returned (ok) or threw. */
  private settled(h: Held, ok: boolean, value: unknown): void {
    for (const w of h.heartbeatWaiters.splice(0)) w.reject(new StopError('shutdown'));
    if (this.held.get(h.task.id) !== h) return;
    if (h.after === 'drop') {
      this.forget(h, 'dropped');
      return;
    }
    if (!ok && h.after === 'release') {
      // stopped by an interrupt or the shutdown: give it back, not a failed attempt
      h.state = 'release';
      this.wake();
      return;
    }
    h.state = 'report';
    if (ok) {
      const out = value === undefined || value === null ? {} : value;
      let text: string | null = null;
      let problem: string | null = null;
      if (!isPlainObject(out)) problem = `the handler of agent kind "${h.task.kind}" returned ${describe(out)}: the output must be a JSON object`;
      else {
        try {
          text = JSON.stringify(out);
        } catch (err) {
          problem = `the output of the handler of agent kind "${h.task.kind}" is not JSON: ${errorText(err)}`;
        }
      }
      if (problem !== null) {
        this.log('error', `task ${h.task.id} (${h.task.stage}): ${problem}`);
        h.report = { kind: 'fail', error: problem, retryable: false, output: null };
      } else h.report = { kind: 'complete', output: text! };
    } else {
      const nonRetryable = value instanceof NonRetryableError;
      let output: string | null = null;
      if (nonRetryable && value.output !== undefined) {
        try { output = JSON.stringify(value.output); } catch { output = null; }
      }
      h.report = { kind: 'fail', error: errorText(value) || 'handler failed', retryable: !nonRetryable, output };
    }
    this.wake();
  }

  private forget(h: Held, what: 'completed' | 'failed' | 'released' | 'dropped'): void {
    if (this.held.get(h.task.id) === h) this.held.delete(h.task.id);
    this.stats[what]++;
    this.log('debug', `task ${h.task.id} (${h.task.stage}): ${what}`);
    const k = this.kinds.get(h.task.kind);
    if (k) k.want = true;
    this.wake();
  }

  /** A report the server refused (55000: not ours any more). */
  private refused(h: Held, err: unknown): void {
    const code = (err as { code?: string }).code;
    const msg = errorText(fromServer(err));
    if (code === '55000') {
      this.log(h.resend ? 'info' : 'warn', `task ${h.task.id}: ${h.resend ? 'report sent again after a reconnect refused (the first one may have been recorded)' : 'result not recorded'}: ${msg}`);
      this.forget(h, 'dropped');
    } else if (transient(code)) {
      h.retryAt = Date.now() + RETRY_MS;
    } else if (h.report?.kind === 'complete') {
      this.log('error', `task ${h.task.id}: completion refused, failing the task: ${msg}`);
      h.report = { kind: 'fail', error: `parflow_complete refused the result: ${msg}`, retryable: false, output: null };
    } else {
      this.log('error', `task ${h.task.id}: could not report, dropping it (its lease will expire): ${msg}`);
      this.forget(h, 'dropped');
    }
  }

  /** Run one call whose outcome may be lost with the connection. */
  private async call<T>(hs: Held[], f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      if (isConnectionError(err)) for (const h of hs) h.resend = true;
      throw err;
    }
  }

  private async complete(c: pg.Client, h: Held): Promise<void> {
    const out = (h.report as { output: string }).output;
    const k = this.kinds.get(h.task.kind)!;
    if (this.useCompleteAndClaim && this.cacOk && !this.shuttingDown && !h.resend && !h.plain && this.freeFor(k, 1) > 0) {
      let res: pg.QueryResult;
      k.again = false;
      try {
        res = await this.call([h], () => c.query(
          `${CLAIM_COLS} FROM parflow_complete_and_claim($1::bigint, $2::uuid, $3::jsonb, $4::text, $5::text, $6::interval) AS c`,
          [h.task.id, h.task.token, out, h.task.kind, this.name, this.leaseText()]));
      } catch (err) {
        if (isConnectionError(err)) throw err;
        const code = (err as { code?: string }).code;
        if (missingFunction(err)) this.cacOk = false;
        else if (code === '55000' || transient(code)) this.refused(h, err);
        else h.plain = true;            // find out on its own what was refused
        return;
      }
      this.forget(h, 'completed');
      k.want = this.take(h.task.kind, res.rows) > 0 || k.again;
      return;
    }
    try {
      await this.call([h], () => c.query('SELECT parflow_complete($1::bigint, $2::uuid, $3::jsonb)', [h.task.id, h.task.token, out]));
    } catch (err) {
      if (isConnectionError(err)) throw err;
      this.refused(h, err);
      return;
    }
    this.forget(h, 'completed');
  }

  private async completeMany(c: pg.Client, hs: Held[]): Promise<void> {
    let res: pg.QueryResult;
    try {
      res = await this.call(hs, () => c.query(
        'SELECT m.task::text, m.accepted, m.sqlstate, m.message FROM parflow_complete_many($1::bigint[], $2::uuid[], $3::jsonb[]) AS m',
        [hs.map((h) => h.task.id), hs.map((h) => h.task.token), hs.map((h) => (h.report as { output: string }).output)]));
    } catch (err) {
      if (isConnectionError(err)) throw err;
      if (missingFunction(err)) this.manyOk = false;
      else if (transient((err as { code?: string }).code)) for (const h of hs) h.retryAt = Date.now() + RETRY_MS;
      else for (const h of hs) h.plain = true;
      return;
    }
    const byId = new Map(hs.map((h) => [h.task.id, h]));
    for (const r of res.rows) {
      const h = byId.get(Number(r.task));
      if (!h) continue;
      byId.delete(h.task.id);
      if (r.accepted) this.forget(h, 'completed');
      else this.refused(h, Object.assign(new Error(r.message ?? 'refused'), { code: r.sqlstate ?? undefined, severity: 'ERROR' }));
    }
    for (const h of byId.values()) h.plain = true;
  }

  private async fail(c: pg.Client, h: Held): Promise<void> {
    const r = h.report as { error: string; retryable: boolean; output: string | null };
    try {
      await this.call([h], () => c.query('SELECT parflow_fail($1::bigint, $2::uuid, $3::text, $4::boolean, $5::jsonb)',
        [h.task.id, h.task.token, r.error, r.retryable, r.output]));
    } catch (err) {
      if (isConnectionError(err)) throw err;
      this.refused(h, err);
      return;
    }
    this.forget(h, 'failed');
  }

  private async release(c: pg.Client, h: Held): Promise<void> {
    try {
      await this.call([h], () => c.query('SELECT parflow_release($1::bigint, $2::uuid)', [h.task.id, h.task.token]));
    } catch (err) {
      if (isConnectionError(err)) throw err;
      const code = (err as { code?: string }).code;
      if (transient(code)) {
        h.retryAt = Date.now() + RETRY_MS;
        return;
      }
      if (code !== '55000') this.log('error', `task ${h.task.id}: could not release (its lease will expire): ${errorText(fromServer(err))}`);
      this.forget(h, 'dropped');
      return;
    }
    this.forget(h, 'released');
  }

  private async heartbeat(c: pg.Client, h: Held): Promise<void> {
    const waiters = h.heartbeatWaiters.splice(0);
    let until: Date;
    try {
      const res = await c.query('SELECT parflow_heartbeat($1::bigint, $2::uuid) AS until', [h.task.id, h.task.token]);
      until = res.rows[0].until as Date;
    } catch (err) {
      if (isConnectionError(err)) {
        h.heartbeatWaiters.unshift(...waiters);
        throw err;
      }
      const e = fromServer(err);
      for (const w of waiters) w.reject(e);
      if ((err as { code?: string }).code === '55000') {
        this.log('warn', `task ${h.task.id} (${h.task.stage}): lease lost: ${errorText(e)}`);
        if (h.state === 'working') {
          h.after = 'drop';
          h.controller.abort(new StopError('lease-lost'));
        }
      } else h.nextHeartbeat = Date.now() + Math.min(RETRY_MS, (this.leaseSeconds * 1000) / 3);
      return;
    }
    h.task.leaseUntil = until;
    h.nextHeartbeat = Date.now() + (this.leaseSeconds * 1000) / 3;
    for (const w of waiters) w.resolve(until);
  }

  // ---- notifications ------------------------------------------------------

  private notified(channel: string, payload: string | undefined): void {
    const kind = this.channels.get(channel);
    if (kind === undefined) return;
    let msg: { kind?: string; task?: number };
    try {
      msg = JSON.parse(payload ?? '{}');
    } catch {
      return;
    }
    if (msg.kind === 'dispatch') {
      const k = this.kinds.get(kind)!;
      k.want = k.again = true;
      this.wake();
      return;
    }
    const h = typeof msg.task === 'number' ? this.held.get(msg.task) : undefined;
    if (!h) return;
    if (msg.kind === 'interrupt') {
      if (h.state === 'working' && h.after === null) {
        this.log('info', `task ${h.task.id} (${h.task.stage}): interrupted`);
        h.after = 'release';
        h.controller.abort(new StopError('interrupt'));
      }
    } else if (msg.kind === 'cancel') {
      this.log('info', `task ${h.task.id} (${h.task.stage}): cancelled`);
      if (h.state === 'working') {
        h.after = 'drop';
        if (!h.controller.signal.aborted) h.controller.abort(new StopError('cancel'));
      } else {
        // a report or release not sent yet is no longer wanted; one in flight gets its answer
        h.retryAt = 0;
        if (h.state === 'report' || h.state === 'release') h.state = 'release';
      }
      this.wake();
    }
  }
}
