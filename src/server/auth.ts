/**
 * Bearer tokens with scopes. A token is configured as `name:scopes:secret` (scopes joined by
 * `+`, e.g. `ci:operator+viewer:s3cret`); the server keeps only a SHA-256 of each secret and
 * compares the hash of the presented one against every configured hash with
 * crypto.timingSafeEqual, so neither the comparison nor the position of a match leaks timing.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { HttpError } from './errors.js';

/** What a token may do. `admin` may do everything. */
export type Scope = 'worker' | 'operator' | 'viewer' | 'admin';
export const SCOPES: readonly Scope[] = ['worker', 'operator', 'viewer', 'admin'];

/** What a route requires: `read` is met by viewer, operator or admin; `none` needs no token. */
export type Access = 'none' | 'any' | 'read' | 'operator' | 'worker';

/** A configured token. */
export interface TokenSpec {
  /** Names the token in logs; never the secret. */
  name: string;
  scopes: Scope[];
  secret: string;
}

/**
 * Parses `name:scopes:secret` items separated by commas or newlines (the format of `--token`
 * and $DYNATASK_TOKENS). The secret may itself contain `:`.
 */
export function parseTokens(text: string): TokenSpec[] {
  return text
    .split(/[,\n]/)
    .map((s) => s.trim())
    .filter((s) => s !== '' && !s.startsWith('#'))
    .map((item) => {
      const [name, scopes, ...rest] = item.split(':');
      const secret = rest.join(':');
      if (!name || !scopes || !secret)
        throw new Error(
          `token ${JSON.stringify(name ?? item)}: expected name:scopes:secret (scopes: ${SCOPES.join(', ')})`,
        );
      const list = scopes.split('+').map((s) => s.trim());
      for (const s of list)
        if (!SCOPES.includes(s as Scope))
          throw new Error(
            `token ${JSON.stringify(name)}: unknown scope ${JSON.stringify(s)} (scopes: ${SCOPES.join(', ')})`,
          );
      if (secret.length < 16)
        throw new Error(`token ${JSON.stringify(name)}: the secret must have at least 16 characters`);
      return { name, scopes: list as Scope[], secret };
    });
}

const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Checks requests against the configured tokens. With none configured, everything is open. */
export class Auth {
  private readonly tokens: Array<{ name: string; scopes: Set<Scope>; hash: Buffer }>;

  constructor(tokens: TokenSpec[]) {
    const names = new Set<string>();
    this.tokens = tokens.map((t) => {
      if (names.has(t.name)) throw new Error(`token ${JSON.stringify(t.name)} is configured twice`);
      names.add(t.name);
      return { name: t.name, scopes: new Set(t.scopes), hash: sha256(t.secret) };
    });
  }

  get enabled(): boolean {
    return this.tokens.length > 0;
  }

  /** The configured token whose secret is `secret`, comparing with every one in constant time. */
  private find(secret: string) {
    const hash = sha256(secret);
    let found: (typeof this.tokens)[number] | undefined;
    for (const t of this.tokens) if (timingSafeEqual(t.hash, hash) && !found) found = t;
    return found;
  }

  /** Throws 401 or 403 unless the request may use a route of this access level; returns the token's name. */
  check(req: FastifyRequest, access: Access): string | undefined {
    if (!this.enabled || access === 'none') return undefined;
    const header = req.headers.authorization;
    const m = typeof header === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    if (!m) throw new HttpError(401, 'unauthorized', 'send a token: authorization: Bearer <token>');
    const token = this.find(m[1]!);
    if (!token) throw new HttpError(401, 'unauthorized', 'unknown token');
    const s = token.scopes;
    const ok =
      s.has('admin') ||
      access === 'any' ||
      (access === 'read' && (s.has('viewer') || s.has('operator'))) ||
      (access === 'operator' && s.has('operator')) ||
      (access === 'worker' && s.has('worker'));
    if (!ok)
      throw new HttpError(
        403,
        'forbidden',
        `token ${token.name} lacks the scope for this call (needs ${access === 'read' ? 'viewer or operator' : access})`,
      );
    return token.name;
  }
}
