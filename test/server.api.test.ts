/**
 * The HTTP API on a real port and a real SQLite file: every endpoint's happy path, the error
 * shapes (400 naming the field, 401, 403, 404, 409, 413, 415), idempotent retries of submit,
 * complete, fail and spawn, long polls woken by a submission, and event streams.
 */

import { type IncomingHttpHeaders, request } from 'node:http';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseTokens } from '../src/server/auth.js';
import { pollUntil } from './conformance/harness.js';
import { fanOutHandlers, type Loose, runWorker, startServer, type TestServer } from './fixtures/http.js';

const UNKNOWN = '0190f5c2-7b1e-7cc0-8f3e-1d2b3c4d5e6f';

async function submit(s: TestServer, type: string, payload?: unknown, options?: Loose) {
  const r = await s.call('POST', '/v1/jobs', { jobs: [{ type, payload, ...(options ? { options } : {}) }] });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.jobs[0] as { jobId: string; rootTaskId: string; created: boolean };
}

async function claimOne(s: TestServer, type: string, extra: Loose = {}) {
  const r = await s.call('POST', '/v1/worker/claim', { types: [type], limit: 1, ...extra });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.tasks).toHaveLength(1);
  return r.body.tasks[0] as { id: string; token: number; jobId: string; payload: Loose; attempt: number };
}

/** Reads an SSE stream's `data:` events until `until` says stop. */
async function readEvents(res: Response, until: (events: Loose[]) => boolean): Promise<Loose[]> {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const events: Loose[] = [];
  let buf = '';
  while (!until(events)) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i = buf.indexOf('\n\n');
    while (i >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      for (const line of block.split('\n'))
        if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
      i = buf.indexOf('\n\n');
    }
  }
  await reader.cancel();
  return events;
}

/** A request by node:http, which sends any method (fetch refuses TRACE, for one). */
function rawCall(
  base: string,
  method: string,
  path: string,
  body?: string,
): Promise<{ status: number; body: Loose; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('HTTP API', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ pollMs: 60_000 });
  });
  afterAll(() => s.close());

  it('health, readiness and metrics', async () => {
    expect((await s.call('GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await s.call('GET', '/readyz')).body).toEqual({ status: 'ready' });
    await submit(s, 'metered');
    const m = await s.call('GET', '/metrics');
    expect(m.status).toBe(200);
    expect(m.headers.get('content-type')).toContain('text/plain');
    expect(m.body).toContain('dynatask_http_requests_total{method="GET",route="/healthz",status="200"} 1');
    expect(m.body).toContain('dynatask_claim_latency_seconds_bucket');
    expect(m.body).toMatch(/dynatask_tasks\{namespace="default",type="metered",state="queued"\} 1/);
  });

  it('submits, reads, lists and pages a job', async () => {
    const job = await submit(s, 'report', { month: 11 }, { priority: 5 });
    expect(job.created).toBe(true);
    const info = await s.call('GET', `/v1/jobs/${job.jobId}`);
    expect(info.body).toMatchObject({
      id: job.jobId,
      rootTaskId: job.rootTaskId,
      namespace: 'default',
      type: 'report',
      state: 'running',
      total: 1,
    });
    expect(info.body.counts.queued).toBe(1);
    const task = await s.call('GET', `/v1/tasks/${job.rootTaskId}`);
    expect(task.body).toMatchObject({
      id: job.rootTaskId,
      payload: { month: 11 },
      priority: 5,
      attempts: [],
    });
    const tree = await s.call('GET', `/v1/jobs/${job.jobId}/tasks?limit=10`);
    expect(tree.body.tasks.map((t: Loose) => t.id)).toEqual([job.rootTaskId]);
    expect(tree.body.next).toBeNull();
    const list = await s.call('GET', '/v1/jobs?type=report&state=running&limit=1');
    expect(list.body.jobs[0].id).toBe(job.jobId);
    expect(list.body.next).toBe(job.jobId);
    const after = await s.call('GET', `/v1/jobs?type=report&before=${job.jobId}`);
    expect(after.body).toEqual({ jobs: [], next: null });
    const types = await s.call('GET', '/v1/types');
    expect(types.body.types).toContainEqual({ type: 'report', queued: 1, served: false });
  });

  it('submission is idempotent by jobId', async () => {
    const jobId = '0190f5c2-7b1e-7cc0-8f3e-aaaaaaaaaaaa';
    const first = await submit(s, 'once', { a: 1 }, { jobId });
    const again = await submit(s, 'once', { a: 1 }, { jobId });
    expect(first).toMatchObject({ jobId, created: true });
    expect(again).toEqual({ ...first, created: false });
    const tree = await s.call('GET', `/v1/jobs/${jobId}/tasks`);
    expect(tree.body.tasks).toHaveLength(1);
  });

  it('runs a fan-out job through the worker protocol', async () => {
    const job = await submit(s, 'root', { n: 5 });
    let state = 'running';
    await runWorker(s, fanOutHandlers(), async () => {
      state = (await s.call('GET', `/v1/jobs/${job.jobId}`)).body.state;
      return state !== 'running';
    });
    const info = (await s.call('GET', `/v1/jobs/${job.jobId}`)).body;
    expect(info).toMatchObject({ state: 'succeeded', result: 15, total: 6 });
    expect(info.counts.succeeded).toBe(6);
  });

  it('complete and fail are idempotent and fenced by the token', async () => {
    await submit(s, 'fence');
    const t = await claimOne(s, 'fence');
    const done = { completed: [{ id: t.id, token: t.token, result: 'r' }] };
    expect((await s.call('POST', '/v1/worker/report', done)).body.completed).toEqual(['ok']);
    // A repeat after a lost answer: the outcome was recorded, so "ok" again.
    expect((await s.call('POST', '/v1/worker/report', done)).body.completed).toEqual(['ok']);
    const stale = { completed: [{ id: t.id, token: t.token + 1, result: 'r' }] };
    expect((await s.call('POST', '/v1/worker/report', stale)).body.completed).toEqual(['stale']);

    await submit(s, 'flaky', null, { maxAttempts: 2, backoffMs: 0 });
    const f = await claimOne(s, 'flaky');
    const fail = { failed: [{ id: f.id, token: f.token, error: { message: 'boom', name: 'Boom' } }] };
    expect((await s.call('POST', '/v1/worker/report', fail)).body.failed).toEqual(['ok']);
    expect((await s.call('POST', '/v1/worker/report', fail)).body.failed).toEqual(['ok']);
    const retried = await claimOne(s, 'flaky');
    expect(retried).toMatchObject({ id: f.id, attempt: 2 });
    expect(retried.token).not.toBe(f.token);
    // The first attempt's token is stale now: its failure must not count twice.
    expect((await s.call('POST', '/v1/worker/report', fail)).body.failed).toEqual(['stale']);
    const task = (await s.call('GET', `/v1/tasks/${f.id}`)).body;
    expect(task.attempts).toMatchObject([{ attempt: 1, error: { name: 'Boom', message: 'boom' } }]);
  });

  it('release gives claimed tasks back unstarted: queued at once, no attempt counted, the token stale', async () => {
    await submit(s, 'released');
    const t = await claimOne(s, 'released');
    const items = [{ id: t.id, token: t.token }];
    expect((await s.call('POST', '/v1/worker/release', { items })).body).toEqual({ items: ['ok'] });
    expect((await s.call('GET', `/v1/tasks/${t.id}`)).body).toMatchObject({ state: 'queued', attempt: 1 });
    expect((await s.call('POST', '/v1/worker/release', { items })).body).toEqual({ items: ['stale'] });
    const again = await claimOne(s, 'released');
    expect(again).toMatchObject({ id: t.id, attempt: 1 });
    const done = { completed: [{ id: t.id, token: again.token, result: 'r' }] };
    expect((await s.call('POST', '/v1/worker/report', done)).body.completed).toEqual(['ok']);
    const empty = await s.call('POST', '/v1/worker/release', { items: [] });
    expect(empty.status).toBe(400);
  });

  it('spawn is idempotent by key; wait, progress, steps and heartbeat', async () => {
    const job = await submit(s, 'parent');
    const p = await claimOne(s, 'parent');
    const children = [
      { type: 'kid', payload: 1, options: { key: 'a' } },
      { type: 'kid', payload: 2, options: { key: 'b', after: ['a'] } },
    ];
    const spawn = { items: [{ id: p.id, token: p.token, children }] };
    const first = await s.call('POST', '/v1/worker/spawn', spawn);
    expect(first.status).toBe(200);
    const handles = first.body.items[0].children;
    expect(handles.map((h: Loose) => [h.key, h.created, h.parentId])).toEqual([
      ['a', true, p.id],
      ['b', true, p.id],
    ]);
    const again = await s.call('POST', '/v1/worker/spawn', spawn);
    expect(again.body.items[0].children.map((h: Loose) => [h.id, h.created])).toEqual(
      handles.map((h: Loose) => [h.id, false]),
    );

    expect(
      (await s.call('POST', '/v1/worker/progress', { id: p.id, token: p.token, progress: { pct: 50 } }))
        .status,
    ).toBe(200);
    const ref = { id: p.id, token: p.token };
    expect((await s.call('POST', '/v1/worker/steps/get', { ...ref, name: 'fetch' })).body).toEqual({
      found: false,
    });
    expect(
      (await s.call('POST', '/v1/worker/steps/put', { ...ref, name: 'fetch', value: [1, 2] })).status,
    ).toBe(200);
    expect((await s.call('POST', '/v1/worker/steps/get', { ...ref, name: 'fetch' })).body).toEqual({
      found: true,
      value: [1, 2],
    });
    const hb = await s.call('POST', '/v1/worker/heartbeat', {
      items: [ref, { id: p.id, token: 999 }, { id: UNKNOWN, token: 1 }],
    });
    expect(hb.body.items).toEqual(['ok', 'lost', 'lost']);

    const wait = await s.call('POST', '/v1/worker/wait', {
      items: [
        { ...ref, ids: [handles[0].id] },
        { id: p.id, token: 999, all: true },
      ],
    });
    expect(wait.body.items[0]).toEqual({ suspended: true });
    expect(wait.body.items[1].error.code).toBe('stale_attempt');

    const kid = await claimOne(s, 'kid');
    expect(kid.payload).toBe(1); // b waits for a
    await s.call('POST', '/v1/worker/report', {
      completed: [{ id: kid.id, token: kid.token, result: 'one' }],
    });
    const resumed = await claimOne(s, 'parent');
    expect(resumed.id).toBe(p.id);
    const w2 = await s.call('POST', '/v1/worker/wait', {
      items: [{ id: resumed.id, token: resumed.token, ids: [handles[0].id] }],
    });
    expect(w2.body.items[0]).toEqual({
      suspended: false,
      outcomes: [{ taskId: handles[0].id, state: 'succeeded', result: 'one' }],
    });
    // The step survived the re-run.
    expect(
      (await s.call('POST', '/v1/worker/steps/get', { id: p.id, token: resumed.token, name: 'fetch' })).body,
    ).toEqual({
      found: true,
      value: [1, 2],
    });
    const t = (await s.call('GET', `/v1/tasks/${p.id}`)).body;
    expect(t.progress).toEqual({ pct: 50 });

    const cancel = await s.call('POST', `/v1/jobs/${job.jobId}/cancel`, { reason: 'enough' });
    expect(cancel.body).toEqual({ cancelled: true });
    expect((await s.call('POST', `/v1/jobs/${job.jobId}/cancel`, {})).body).toEqual({ cancelled: false });
    expect(
      (await s.call('POST', '/v1/worker/heartbeat', { items: [{ id: p.id, token: resumed.token }] })).body,
    ).toEqual({
      items: ['cancelled'],
    });
    // The parent's attempt was cancelled: its token is stale for single-task calls.
    const late = await s.call('POST', '/v1/worker/progress', { id: p.id, token: resumed.token, progress: 1 });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('stale_attempt');
  });

  it('cancels a subtree; retries a failed task and refuses one that has not failed', async () => {
    const job = await submit(s, 'solo');
    const cancel = await s.call('POST', `/v1/tasks/${job.rootTaskId}/cancel`, {});
    expect(cancel.body).toEqual({ cancelled: true });
    const refused = await s.call('POST', `/v1/tasks/${job.rootTaskId}/retry`, {});
    expect(refused.status).toBe(409);
    expect(refused.body.error.code).toBe('conflict');
    expect((await s.call('POST', `/v1/tasks/${UNKNOWN}/retry`, {})).status).toBe(404);

    const doomed = await submit(s, 'doomed', null, { maxAttempts: 1 });
    const t = await claimOne(s, 'doomed');
    await s.call('POST', '/v1/worker/report', {
      failed: [{ id: t.id, token: t.token, error: { message: 'no' } }],
    });
    expect((await s.call('GET', `/v1/jobs/${doomed.jobId}`)).body.state).toBe('failed');
    expect((await s.call('POST', `/v1/tasks/${t.id}/retry`, {})).body).toEqual({ retried: true });
    expect((await s.call('GET', `/v1/jobs/${doomed.jobId}`)).body.state).toBe('running');
    const again = await claimOne(s, 'doomed');
    expect(again).toMatchObject({ id: t.id, attempt: 2 });
    await s.call('POST', '/v1/worker/report', {
      completed: [{ id: t.id, token: again.token, result: 'fine' }],
    });
    expect((await s.call('GET', `/v1/jobs/${doomed.jobId}`)).body).toMatchObject({
      state: 'succeeded',
      result: 'fine',
    });
  });

  it('stores per-type settings for remote workers and shows served types', async () => {
    const set = await s.call('POST', '/v1/worker/types', {
      types: [{ type: 'timed', timeoutMs: 1234, maxAttempts: 1 }],
    });
    expect(set.status).toBe(200);
    await submit(s, 'timed');
    const t = await claimOne(s, 'timed', { workerId: 'w-1' });
    expect((t as Loose).timeoutMs).toBe(1234);
    await submit(s, 'timed');
    const types = await s.call('GET', '/v1/types');
    expect(types.body.types).toContainEqual({ type: 'timed', queued: 1, served: true });
  });

  it('a long poll wakes when a job is submitted', async () => {
    const started = Date.now();
    const poll = s.call('POST', '/v1/worker/claim', { types: ['wake-me'], limit: 5, waitMs: 30_000 });
    // Wait until the claim is parked (the server's own gauge), then submit.
    for (;;) {
      const m = (await s.call('GET', '/metrics')).body as string;
      if (/dynatask_claim_long_polls 1/.test(m)) break;
    }
    const job = await submit(s, 'wake-me');
    const r = await poll;
    expect(r.body.tasks.map((t: Loose) => t.jobId)).toEqual([job.jobId]);
    // Woken, not timed out (the safety-net poll is 60 s here).
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('a long poll waiting on a concurrency-limited type neither spins nor misses the freed slot', async () => {
    await s.call('POST', '/v1/worker/types', { types: [{ type: 'limited', concurrency: 1 }] });
    await submit(s, 'limited');
    await submit(s, 'limited');
    const first = await claimOne(s, 'limited');
    const claims = async () =>
      Number(/dynatask_claim_duration_seconds_count (\d+)/.exec((await s.call('GET', '/metrics')).body)![1]);
    const before = await claims();
    const blocked = await s.call('POST', '/v1/worker/claim', { types: ['limited'], limit: 1, waitMs: 500 });
    expect(blocked.body.tasks).toEqual([]);
    expect((await claims()) - before).toBeLessThan(10); // a few looks in 500 ms, not a busy loop
    const poll = s.call('POST', '/v1/worker/claim', { types: ['limited'], limit: 1, waitMs: 20_000 });
    await s.call('POST', '/v1/worker/report', { completed: [{ id: first.id, token: first.token }] });
    expect((await poll).body.tasks).toHaveLength(1);
  });

  it('a long poll answers empty at waitMs', async () => {
    const r = await s.call('POST', '/v1/worker/claim', { types: ['nothing'], limit: 1, waitMs: 50 });
    expect(r.body).toEqual({ tasks: [] });
  });

  it('streams events of one job and of all jobs', async () => {
    const all = await fetch(`${s.url}/v1/events`);
    expect(all.headers.get('content-type')).toContain('text/event-stream');
    const job = await submit(s, 'streamed');
    const one = await fetch(`${s.url}/v1/jobs/${job.jobId}/events`);
    const t = await claimOne(s, 'streamed');
    await s.call('POST', '/v1/worker/report', { completed: [{ id: t.id, token: t.token, result: 1 }] });
    const evs = await readEvents(one, (e) => e.some((x) => x.kind === 'job'));
    expect(evs.map((e) => (e.kind === 'job' ? `job:${e.state}` : `${e.kind}:${e.state}`))).toEqual([
      'task:running',
      'task:succeeded',
      'job:succeeded',
    ]);
    const allEvs = await readEvents(all, (e) => e.some((x) => x.kind === 'job' && x.jobId === job.jobId));
    expect(allEvs.filter((e) => e.jobId === job.jobId).map((e) => e.state)).toEqual([
      'queued',
      'running',
      'succeeded',
      'succeeded',
    ]);
    // A stream opened after the job settled starts with its end.
    const late = await fetch(`${s.url}/v1/jobs/${job.jobId}/events`);
    expect(await readEvents(late, (e) => e.length > 0)).toMatchObject([{ kind: 'job', state: 'succeeded' }]);
    expect((await s.call('GET', `/v1/jobs/${UNKNOWN}/events`)).status).toBe(404);
  });

  it('streams only the kinds asked for (kinds=job costs transactions nothing)', async () => {
    const job = await submit(s, 'kinds');
    const settles = await fetch(`${s.url}/v1/jobs/${job.jobId}/events?kinds=job`);
    const tasks = await fetch(`${s.url}/v1/events?kinds=task`);
    const t = await claimOne(s, 'kinds');
    await s.call('POST', '/v1/worker/progress', { id: t.id, token: t.token, progress: 1 });
    await s.call('POST', '/v1/worker/report', { completed: [{ id: t.id, token: t.token, result: 1 }] });
    const jobEvents = await readEvents(settles, (e) => e.length > 0);
    expect(jobEvents).toMatchObject([{ kind: 'job', jobId: job.jobId, state: 'succeeded' }]);
    const taskEvents = await readEvents(tasks, (e) =>
      e.some((x) => x.jobId === job.jobId && x.state === 'succeeded'),
    );
    expect(new Set(taskEvents.map((e) => e.kind))).toEqual(new Set(['task']));
    expect((await s.call('GET', '/v1/events?kinds=nope')).status).toBe(400);
  });

  it('serves its OpenAPI document', async () => {
    const doc = (await s.call('GET', '/openapi.json')).body;
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toContain('/v1/worker/claim');
  });
});

describe('HTTP API errors', () => {
  let s: TestServer;
  beforeAll(async () => {
    s = await startServer({ bodyLimit: 4096 });
  });
  afterAll(() => s.close());

  const expectError = (r: { status: number; body: Loose }, status: number, code: string, field?: string) => {
    expect(r.status, JSON.stringify(r.body)).toBe(status);
    expect(r.body.error.code).toBe(code);
    expect(typeof r.body.error.message).toBe('string');
    if (field !== undefined) expect(r.body.error.field).toBe(field);
  };

  it('validation errors name the field', async () => {
    expectError(
      await s.call('POST', '/v1/jobs', { jobs: [{ type: 7 }] }),
      400,
      'invalid_request',
      '/jobs/0/type',
    );
    expectError(await s.call('POST', '/v1/jobs', { jobs: [{}] }), 400, 'invalid_request', '/jobs/0/type');
    expectError(
      await s.call('POST', '/v1/jobs', { jobs: [{ type: 'a', oops: 1 }] }),
      400,
      'invalid_request',
      '/jobs/0/oops',
    );
    expectError(
      await s.call('POST', '/v1/jobs', { jobs: [{ type: 'a', options: { priority: 2 ** 40 } }] }),
      400,
      'invalid_request',
      '/jobs/0/options/priority',
    );
    expectError(await s.call('POST', '/v1/jobs', { jobs: [] }), 400, 'invalid_request', '/jobs');
    expectError(
      await s.call('POST', '/v1/jobs', { jobs: [{ type: 'a\u0000b' }] }),
      400,
      'invalid_request',
      '/jobs/0/type',
    );
    expectError(
      await s.call('POST', '/v1/worker/claim', { types: ['a'], limit: 0 }),
      400,
      'invalid_request',
      '/limit',
    );
    expectError(
      await s.call('POST', '/v1/worker/spawn', {
        items: [{ id: UNKNOWN, token: 1, children: [{ type: 'x' }] }],
      }),
      400,
      'invalid_request',
      '/items/0/children/0/options',
    );
    expectError(await s.call('GET', '/v1/jobs?limit=abc'), 400, 'invalid_request', '/limit');
    expectError(await s.call('GET', '/v1/jobs?state=bogus'), 400, 'invalid_request', '/state');
    expectError(await s.call('GET', '/v1/tasks/not-a-uuid'), 400, 'invalid_request', '/taskId');
    expectError(await s.call('POST', '/v1/jobs', undefined, { raw: '{"jobs": [' }), 400, 'invalid_request');
    const deep = (n: number): unknown => (n === 0 ? 1 : [deep(n - 1)]);
    expectError(
      await s.call('POST', '/v1/jobs', { jobs: [{ type: 'deep', payload: deep(200) }] }),
      400,
      'invalid_request',
      `/jobs/0/payload${'/0'.repeat(125)}`,
    );
    expect((await s.call('POST', '/v1/jobs', { jobs: [{ type: 'deep', payload: deep(100) }] })).status).toBe(
      200,
    );
    expectError(await s.call('POST', '/v1/jobs', undefined, { raw: '' }), 400, 'invalid_request');
    expectError(
      await s.call('POST', '/v1/jobs', undefined, { raw: '{"__proto__": {"x": 1}}' }),
      400,
      'invalid_request',
    );
    expectError(
      await s.call('POST', '/v1/jobs', undefined, { raw: '<jobs/>', contentType: 'application/xml' }),
      415,
      'unsupported_media_type',
    );
  });

  it('engine refusals are 400, unknown ids 404, stale tokens 409', async () => {
    const job = (await s.call('POST', '/v1/jobs', { jobs: [{ type: 'p' }] })).body.jobs[0];
    const t = (await s.call('POST', '/v1/worker/claim', { types: ['p'], limit: 1 })).body.tasks[0];
    const bad = await s.call('POST', '/v1/worker/spawn', {
      items: [
        { id: t.id, token: t.token, children: [{ type: 'c', options: { key: 'k', after: ['nobody'] } }] },
      ],
    });
    expect(bad.body.items[0].error.code).toBe('invalid_request');
    expectError(await s.call('GET', `/v1/jobs/${UNKNOWN}`), 404, 'not_found');
    expectError(await s.call('GET', `/v1/jobs/${UNKNOWN}/tasks`), 404, 'not_found');
    expectError(await s.call('GET', `/v1/tasks/${UNKNOWN}`), 404, 'not_found');
    expectError(await s.call('POST', `/v1/jobs/${UNKNOWN}/cancel`, {}), 404, 'not_found');
    expectError(await s.call('POST', `/v1/tasks/${UNKNOWN}/cancel`, {}), 404, 'not_found');
    expectError(
      await s.call('POST', '/v1/worker/progress', { id: UNKNOWN, token: 1, progress: 1 }),
      404,
      'not_found',
    );
    expectError(
      await s.call('POST', '/v1/worker/steps/put', { id: t.id, token: t.token + 5, name: 'n', value: 1 }),
      409,
      'stale_attempt',
    );
    expectError(
      await s.call('POST', '/v1/worker/steps/get', { id: t.id, token: t.token + 5, name: 'n' }),
      409,
      'stale_attempt',
    );
    expectError(await s.call('GET', '/v1/nothing-here'), 404, 'not_found');
    expect((await s.call('GET', `/v1/jobs/${job.jobId}`)).body.state).toBe('running');
  });

  it('query integers are taken only from digits: limit=true is refused, not read as 1', async () => {
    await s.call('POST', '/v1/jobs', { jobs: [{ type: 'q' }] });
    for (const bad of ['true', 'false', '', '1.5', '0x10', ' 1', 'null'])
      expectError(
        await s.call('GET', `/v1/jobs?limit=${encodeURIComponent(bad)}`),
        400,
        'invalid_request',
        '/limit',
      );
    const job = (await s.call('GET', '/v1/jobs?limit=1')).body.jobs[0];
    expectError(await s.call('GET', `/v1/jobs/${job.id}/tasks?limit=true`), 400, 'invalid_request', '/limit');
    expect((await s.call('GET', '/v1/jobs?limit=1')).body.jobs).toHaveLength(1);
    expect((await s.call('GET', `/v1/jobs?limit=1&createdAfter=0`)).status).toBe(200);
    expect((await s.call('GET', `/v1/jobs/${job.id}/tasks?limit=10`)).body.tasks).toHaveLength(1);
  });

  it('a method a route does not list is 405 with Allow, before anything else is looked at', async () => {
    for (const [method, path, allow] of [
      ['TRACE', '/v1/jobs', 'GET, HEAD, POST'],
      ['QUERY', `/v1/jobs/${UNKNOWN}`, 'GET, HEAD'],
      ['DELETE', `/v1/tasks/${UNKNOWN}/retry`, 'POST'],
      ['PUT', '/v1/worker/claim', 'POST'],
      ['TRACE', '/healthz', 'GET, HEAD'],
    ] as const) {
      const r = await rawCall(s.url, method, path);
      expectError(r, 405, 'method_not_allowed');
      expect(r.headers.allow, `${method} ${path}`).toBe(allow);
    }
    // With a body and no content type: the method is refused before the body is looked at.
    expectError(await rawCall(s.url, 'QUERY', '/v1/jobs', '{"jobs": []}'), 405, 'method_not_allowed');
    expectError(await rawCall(s.url, 'TRACE', '/v1/nothing-here'), 404, 'not_found');
  });

  it('bodies over the limit are 413', async () => {
    const big = { jobs: [{ type: 'big', payload: 'x'.repeat(5000) }] };
    expectError(await s.call('POST', '/v1/jobs', big), 413, 'payload_too_large');
  });
});

describe('HTTP API auth', () => {
  it('parses name:scopes:secret lists and refuses bad ones', () => {
    expect(
      parseTokens('ci:operator+viewer:0123456789abcdef, w:worker:s3cret:with:colons!!\n# comment\n'),
    ).toEqual([
      { name: 'ci', scopes: ['operator', 'viewer'], secret: '0123456789abcdef' },
      { name: 'w', scopes: ['worker'], secret: 's3cret:with:colons!!' },
    ]);
    expect(() => parseTokens('x:root:0123456789abcdef')).toThrow(/unknown scope "root"/);
    expect(() => parseTokens('x:worker')).toThrow(/name:scopes:secret/);
    expect(() => parseTokens('x:worker:short')).toThrow(/16 characters/);
  });

  let s: TestServer;
  const secret = (n: string) => `${n}-secret-0123456789`;
  beforeAll(async () => {
    s = await startServer({
      tokens: [
        { name: 'w', scopes: ['worker'], secret: secret('w') },
        { name: 'o', scopes: ['operator'], secret: secret('o') },
        { name: 'v', scopes: ['viewer'], secret: secret('v') },
        { name: 'a', scopes: ['admin'], secret: secret('a') },
      ],
    });
  });
  afterAll(() => s.close());

  it('requires a token with the right scope everywhere but health', async () => {
    expect((await s.call('GET', '/healthz')).status).toBe(200);
    expect((await s.call('GET', '/readyz')).status).toBe(200);
    const body = { jobs: [{ type: 'a' }] };
    expect((await s.call('POST', '/v1/jobs', body)).status).toBe(401);
    expect((await s.call('POST', '/v1/jobs', body, { token: 'nope-nope-nope-nope' })).status).toBe(401);
    expect((await s.call('GET', '/metrics')).status).toBe(401);
    expect((await s.call('GET', '/openapi.json')).status).toBe(401);
    const w = { token: secret('w') };
    const o = { token: secret('o') };
    const v = { token: secret('v') };
    const a = { token: secret('a') };
    const r403 = await s.call('POST', '/v1/jobs', body, w);
    expect(r403.status).toBe(403);
    expect(r403.body.error.code).toBe('forbidden');
    expect((await s.call('POST', '/v1/jobs', body, v)).status).toBe(403);
    const job = (await s.call('POST', '/v1/jobs', body, o)).body.jobs[0];
    expect((await s.call('GET', `/v1/jobs/${job.jobId}`, undefined, v)).status).toBe(200);
    expect((await s.call('GET', `/v1/jobs/${job.jobId}`, undefined, w)).status).toBe(403);
    const claim = { types: ['a'], limit: 1 };
    expect((await s.call('POST', '/v1/worker/claim', claim, o)).status).toBe(403);
    expect((await s.call('POST', '/v1/worker/claim', claim, w)).body.tasks).toHaveLength(1);
    expect((await s.call('GET', '/metrics', undefined, v)).status).toBe(200);
    expect((await s.call('GET', '/openapi.json', undefined, w)).status).toBe(200);
    for (const path of ['/v1/jobs', '/metrics'])
      expect((await s.call('GET', path, undefined, a)).status).toBe(200);
    expect((await s.call('POST', `/v1/jobs/${job.jobId}/cancel`, {}, a)).body).toEqual({ cancelled: true });
  });
});

describe('HTTP server operations', () => {
  it('runs the lease sweeper: a remote worker that stops heartbeating loses its task to another', async () => {
    const s = await startServer({ leaseMs: 200 });
    try {
      await submit(s, 'abandoned', null, { backoffMs: 0 });
      const first = await claimOne(s, 'abandoned', { leaseMs: 100 });
      // No heartbeat: the sweeper fails the attempt, which wakes this long poll with the retry.
      const r = await s.call('POST', '/v1/worker/claim', {
        types: ['abandoned'],
        limit: 1,
        waitMs: 20_000,
        leaseMs: 60_000,
      });
      expect(r.body.tasks).toMatchObject([{ id: first.id, attempt: 2 }]);
      const stale = await s.call('POST', '/v1/worker/report', {
        completed: [{ id: first.id, token: first.token }],
      });
      expect(stale.body.completed).toEqual(['stale']);
      const task = (await s.call('GET', `/v1/tasks/${first.id}`)).body;
      expect(task.attempts).toMatchObject([{ attempt: 1, error: { name: 'LeaseExpired' } }]);
      expect((await s.call('GET', '/metrics')).body).toContain('dynatask_lease_expiries_total 1');
    } finally {
      await s.close();
    }
  });

  it('logs event-stream requests like every other request: when they open and when they end', async () => {
    const lines: Loose[] = [];
    const stream = new Writable({
      write(chunk, _enc, done) {
        for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
        done();
      },
    });
    const s = await startServer({ logger: { level: 'info', stream } });
    try {
      const job = await submit(s, 'logged');
      for (const path of ['/v1/events', `/v1/jobs/${job.jobId}/events?kinds=job`]) {
        const ac = new AbortController();
        const res = await fetch(`${s.url}${path}`, { signal: ac.signal });
        expect(res.status).toBe(200);
        const logged = (msg: string) => lines.find((l) => l.msg === msg && l.url === path);
        expect(await pollUntil(async () => logged('event stream opened'), 'the open logged')).toMatchObject({
          method: 'GET',
          status: 200,
        });
        ac.abort();
        expect(await pollUntil(async () => logged('request'), 'the request logged')).toMatchObject({
          method: 'GET',
          status: 200,
          route: path.startsWith('/v1/events') ? '/v1/events' : '/v1/jobs/:jobId/events',
        });
      }
    } finally {
      await s.close();
    }
  });

  it('a client that hangs up ends its long poll', async () => {
    const s = await startServer();
    try {
      const gone = new AbortController();
      const poll = fetch(`${s.url}/v1/worker/claim`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ types: ['never'], limit: 1, waitMs: 30_000 }),
        signal: gone.signal,
      }).catch((e: Error) => e.name);
      const parked = (n: number) => async () =>
        new RegExp(`dynatask_claim_long_polls ${n}\\b`).test((await s.call('GET', '/metrics')).body);
      while (!(await parked(1)())) {}
      gone.abort();
      expect(await poll).toBe('AbortError');
      while (!(await parked(0)())) {}
    } finally {
      await s.close();
    }
  });

  it('close() answers parked long polls empty; /readyz and other calls are 503 when the store does not answer', async () => {
    const s = await startServer();
    const poll = s.call('POST', '/v1/worker/claim', { types: ['never'], limit: 1, waitMs: 30_000 });
    while (!/dynatask_claim_long_polls 1\b/.test((await s.call('GET', '/metrics')).body)) {}
    const closing = s.server.close();
    expect((await poll).body).toEqual({ tasks: [] });
    await closing;
    await s.close();

    const t = await startServer();
    try {
      await t.dt.store.close();
      const r = await t.call('GET', '/readyz');
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('unavailable');
      // Any call that needs the store: 503, which clients retry, not a 500.
      const q = await t.call('GET', '/v1/jobs');
      expect(q.status).toBe(503);
      expect(q.headers.get('retry-after')).toBe('1');
    } finally {
      await t.server.close();
    }
  });
});
