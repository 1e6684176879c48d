/**
 * JSON over HTTP to a dynatask server: one keep-alive connection pool (undici), the bearer
 * token, retries of calls that are safe to repeat, and the server's errors mapped back to the
 * classes the in-process API throws.
 */
import { Agent, type Dispatcher } from 'undici';
import { ConflictError, NotFoundError, StaleAttemptError, ValidationError } from '../engine/errors.js';

/**
 * An error answer of the server that has no in-process counterpart (401, 403, 5xx...), or
 * `unreachable` (status 0) when no answer came before the retries gave up.
 */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A request body over the server's limit (413): bad input, as far as the caller can tell. */
export class PayloadTooLargeError extends ValidationError {
  override name = 'PayloadTooLargeError';
}

/** The server's `{error: {code, message, field?}}`, as the error the in-process API throws. */
export function errorFrom(status: number, body: unknown): Error {
  const e = (body as { error?: { code?: unknown; message?: unknown; field?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code : `http_${status}`;
  const message = typeof e?.message === 'string' ? e.message : `HTTP ${status}`;
  switch (code) {
    case 'invalid_request':
      return new ValidationError(message);
    case 'payload_too_large':
      return new PayloadTooLargeError(message);
    case 'not_found':
      return new NotFoundError(message);
    case 'stale_attempt':
      return new StaleAttemptError(message);
    case 'conflict':
      return new ConflictError(message);
  }
  return new HttpError(status, code, message);
}

/** Errors where the request may not have reached the server, or its answer was lost. */
const TRANSIENT = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

function transient(e: unknown): boolean {
  for (let c: unknown = e; c; c = (c as { cause?: unknown }).cause)
    if (TRANSIENT.has((c as { code?: string }).code ?? '')) return true;
  return false;
}

export interface TransportOptions {
  /** The server's base URL, e.g. `http://127.0.0.1:7077` (a path prefix is kept). */
  url: string;
  /** Sent as `authorization: Bearer <token>`. */
  token?: string | undefined;
  /** How long a retried call keeps trying through connection errors and 503s. Default 30 s. */
  retryForMs?: number;
}

export interface CallOptions {
  /** Retry after a connection error or a 503 (the call must be safe to repeat). Default true. */
  retry?: boolean;
  signal?: AbortSignal | undefined;
  /** A body already serialised as JSON (the hot path composes it). */
  raw?: string;
  /** Called before each repeat of the call, with the error that caused it. */
  onRetry?: (e: unknown) => void;
  /** How long this call keeps trying, instead of the transport's `retryForMs`. */
  retryForMs?: number;
}

export class Transport {
  readonly origin: string;
  private readonly prefix: string;
  readonly agent: Agent;
  private readonly headers: Record<string, string>;
  private readonly retryForMs: number;
  private closed = false;

  constructor(opts: TransportOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new ValidationError(`database: ${opts.url} is not an http:// or https:// URL`);
    this.origin = u.origin;
    this.prefix = u.pathname.replace(/\/+$/, '');
    // Keep-alive with room for the worker's concurrent calls (claim long-poll, report,
    // heartbeat, handlers' spawns and waits) without opening a socket per request.
    this.agent = new Agent({ keepAliveTimeout: 30_000, connections: 64, headersTimeout: 60_000 });
    this.headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (opts.token) this.headers.authorization = `Bearer ${opts.token}`;
    this.retryForMs = opts.retryForMs ?? 30_000;
  }

  /** The request path of an API path (with the base URL's prefix). */
  pathOf(path: string): string {
    return this.prefix + path;
  }

  /** Headers of a request (the token), for streams opened elsewhere. */
  get authHeaders(): Record<string, string> {
    return this.headers.authorization ? { authorization: this.headers.authorization } : {};
  }

  /** One call: JSON in, JSON out, or the mapped error. */
  async call<T>(
    method: 'GET' | 'POST' | 'PUT',
    path: string,
    body?: unknown,
    opts: CallOptions = {},
  ): Promise<T> {
    const payload = opts.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const deadline = Date.now() + (opts.retryForMs ?? this.retryForMs);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.once<T>(method, path, payload, opts.signal);
      } catch (e) {
        const again =
          opts.retry !== false &&
          !this.closed &&
          !opts.signal?.aborted &&
          (transient(e) || (e instanceof HttpError && e.status === 503)) &&
          Date.now() < deadline;
        if (!again) {
          if (transient(e) && !opts.signal?.aborted)
            throw new HttpError(
              0,
              'unreachable',
              `cannot reach the dynatask server at ${this.origin}: ${(e as Error).message || (e as { code?: string }).code}`,
              { cause: e },
            );
          throw e;
        }
        opts.onRetry?.(e);
        // Exponential backoff with jitter, 25 ms to 2 s: a restarting server is not stormed.
        const delay = Math.min(2000, 25 * 2 ** attempt) * (0.5 + Math.random() / 2);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  private async once<T>(
    method: string,
    path: string,
    body: string | undefined,
    signal?: AbortSignal,
  ): Promise<T> {
    const req: Dispatcher.RequestOptions = {
      origin: this.origin,
      path: this.pathOf(path),
      method: method as Dispatcher.HttpMethod,
      headers: this.headers,
    };
    if (body !== undefined) req.body = body;
    if (signal) req.signal = signal;
    const res = await this.agent.request(req);
    const text = await res.body.text();
    let parsed: unknown = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        if (res.statusCode < 400)
          throw new HttpError(res.statusCode, 'bad_response', `${path}: answer is not JSON`);
      }
    }
    if (res.statusCode >= 400) throw errorFrom(res.statusCode, parsed);
    return parsed as T;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.agent.close();
  }
}
