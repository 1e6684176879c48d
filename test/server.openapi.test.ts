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

it('names its schemas for SDK generators: every route has an operationId, every $ref resolves', () => {
  const doc = JSON.parse(readFileSync(new URL('../openapi.json', import.meta.url), 'utf8'));
  const ids = Object.values(doc.paths as Record<string, Record<string, { operationId?: string }>>).flatMap(
    (m) => Object.values(m).map((op) => op.operationId),
  );
  expect(ids.filter((id) => !id)).toEqual([]);
  expect(new Set(ids).size).toBe(ids.length);
  const refs = new Set<string>();
  const walk = (n: unknown) => {
    if (Array.isArray(n)) n.forEach(walk);
    else if (n && typeof n === 'object')
      for (const [k, v] of Object.entries(n)) k === '$ref' ? refs.add(v as string) : walk(v);
  };
  walk(doc);
  for (const ref of refs) {
    expect(ref).toMatch(/^#\/components\/schemas\//);
    expect(doc.components.schemas[ref.split('/').pop()!], ref).toBeDefined();
  }
  for (const name of ['TaskInfo', 'JobInfo', 'ClaimedTask', 'ReportRequest', 'SpawnOptions', 'Error'])
    expect(doc.components.schemas[name], name).toBeDefined();
});
