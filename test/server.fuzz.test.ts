/**
 * Bad input never hurts: thousands of random and malformed requests to every route, sent while
 * a guarded job runs through the same server. No answer may be a 500 or lack the error shape,
 * the server must still answer correctly afterwards, and the guarded job must finish with
 * exact counts (every task succeeded at its first attempt, the result exact).
 */
import fc from 'fast-check';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type FuzzRequest, fuzzRequest } from './fixtures/fuzz.js';
import { fanOutHandlers, type Loose, runWorker, startServer, type TestServer } from './fixtures/http.js';

const RUNS = Number(process.env.FUZZ_REQUESTS ?? 3000);
const BODY_LIMIT = 64 * 1024;
const LEAVES = 40;

let s: TestServer;
beforeAll(async () => {
  s = await startServer({ bodyLimit: BODY_LIMIT });
});
afterAll(() => s.close());

/** Sends one fuzz request; returns its status, or a description of what was wrong with the answer. */
async function send(r: FuzzRequest): Promise<{ status: number; problem?: string }> {
  const headers: Record<string, string> = {};
  if (r.contentType !== undefined) headers['content-type'] = r.contentType;
  let res: Response;
  try {
    res = await fetch(s.url + r.path, {
      method: r.method,
      headers,
      ...(r.body !== undefined ? { body: r.body } : {}),
    });
  } catch (e) {
    return { status: 0, problem: `no answer: ${(e as Error).message}` };
  }
  if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    await res.body?.cancel();
    return { status: res.status };
  }
  const text = await res.text();
  if (res.status >= 500) return { status: res.status, problem: `${res.status}: ${text}` };
  if (res.status >= 400) {
    let body: Loose;
    try {
      body = JSON.parse(text);
    } catch {
      return { status: res.status, problem: `error answer is not JSON: ${text.slice(0, 200)}` };
    }
    if (typeof body?.error?.code !== 'string' || typeof body.error.message !== 'string')
      return {
        status: res.status,
        problem: `error answer lacks {error: {code, message}}: ${text.slice(0, 200)}`,
      };
  }
  return { status: res.status };
}

it(`${RUNS} random and malformed requests: no 500, the server still answers, a job alongside is undisturbed`, async () => {
  // The guarded job: a root that spawns LEAVES children and sums their results, worked in its
  // own namespace by a worker that runs all along.
  const ns = 'guarded';
  const sub = await s.call('POST', '/v1/jobs', {
    jobs: [{ type: 'root', payload: { n: LEAVES }, options: { namespace: ns } }],
  });
  const job = sub.body.jobs[0];
  let fuzzing = true;
  let abandoned = false;
  const worker = runWorker(
    s,
    fanOutHandlers(),
    async () =>
      abandoned || (!fuzzing && (await s.call('GET', `/v1/jobs/${job.jobId}`)).body.state !== 'running'),
    { namespace: ns, limit: 4 },
  );
  worker.catch(() => {}); // awaited below; a failure before that must not go unhandled
  try {
    // Real ids (the job's and its tasks', as the worker spawns them) appear in fuzz requests.
    const realIds = async () => {
      const tree = await s.call('GET', `/v1/jobs/${job.jobId}/tasks`);
      return [job.jobId, ...tree.body.tasks.map((t: Loose) => t.id)];
    };
    const statuses = new Map<number, number>();
    const problems: string[] = [];
    const batches = 10;
    for (let b = 0; b < batches; b++) {
      const requests = fc.sample(fuzzRequest(await realIds(), BODY_LIMIT), {
        numRuns: RUNS / batches,
        seed: 42 + b,
      });
      // Eight at a time: concurrent bad input against the same rows as the worker's calls.
      for (let i = 0; i < requests.length; i += 8) {
        const answers = await Promise.all(requests.slice(i, i + 8).map(send));
        answers.forEach((a, j) => {
          statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
          if (a.problem) problems.push(`${JSON.stringify(requests[i + j]).slice(0, 300)} -> ${a.problem}`);
        });
      }
    }
    fuzzing = false;
    expect(problems.slice(0, 5)).toEqual([]);
    // The fuzz reached past validation too, not only the schema check.
    expect(statuses.get(400)).toBeGreaterThan(RUNS / 10);
    expect((statuses.get(200) ?? 0) + (statuses.get(404) ?? 0)).toBeGreaterThan(RUNS / 20);
    expect(statuses.get(413)).toBeGreaterThan(0);

    // The server still answers, and correctly.
    expect((await s.call('GET', '/healthz')).status).toBe(200);
    expect((await s.call('GET', '/readyz')).status).toBe(200);
    await worker;
    const info = (await s.call('GET', `/v1/jobs/${job.jobId}`)).body;
    expect(info).toMatchObject({
      state: 'succeeded',
      result: (LEAVES * (LEAVES + 1)) / 2,
      total: LEAVES + 1,
    });
    expect(info.counts.succeeded).toBe(LEAVES + 1);
    const tree = (await s.call('GET', `/v1/jobs/${job.jobId}/tasks`)).body.tasks;
    expect(tree.filter((t: Loose) => t.attempt !== 1).map((t: Loose) => [t.type, t.attempt])).toEqual([]);
    const metrics = (await s.call('GET', '/metrics')).body as string;
    expect(metrics).not.toMatch(/status="5\d\d"/);
  } finally {
    abandoned = true;
    await worker.catch(() => {});
  }
}, 120_000);
