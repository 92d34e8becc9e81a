// parflow: workers (handlers per agent kind) and operators (define, start,
// wait, results, control) for the parflow PostgreSQL extension.
export { Worker, StopError } from './worker.js';
export type { Task, Handler, HandlerContext, HandleOptions, Output, WorkerOptions, StopReason, Logger, LogLevel } from './worker.js';
export { Operator, Run } from './operator.js';
export type { OperatorOptions, StartOptions, WaitOptions, RunOutcome, RunState, FinalState, Failure, RunReport } from './operator.js';
export { ArgumentError, SpecError, ParflowError, NonRetryableError } from './errors.js';
export { validateSpec } from './validate.js';
export { workflowSchema } from './schema.js';
export type * from './spec.js';
export type { Connection } from './util.js';
