// errors.ts -- the errors the client raises: bad arguments found before any
// SQL is sent (ArgumentError, SpecError), errors of the server with their
// SQLSTATE, detail and hint (ParflowError), and the error a handler throws to
// fail its task for good (NonRetryableError).

/** A bad argument, found by the client before any SQL is sent. */
export class ArgumentError extends TypeError {
  override name = 'ArgumentError';
}

/** A workflow spec that fails schema/workflow.schema.json. */
export class SpecError extends ArgumentError {
  override name = 'SpecError';
  /** Where in the spec (JSON Pointer, '' for the spec itself). */
  readonly instancePath: string;
  /** The schema rule that failed (JSON Pointer into the schema, '#/...'). */
  readonly schemaPath: string;
  constructor(message: string, instancePath: string, schemaPath: string) {
    super(message);
    this.instancePath = instancePath;
    this.schemaPath = schemaPath;
  }
}

/** An error raised by the server, with its fields intact. */
export class ParflowError extends Error {
  override name = 'ParflowError';
  /** The SQLSTATE, such as '55000' or '22023'. */
  readonly sqlstate: string | undefined;
  readonly detail: string | undefined;
  readonly hint: string | undefined;
  constructor(message: string, fields: { sqlstate?: string; detail?: string; hint?: string; cause?: unknown }) {
    super(message, { cause: fields.cause });
    this.sqlstate = fields.sqlstate;
    this.detail = fields.detail;
    this.hint = fields.hint;
  }
}

/**
 * Thrown by a handler: the task fails for good (parflow_fail with
 * retryable => false), whatever attempts are left.  `output`, when given, is
 * stored with the failure (a verification's findings).
 */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
  readonly output: Record<string, unknown> | undefined;
  constructor(message: string, options?: { output?: Record<string, unknown>; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.output = options?.output;
  }
}

/** Whether an error means the connection is gone (or going). */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return true;           // socket errors, "Connection terminated"
  return code.startsWith('08') || code.startsWith('57P') || /^E[A-Z]+$/.test(code);
}

/** A server error as a ParflowError (others unchanged). */
export function fromServer(err: unknown): unknown {
  const e = err as { code?: unknown; message?: string; detail?: string; hint?: string; severity?: string };
  if (e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && e.severity !== undefined) {
    return new ParflowError(e.message ?? 'server error', { sqlstate: e.code, detail: e.detail, hint: e.hint, cause: err });
  }
  return err;
}
