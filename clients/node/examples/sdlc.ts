// examples/sdlc.ts -- the SDLC orchestrator on the parflow client: its ten
// agents as handlers of one Worker, its workflow as a spec, one parallel and
// one sequential run, and the savings the parallel one realised.
//
//   node dist/examples/sdlc.js [connection string]    (default: the PG* variables)
//
// The agents simulate their work: each sleeps its stage's estimate, one
// estimated minute lasting PF_DEMO_MS_PER_MIN ms (default 10), and passes on
// what the stages before it produced. Run by `make demo-node`.
import { Operator, Worker, type Handler, type Task, type WorkflowSpec } from '../src/index.js';

/** The workflow: eleven stages of ten agent kinds in eight groups, at most four at once. */
export const sdlcSpec: WorkflowSpec = {
  max_parallel: 4,
  description: 'Software delivery: research to documentation',
  groups: [
    { name: 'research', stages: [{ name: 'research', agent: 'research', estimate: '45 min' }] },
    { name: 'critique', stages: [{ name: 'critique', agent: 'critique', estimate: '30 min' }] },
    { name: 'build', stages: [
      { name: 'backend', agent: 'backend', estimate: '60 min' },
      { name: 'frontend', agent: 'frontend', estimate: '60 min' }] },
    { name: 'qa', stages: [
      { name: 'backend_qa', agent: 'qa', estimate: '45 min' },
      { name: 'frontend_qa', agent: 'qa', estimate: '45 min' }] },
    { name: 'hardening', stages: [
      { name: 'performance', agent: 'performance', estimate: '60 min', when: 'performance' },
      { name: 'security', agent: 'security', estimate: '60 min', when: 'security' }] },
    { name: 'statistics', stages: [{ name: 'statistics', agent: 'statistics', estimate: '90 min' }] },
    { name: 'devops', stages: [{ name: 'devops', agent: 'devops', estimate: '15 min' }] },
    { name: 'docs', stages: [{ name: 'documentation', agent: 'documentation', estimate: '30 min' }] },
  ],
};

/** Sleep the task's estimate (scaled), or stop at once when the signal fires. */
function work(task: Task, signal: AbortSignal, msPerMinute: number): Promise<void> {
  const ms = ((task.estimateSeconds ?? 0) / 60) * msPerMinute;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => { signal.removeEventListener('abort', stop); resolve(); }, ms);
    function stop() { clearTimeout(t); reject(signal.reason); }
    signal.addEventListener('abort', stop, { once: true });
  });
}

type Upstream = Record<string, Record<string, unknown>>;
const upstream = (task: Task): Upstream => (task.input.upstream as Upstream | undefined) ?? {};

/** The ten agents: what each one produces from what it was given. */
export function sdlcHandlers(msPerMinute: number): Record<string, Handler> {
  const agent = (make: (task: Task, up: Upstream) => Record<string, unknown>): Handler =>
    async (task, { signal }) => {
      await work(task, signal, msPerMinute);
      return { stage: task.stage, ...make(task, upstream(task)) };
    };
  return {
    research: agent((t) => ({ requirement: t.input.requirement ?? 'export invoices as CSV', findings: ['users want CSV', 'UTF-8 with BOM'] })),
    critique: agent((_t, up) => ({ accepted: (up.research?.findings as string[] | undefined)?.length ?? 0, risks: ['large exports'] })),
    backend: agent(() => ({ api: 'GET /invoices.csv', streaming: true })),
    frontend: agent(() => ({ ui: 'export button' })),
    qa: agent((t, up) => ({ checked: Object.keys(up), passed: true, suite: t.stage })),
    performance: agent(() => ({ p95_ms: 180 })),
    security: agent(() => ({ findings: 0 })),
    statistics: agent((_t, up) => ({ inputs: Object.keys(up).sort() })),
    devops: agent(() => ({ deployed: 'staging' })),
    documentation: agent((_t, up) => ({ pages: 3, from: Object.keys(up) })),
  };
}

export interface SdlcResult {
  parallelRun: number;
  sequentialRun: number;
  estimatedSavingsPct: number;
  realisedSavingsPct: number;
  parallelMs: number;
  sequentialMs: number;
}

/**
 * Define the workflow as `name`, run it once in parallel and once
 * sequentially with the flags given, and measure the savings. The handlers
 * run in a Worker of their own on the same connection settings.
 */
export async function runSdlc(options: { connection?: string; name?: string; flags?: string[]; msPerMinute?: number; print?: boolean } = {}): Promise<SdlcResult> {
  const name = options.name ?? 'sdlc';
  const flags = options.flags ?? ['performance', 'security'];
  const ms = options.msPerMinute ?? 10;
  const say = options.print ? (s: string) => console.log(s) : () => undefined;
  // each kind of this workflow gets the handler of its name
  const kinds = (k: string) => (name === 'sdlc' ? k : `${name}_${k}`);
  const spec: WorkflowSpec = {
    ...sdlcSpec,
    groups: sdlcSpec.groups.map((g) => ({ ...g, stages: g.stages.map((s) => (s.agent === undefined ? s : { ...s, agent: kinds(s.agent) })) })) as WorkflowSpec['groups'],
  };

  const operator = new Operator({ connection: options.connection });
  const worker = new Worker({ connection: options.connection, concurrency: 4, lease: '1 min', worker: `${name}-node` });
  for (const [kind, handler] of Object.entries(sdlcHandlers(ms))) worker.handle(kinds(kind), handler, { concurrency: 2 });
  await worker.start();
  try {
    const version = await operator.define(name, spec);
    const est = await operator.estimate(name, flags);
    say(`== ${name} version ${version}: ${spec.groups.reduce((n, g) => n + g.stages.length, 0)} stages, flags {${flags.join(',')}}`);
    say(`   planned: one at a time ${est.sequential}, in parallel ${est.parallel} (${est.savings_pct} % less)`);
    const timed = async (parallel: boolean) => {
      const t0 = Date.now();
      const run = await operator.start(name, { flags, parallel, input: { requirement: 'export invoices as CSV' } });
      const outcome = await run.wait({ timeout: 600000 });
      const took = Date.now() - t0;
      if (outcome.state !== 'succeeded') throw new Error(`run ${run.id} ended ${outcome.state}: ${JSON.stringify(outcome.failures)}`);
      say(`   run ${run.id} (${parallel ? 'parallel' : 'sequential'}): ${outcome.state} in ${took} ms = ` +
        `${(took / ms / 60).toFixed(2)} estimated h`);
      return { run, took };
    };
    const par = await timed(true);
    const seq = await timed(false);
    const result = await par.run.result();
    say(`   documentation of run ${par.run.id} was written from: ${JSON.stringify((result.outputs.documentation as { from?: unknown })?.from)}`);
    const realised = Math.round(1000 * (1 - par.took / seq.took)) / 10;
    say(`== realised savings: ${realised} % (estimated ${est.savings_pct} %)`);
    return { parallelRun: par.run.id, sequentialRun: seq.run.id, estimatedSavingsPct: Number(est.savings_pct), realisedSavingsPct: realised, parallelMs: par.took, sequentialMs: seq.took };
  } finally {
    await worker.stop();
    await operator.close();
  }
}

// Run as a script (not when imported by the tests).
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const ms = Number(process.env.PF_DEMO_MS_PER_MIN ?? 10);
  runSdlc({ connection: process.argv[2], msPerMinute: ms, print: true }).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
