/**
 * The committed openapi.json is the document the server serves: SDKs are built against the
 * file, so a route or schema change must come with `npm run openapi`.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openApiDocument } from '../src/server/openapi.js';
import { startServer, type TestServer } from './fixtures/http.js';

let s: TestServer;
beforeAll(async () => {
  s = await startServer();
});
afterAll(() => s.close());

it('openapi.json matches the running server (run `npm run openapi` after changing routes)', async () => {
  const committed = readFileSync(new URL('../openapi.json', import.meta.url), 'utf8');
  const served = await s.call('GET', '/openapi.json');
  expect(served.status).toBe(200);
  expect(served.body).toEqual(JSON.parse(committed));
  expect(await openApiDocument()).toBe(committed);
});

it('every route of the API is in the document, each with its error answers', async () => {
  const doc = JSON.parse(readFileSync(new URL('../openapi.json', import.meta.url), 'utf8'));
  const ops = Object.entries(
    doc.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>,
  ).flatMap(([path, methods]) => Object.entries(methods).map(([m, op]) => ({ path, m, op })));
  expect(ops.length).toBeGreaterThanOrEqual(22);
  for (const { path, m, op } of ops) {
    expect(op.responses['200'], `${m} ${path}`).toBeDefined();
    if (path.startsWith('/v1/')) expect(op.responses['401'], `${m} ${path}`).toBeDefined();
  }
});
