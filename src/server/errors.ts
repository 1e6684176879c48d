/**
 * Every error answer has one shape, `{error: {code, message, field?}}`, and a status that says
 * whose fault it was. Anything a client sends maps to a 4xx here; only a fault of the server
 * itself (a bug, the database down) is a 5xx.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isConnectionError } from '../core/connection.js';
import { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from '../engine/errors.js';

/** The error codes of the contract (docs/http-api.md). */
export type ErrorCode =
  | 'invalid_request'
  | 'unauthorized'
  | 'forbidden'
  | 'not_found'
  | 'method_not_allowed'
  | 'stale_attempt'
  | 'conflict'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'unavailable'
  | 'internal';

/** An error the routes throw to answer with a given status and code. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

/** A validation error of TypeBox or Ajv: what Fastify hands the error handler in `validation`. */
interface SchemaIssue {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

const PARTS: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'header',
};

/** Escapes a property name for a JSON pointer (RFC 6901). */
const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * The most useful issue of a failed validation, as a field (JSON pointer) and a message. A
 * union's own "must match a schema in anyOf" says less than the branch errors before it, and a
 * missing or unknown property is named by its own pointer, not its parent's.
 */
export function describeIssues(issues: SchemaIssue[], part: string): { field: string; message: string } {
  const useful = issues.filter((i) => i.keyword !== 'anyOf' && i.keyword !== 'boolean');
  const issue = useful.find((i) => i.keyword === 'required' || i.keyword === 'additionalProperties') ??
    useful.sort((a, b) => (b.instancePath?.length ?? 0) - (a.instancePath?.length ?? 0))[0] ??
    issues[0] ?? { instancePath: '', message: 'invalid' };
  let field = issue.instancePath ?? '';
  let message = issue.message ?? 'is invalid';
  const p = issue.params ?? {};
  const names = (v: unknown) => (Array.isArray(v) ? v.map(String) : typeof v === 'string' ? [v] : []);
  if (issue.keyword === 'required') {
    const missing = names(p.requiredProperties ?? p.missingProperty);
    if (missing[0] !== undefined) {
      field = `${field}/${escapePointer(missing[0])}`;
      message = 'is required';
    }
  } else if (issue.keyword === 'additionalProperties') {
    const extra = names(p.additionalProperties ?? p.additionalProperty);
    if (extra[0] !== undefined) {
      field = `${field}/${escapePointer(extra[0])}`;
      message = 'is not a known field';
    }
  } else if (issue.keyword === 'pattern' && p.pattern === '^[^\\u0000]*$') {
    message = 'must not contain NUL characters';
  }
  const where = PARTS[part] ?? part;
  return { field, message: `${where} ${field || '(root)'} ${message}` };
}

function body(code: ErrorCode, message: string, field?: string): ErrorBody {
  return { error: field === undefined ? { code, message } : { code, message, field } };
}

/** Maps any thrown error to a status and body; the last resort is 500 `internal`. */
export function toErrorReply(err: unknown): { status: number; body: ErrorBody; internal: boolean } {
  if (err instanceof HttpError)
    return { status: err.status, body: body(err.code, err.message, err.field), internal: false };
  if (err instanceof ValidationError)
    return { status: 400, body: body('invalid_request', err.message), internal: false };
  if (err instanceof NotFoundError)
    return { status: 404, body: body('not_found', err.message), internal: false };
  if (err instanceof StaleAttemptError)
    return { status: 409, body: body('stale_attempt', err.message), internal: false };
  if (err instanceof ConflictError)
    return { status: 409, body: body('conflict', err.message), internal: false };
  const fe = err as Partial<FastifyError> & { validation?: SchemaIssue[]; validationContext?: string };
  if (fe.validation) {
    const { field, message } = describeIssues(fe.validation, fe.validationContext ?? 'body');
    return { status: 400, body: body('invalid_request', message, field), internal: false };
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return {
        status: 413,
        body: body('payload_too_large', fe.message ?? 'request body too large'),
        internal: false,
      };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return {
        status: 415,
        body: body('unsupported_media_type', 'send the body as JSON (content-type: application/json)'),
        internal: false,
      };
  }
  // Fastify's own client errors (bad JSON, empty JSON body, bad content length...) carry a 4xx.
  const status = fe.statusCode ?? (fe as { status?: number }).status;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code: ErrorCode =
      status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : 'invalid_request';
    return { status, body: body(code, fe.message ?? 'bad request'), internal: false };
  }
  if (isUnavailable(err))
    return {
      status: 503,
      body: body('unavailable', `the database is unavailable; retry (${(err as Error).message})`),
      internal: false,
    };
  return { status: 500, body: body('internal', 'internal error (logged by the server)'), internal: true };
}

/**
 * The database did not answer, or not yet: a broken or refused PostgreSQL connection, a commit
 * whose outcome is unknown, SQLite busy past its timeout, or a store closed by shutdown. The
 * client may retry (every call is safe to repeat), here or on another server.
 */
function isUnavailable(err: unknown): boolean {
  if (isConnectionError(err)) return true;
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  if (e?.name === 'CommitOutcomeUnknownError') return true;
  if (e?.code === 'SQLITE_BUSY' || e?.code === 'SQLITE_LOCKED') return true;
  return (
    typeof e?.message === 'string' &&
    /the dynatask store is closed|database connection is not open|Cannot use a pool after calling end/i.test(
      e.message,
    )
  );
}

/** Installs the error and not-found handlers that give every error the contract's shape. */
export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    const r = toErrorReply(err);
    if (r.internal) req.log.error({ err }, 'request failed');
    else if (r.status >= 500) req.log.warn({ err }, 'request failed');
    if (r.status === 503) void reply.header('retry-after', '1');
    void reply.code(r.status).send(r.body);
  });
  app.setNotFoundHandler((req: FastifyRequest, reply: FastifyReply) => {
    void reply.code(404).send(body('not_found', `no route ${req.method} ${req.url.split('?')[0]}`));
  });
}

/** How deep a request body's JSON may nest: far beyond any real payload, far within the stack. */
export const MAX_JSON_DEPTH = 128;

/**
 * Refuses JSON nested deeper than MAX_JSON_DEPTH, naming where. Parsing is iterative, but
 * serialising is recursive: a value nested thousands deep would be stored, then fail every
 * answer that carries it (a claim, a read), far from the request that sent it.
 */
export function checkDepth(body: unknown): void {
  type Node = { value: unknown; depth: number; key: string; parent: Node | undefined };
  const stack: Node[] = [{ value: body, depth: 0, key: '', parent: undefined }];
  while (stack.length) {
    const n = stack.pop()!;
    if (n.value === null || typeof n.value !== 'object') continue;
    if (n.depth >= MAX_JSON_DEPTH) {
      const keys: string[] = [];
      for (let p: Node | undefined = n; p?.parent; p = p.parent) keys.push(escapePointer(p.key));
      const field = `/${keys.reverse().join('/')}`;
      throw new HttpError(
        400,
        'invalid_request',
        `body ${field} nests deeper than ${MAX_JSON_DEPTH} levels`,
        field,
      );
    }
    for (const [k, v] of Object.entries(n.value))
      if (v !== null && typeof v === 'object')
        stack.push({ value: v, depth: n.depth + 1, key: k, parent: n });
  }
}
