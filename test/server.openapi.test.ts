/**
 * The committed openapi.json is the document the server serves: SDKs are built against the
 * file, so a route or schema change must come with `npm run openapi`.
 */
import { readFileSync } from 'node:fs';
import { Compile } from 'typebox/compile';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openApiDocument } from '../src/server/openapi.js';
import { type Loose, startServer, type TestServer } from './fixtures/http.js';

const TOKEN = 'openapi-test-admin-secret';

/** A server with a token (as deployed; openapi.json is its document) and one without (open). */
let s: TestServer;
let open: TestServer;
beforeAll(async () => {
  s = await startServer({ tokens: [{ name: 'admin', scopes: ['admin'], secret: TOKEN }] });
  open = await startServer();
});
afterAll(async () => {
  await s.close();
  await open.close();
});

/** The document's schema at `ref` with every $ref replaced by what it names. */
function resolved(doc: Loose, node: Loose): Loose {
  if (Array.isArray(node)) return node.map((n) => resolved(doc, n));
  if (node === null || typeof node !== 'object') return node;
  if (typeof node.$ref === 'string') {
    const { $ref, ...rest } = node;
    return { ...resolved(doc, doc.components.schemas[$ref.split('/').pop()]), ...rest };
  }
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, resolved(doc, v)]));
}

it('openapi.json matches the running server (run `npm run openapi` after changing routes)', async () => {
  const committed = readFileSync(new URL('../openapi.json', import.meta.url), 'utf8');
  const served = await s.call('GET', '/openapi.json', undefined, { token: TOKEN });
  expect(served.status).toBe(200);
  expect(served.body).toEqual(JSON.parse(committed));
  expect(await openApiDocument()).toBe(committed);
  expect(served.body.security).toEqual([{ bearer: [] }]);
  expect(served.body.components.securitySchemes).toEqual({ bearer: { type: 'http', scheme: 'bearer' } });
});

it('a server without tokens serves a document without bearer auth, 401 or 403', async () => {
  const served = await open.call('GET', '/openapi.json');
  expect(served.status).toBe(200);
  const doc = served.body;
  expect(doc).toEqual(JSON.parse(await openApiDocument('open')));
  expect(doc.security).toBeUndefined();
  expect(doc.components.securitySchemes).toBeUndefined();
  const ops = Object.entries(doc.paths as Record<string, Record<string, Loose>>).flatMap(([path, methods]) =>
    Object.entries(methods).map(([m, op]) => ({ label: `${m} ${path}`, op })),
  );
  expect(ops.length).toBeGreaterThanOrEqual(22);
  for (const { label, op } of ops) {
    expect(op.security, label).toBeUndefined();
    expect(Object.keys(op.responses), label).not.toContain('401');
    expect(Object.keys(op.responses), label).not.toContain('403');
    expect(op.responses['200'], label).toBeDefined();
  }
  // Everything else is the document of a server with tokens.
  expect(Object.keys(doc.paths)).toEqual(
    Object.keys((await s.call('GET', '/openapi.json', undefined, { token: TOKEN })).body.paths),
  );
});

it('declares each Server-Sent Event: its data line is the JSON of an Event, which a real stream matches', async () => {
  const doc = JSON.parse(readFileSync(new URL('../openapi.json', import.meta.url), 'utf8'));
  for (const path of ['/v1/events', '/v1/jobs/{jobId}/events']) {
    const media = doc.paths[path].get.responses['200'].content['text/event-stream'];
    expect(media.schema, path).toEqual({ $ref: '#/components/schemas/ServerSentEvent' });
  }
  const sse = resolved(doc, doc.components.schemas.ServerSentEvent);
  expect(sse.type).toBe('object');
  expect(sse.required).toEqual(['data']);
  expect(sse.properties.data).toMatchObject({ type: 'string', contentMediaType: 'application/json' });
  const event = Compile(sse.properties.data.contentSchema);

  // A job with progress, through the worker protocol, while a stream of all kinds is open.
  const stream = await fetch(`${open.url}/v1/events`);
  const job = (await open.call('POST', '/v1/jobs', { jobs: [{ type: 'sse' }] })).body.jobs[0];
  const t = (await open.call('POST', '/v1/worker/claim', { types: ['sse'], limit: 1 })).body.tasks[0];
  await open.call('POST', '/v1/worker/progress', { id: t.id, token: t.token, progress: { done: 1 } });
  await open.call('POST', '/v1/worker/report', { completed: [{ id: t.id, token: t.token, result: 1 }] });
  const reader = stream.body!.getReader();
  const decoder = new TextDecoder();
  let text = '';
  while (!text.includes('"kind":"job"')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
  }
  await reader.cancel();
  const data = text
    .split('\n')
    .filter((l) => l.startsWith('data: '))
    .map((l) => JSON.parse(l.slice(6)));
  expect(new Set(data.map((d) => d.kind))).toEqual(new Set(['task', 'progress', 'job']));
  for (const d of data) {
    expect(d.jobId).toBe(job.jobId);
    expect(event.Check(d), JSON.stringify(d)).toBe(true);
  }
  expect(event.Check({ kind: 'job', jobId: job.jobId })).toBe(false);
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
