/** What the route modules share: the typed Fastify instance and the error answers of a route. */

import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import type { Access } from '../auth.js';
import { ErrorBody } from '../schemas.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (auth.ts); routes without it need any valid token. */
    access?: Access;
  }
}

/** A Fastify instance whose routes infer their types from TypeBox schemas. */
export type Typed = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

const DESCRIPTIONS: Record<number, string> = {
  400: 'invalid_request: the body, path or query does not match the schema (`field` names it)',
  401: 'unauthorized: no token, or an unknown one',
  403: 'forbidden: the token lacks the scope',
  404: 'not_found: no such job or task',
  409: 'stale_attempt: the token no longer holds the task; or conflict',
  413: 'payload_too_large: the body is over the limit',
  415: 'unsupported_media_type: the body is not JSON',
  503: 'unavailable: the database is unreachable or busy, or the server is shutting down; retry',
};

/** Response schemas of the error statuses a route can answer (and 503, which every route can). */
export function errors(...statuses: number[]): Record<number, typeof ErrorBody> {
  return Object.fromEntries(
    [...new Set([...statuses, 503])].map((s) => [
      s,
      { ...ErrorBody, description: DESCRIPTIONS[s] ?? 'error' },
    ]),
  ) as Record<number, typeof ErrorBody>;
}
