/** The OpenAPI document of the HTTP API, as text: what `GET /openapi.json` serves and openapi.json holds. */
import { open } from '../dynatask.js';
import { buildServer } from './server.js';

/** Builds a server on an in-memory store and renders its document (2-space JSON, final newline). */
export async function openApiDocument(): Promise<string> {
  const dt = await open({ database: ':memory:' });
  try {
    const server = await buildServer({ dt, sweepLeases: false });
    try {
      return `${JSON.stringify(server.app.swagger(), null, 2)}\n`;
    } finally {
      await server.close();
    }
  } finally {
    await dt.close();
  }
}
