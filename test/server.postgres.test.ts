/**
 * The HTTP server on PostgreSQL: two servers on one schema (each with its own store, standing
 * in for two processes) serve one set of jobs, with workers spread across them; a long poll on
 * one is woken by a submission through the other (LISTEN/NOTIFY, not its poll); and the fuzz
 * test, since PostgreSQL refuses values SQLite takes (NUL in text, integers beyond int4).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { killServerProcesses, startServerProcess } from './fixtures/cli-server.js';
import { fuzzAgainst } from './fixtures/fuzz.js';
import { fanOutHandlers, type Loose, runWorker, startServer, type TestServer } from './fixtures/http.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
const servers: TestServer[] = [];
afterAll(async () => {
  killServerProcesses();
  for (const s of servers) await s.close();
  await schemas.dropAll();
});

async function serve(database: string, opts: Parameters<typeof startServer>[0] = {}) {
  const s = await startServer({ ...opts, database });
  servers.push(s);
  return s;
}

/** Resolves once a store listens on the schema's channel (its wake-ups can arrive). */
async function listening(schema: string): Promise<void> {
  for (;;) {
    const n = await schemas.withClient(
      async (c) =>
        (
          await c.query(
            `SELECT 1 FROM pg_stat_activity WHERE application_name = 'dynatask listener' AND query LIKE $1`,
            [`LISTEN "dynatask_ready.${schema}"%`],
          )
        ).rowCount,
    );
    if (n) return;
  }
}

describe('HTTP server on PostgreSQL', () => {
  it('two servers on one schema run a job with workers spread across them', async () => {
    const url = schemas.freshUrl('http');
    const a = await serve(url);
    const b = await serve(url);
    const leaves = 150;
    const job = (await a.call('POST', '/v1/jobs', { jobs: [{ type: 'root', payload: { n: leaves } }] })).body
      .jobs[0];
    const settled = async () => (await b.call('GET', `/v1/jobs/${job.jobId}`)).body.state !== 'running';
    const runs = await Promise.all([
      runWorker(a, fanOutHandlers(), settled, { limit: 10 }),
      runWorker(a, fanOutHandlers(), settled, { limit: 10 }),
      runWorker(b, fanOutHandlers(), settled, { limit: 10 }),
      runWorker(b, fanOutHandlers(), settled, { limit: 10 }),
    ]);
    // Both servers did work, and together exactly the job's tasks (the root twice: before and after its wait).
    expect(runs[0]!.ran + runs[1]!.ran).toBeGreaterThan(0);
    expect(runs[2]!.ran + runs[3]!.ran).toBeGreaterThan(0);
    expect(runs.reduce((n, r) => n + r.ran, 0)).toBe(leaves + 2);
    const info = (await a.call('GET', `/v1/jobs/${job.jobId}`)).body;
    expect(info).toMatchObject({
      state: 'succeeded',
      total: leaves + 1,
      result: (leaves * (leaves + 1)) / 2,
    });
    const tasks: Loose[] = [];
    let after: string | null = null;
    do {
      const page: Loose = (
        await b.call('GET', `/v1/jobs/${job.jobId}/tasks?limit=40${after ? `&after=${after}` : ''}`)
      ).body;
      tasks.push(...page.tasks);
      after = page.next;
    } while (after);
    expect(tasks).toHaveLength(leaves + 1);
    expect(tasks.filter((t) => t.attempt !== 1 || t.state !== 'succeeded')).toEqual([]);
  });

  it('two `dynatask server` processes with $DYNATASK_TOKENS serve one job; both drain on SIGTERM', async () => {
    const url = schemas.freshUrl('http');
    const W = 'worker-secret-0123456789';
    const O = 'operator-secret-0123456789';
    const env = { DYNATASK_TOKENS: `w:worker:${W},o:operator+viewer:${O}` };
    const [a, b] = await Promise.all([startServerProcess(url, { env }), startServerProcess(url, { env })]);
    const leaves = 60;
    expect((await a.call('POST', '/v1/jobs', { jobs: [{ type: 'root' }] })).status).toBe(401);
    const job = (
      await a.call('POST', '/v1/jobs', { jobs: [{ type: 'root', payload: { n: leaves } }] }, { token: O })
    ).body.jobs[0];
    const settled = async () =>
      (await b.call('GET', `/v1/jobs/${job.jobId}`, undefined, { token: O })).body.state !== 'running';
    const runs = await Promise.all(
      [a, b, a, b].map((s) => runWorker(s, fanOutHandlers(W), settled, { token: W, limit: 8 })),
    );
    expect(runs.reduce((n, r) => n + r.ran, 0)).toBe(leaves + 2);
    const info = (await a.call('GET', `/v1/jobs/${job.jobId}`, undefined, { token: O })).body;
    expect(info).toMatchObject({
      state: 'succeeded',
      total: leaves + 1,
      result: (leaves * (leaves + 1)) / 2,
    });
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect(await Promise.all([a.exited, b.exited])).toEqual([
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);
  });

  it('a long poll on one server wakes on a submission through the other (NOTIFY, not the poll)', async () => {
    const schema = schemas.fresh('http');
    const url = `${schemas.url}${schemas.url.includes('?') ? '&' : '?'}schema=${schema}`;
    const a = await serve(url, { pollMs: 60_000 });
    const b = await serve(url, { pollMs: 60_000 });
    await listening(schema);
    const poll = b.call('POST', '/v1/worker/claim', { types: ['ping'], limit: 1, waitMs: 30_000 });
    for (;;) if (/dynatask_claim_long_polls 1/.test((await b.call('GET', '/metrics')).body)) break;
    const started = Date.now();
    const job = (await a.call('POST', '/v1/jobs', { jobs: [{ type: 'ping' }] })).body.jobs[0];
    const r = await poll;
    expect(r.body.tasks.map((t: Loose) => t.jobId)).toEqual([job.jobId]);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it('fuzz: no 500 on PostgreSQL either', async () => {
    const s = await serve(schemas.freshUrl('http'), { bodyLimit: 64 * 1024 });
    await fuzzAgainst(s, Number(process.env.FUZZ_REQUESTS ?? 1000), 64 * 1024, 10);
  }, 120_000);
});
