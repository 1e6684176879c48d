/** The OpenAPI document of the HTTP API, as text: what `GET /openapi.json` serves and openapi.json holds. */
import { randomUUID } from 'node:crypto';
import { open } from '../dynatask.js';
import { buildServer } from './server.js';

/**
 * Builds a server on an in-memory store and renders its document (2-space JSON, final newline):
 * by default a server with tokens, as deployed (openapi.json); `open` for one without (local use),
 * whose document declares no auth.
 */
export async function openApiDocument(mode: 'tokens' | 'open' = 'tokens'): Promise<string> {
  const dt = await open({ database: ':memory:' });
  try {
    const tokens =
      mode === 'tokens' ? [{ name: 'openapi', scopes: ['admin' as const], secret: randomUUID() }] : [];
    const server = await buildServer({ dt, sweepLeases: false, tokens });
    try {
      return `${JSON.stringify(server.app.swagger(), null, 2)}\n`;
    } finally {
      await server.close();
    }
  } finally {
    await dt.close();
  }
}
