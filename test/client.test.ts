/**
 * The TypeScript client: the same API and handler code in-process and against a dynatask server
 * (`open({ database: 'http://…' })`), with real HTTP and real processes. The server is built with
 * buildServer on a fresh SQLite file; remote workers are child processes
 * (fixtures/remote-worker.ts) where a test needs one.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  ConflictError,
  type Dynatask,
  type DynataskEvent,
  HttpError,
  HttpPort,
  NonRetryableError,
  NotFoundError,
  open,
  StaleAttemptError,
  ValidationError,
} from '../src/index.js';
import { untilState, within } from './conformance/harness.js';
import { ChildHandle } from './fixtures/child.js';
import { startServer, type TestServer } from './fixtures/http.js';
import type { LeafResult, RemoteWorkerConfig } from './fixtures/remote-worker.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WORKER = fileURLToPath(new URL('./fixtures/remote-worker.ts', import.meta.url));
const SERVER = fileURLToPath(new URL('./fixtures/server-process.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'dynatask-client-'));

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function server(opts: { leaseMs?: number } = {}): Promise<TestServer> {
  const s = await startServer(opts);
  cleanups.push(() => s.close());
  return s;
}

/** Opens dynatask in-process on a fresh file, or on a fresh server: the two modes under test. */
async function openIn(mode: 'in-process' | 'remote', leaseMs?: number): Promise<Dynatask> {
  let dt: Dynatask;
  const opts = leaseMs ? { leaseMs } : {};
  if (mode === 'remote') dt = await open({ database: (await server()).url, ...opts });
  else dt = await open({ database: join(dir, `${randomUUID()}.db`), ...opts });
  cleanups.push(() => dt.close());
  return dt;
}

function worker(config: RemoteWorkerConfig): ChildHandle {
  const w = new ChildHandle(WORKER, config, 'remote worker');
  cleanups.push(async () => {
    w.kill();
    await w.exited;
  });
  return w;
}

/**
 * Runs on both modes unchanged: spawns, a durable wait, a step, progress, an ignored failure.
 * The parts run once `release` resolves, so that the test can let them go only after the
 * report suspended (else, on a busy machine, they may all settle before it waits, and it
 * never suspends).
 */
function register(
  dt: Dynatask,
  runs: { report: number; query: number },
  release: Promise<void> = Promise.resolve(),
) {
  dt.handle('report', async (ctx, p) => {
    runs.report++;
    const { parts } = p as { parts: number };
    const base = await ctx.step('query', () => {
      runs.query++;
      return 100;
    });
    await ctx.progress({ phase: 'spawning' });
    const kids = await ctx.spawnMany(
      Array.from(
        { length: parts },
        (_, i) => ({ type: 'part', payload: i }) as { type: string; payload: unknown },
      ),
    );
    const bad = await ctx.spawn('bad', null, { key: 'bad', ignoreFailure: true });
    const settled = await ctx.waitAllSettled([...kids, bad]);
    const sum = settled.reduce((a, o) => a + (o.state === 'succeeded' ? (o.result as number) : 0), 0);
    const badOutcome = settled.at(-1)!;
    return {
      total: base + sum,
      bad: badOutcome.state === 'succeeded' ? null : badOutcome.error.name,
      created: kids.map((k) => k.created),
    };
  });
  dt.handle('part', async (_ctx, i) => {
    await release;
    return (i as number) * 2;
  });
  dt.handle('bad', async () => {
    throw new NonRetryableError('no');
  });
}

describe('the same handlers in-process and against a server', () => {
  const results: Record<string, unknown> = {};

  for (const mode of ['in-process', 'remote'] as const) {
    it(`${mode}: runs a job tree with spawns, a durable wait, steps and progress`, async () => {
      const dt = await openIn(mode);
      const runs = { report: 0, query: 0 };
      let release!: () => void;
      register(dt, runs, new Promise<void>((r) => (release = r)));
      await dt.start();
      const job = await dt.submit('report', { parts: 20 });
      await untilState(dt, job.rootTaskId, 'waiting', 30_000);
      release();
      const result = await within(job.result(), 30_000, 'job');
      // The run that returns found its children spawned by the first run: nothing was created twice.
      expect(result).toEqual({ total: 100 + 380, bad: 'NonRetryableError', created: Array(20).fill(false) });
      // It ran twice: once to spawn and suspend, once after the children settled; the step once.
      expect(runs).toEqual({ report: 2, query: 1 });
      const info = await dt.getJob(job.id);
      expect(info.state).toBe('succeeded');
      expect(info.total).toBe(22);
      const root = await dt.getTask(job.rootTaskId);
      expect(root.progress).toEqual({ phase: 'spawning' });
      expect(root.attempt).toBe(1);
      const page = await dt.tree(job.id, { limit: 10 });
      expect(page.tasks).toHaveLength(10);
      expect(page.next).not.toBeNull();
      const rest = await dt.tree(job.id, { after: page.next!, limit: 100 });
      expect(rest.tasks.map((t) => t.key)).toEqual([
        ...Array.from({ length: 11 }, (_, i) => `#${i + 9}`),
        'bad',
      ]);
      expect((await dt.listJobs({ state: 'succeeded' })).map((j) => j.id)).toEqual([job.id]);
      results[mode] = { result, counts: info.counts };
    });
  }

  it('gives the same results in both modes', () => {
    expect(results.remote).toEqual(results['in-process']);
  });

  for (const mode of ['in-process', 'remote'] as const) {
    it(`${mode}: throws the same error classes`, async () => {
      const dt = await openIn(mode);
      dt.handle('ok', async () => 1);
      dt.handle('badkey', async (ctx) => {
        await ctx.spawn('ok', null, { key: '#mine' });
      });
      await dt.start();
      await expect(dt.getJob(randomUUID())).rejects.toBeInstanceOf(NotFoundError);
      await expect(dt.getTask(randomUUID())).rejects.toBeInstanceOf(NotFoundError);
      await expect(dt.cancelJob(randomUUID())).rejects.toBeInstanceOf(NotFoundError);
      await expect(dt.submit('ok', null, { priority: 1.5 })).rejects.toBeInstanceOf(ValidationError);
      await expect(dt.submit('', null)).rejects.toBeInstanceOf(ValidationError);
      await expect(dt.submit('ok', { n: 1n })).rejects.toThrow(/payload is not JSON-serialisable/);

      const job = await dt.submit('ok', null);
      expect(await job.result()).toBe(1);
      expect(await job.cancel()).toBe(false);
      await expect(dt.retryTask(job.rootTaskId)).rejects.toBeInstanceOf(ConflictError);

      // Bad input to a ctx call fails the task at once, without retries, in both modes.
      const bad = await dt.submit('badkey', null);
      await expect(bad.result()).rejects.toThrow(
        /options\.key must be a non-empty string not starting with '#'/,
      );
      const task = await dt.getTask(bad.rootTaskId);
      expect(task.error?.name).toBe('ValidationError');
      expect(task.attempt).toBe(1);
    });
  }

  for (const mode of ['in-process', 'remote'] as const) {
    it(`${mode}: a subscription made before a submission sees all of its job's events`, async () => {
      const dt = await openIn(mode);
      dt.handle('ok', async () => 1);
      await dt.start();
      const events: DynataskEvent[] = [];
      const unsubscribe = dt.subscribe((e) => events.push(e));
      const job = await dt.submit('ok', null);
      await job.result();
      while (!events.some((e) => e.kind === 'job')) await new Promise((r) => setTimeout(r, 5));
      unsubscribe();
      const seen = events
        .filter((e) => e.jobId === job.id)
        .map((e) => (e.kind === 'task' ? e.state : `job ${e.kind === 'job' ? e.state : ''}`));
      expect(seen).toEqual(['queued', 'running', 'succeeded', 'job succeeded']);
    });
  }

  for (const mode of ['in-process', 'remote'] as const) {
    it(`${mode}: retries a failed task, cancels a running one, delivers events`, async () => {
      const dt = await openIn(mode);
      let fail = true;
      dt.handle('flaky', async () => {
        if (fail) throw new NonRetryableError('first time');
        return 'second time';
      });
      dt.handle('forever', async (ctx) => {
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
        return 'aborted';
      });
      await dt.start();
      const events: DynataskEvent[] = [];
      const job = await dt.submit('flaky', null);
      const unsubscribe = dt.subscribe((e) => events.push(e), job.id);
      await expect(job.result()).rejects.toThrow(/first time/);
      fail = false;
      await dt.retryTask(job.rootTaskId);
      expect(await within(job.result(), 10_000, 'retried job')).toBe('second time');
      const settled = await within(
        (async () => {
          while (!events.some((e) => e.kind === 'job' && e.state === 'succeeded'))
            await new Promise((r) => setTimeout(r, 10));
        })(),
        10_000,
        'the job event',
      );
      expect(settled).toBeUndefined();
      unsubscribe();

      const long = await dt.submit('forever', null);
      while ((await dt.getTask(long.rootTaskId)).state !== 'running')
        await new Promise((r) => setTimeout(r, 10));
      expect(await dt.cancelJob(long.id, 'enough')).toBe(true);
      await expect(long.result()).rejects.toThrow(/cancelled: enough/);
    });
  }
});

describe('remote specifics', () => {
  it('maps a stale attempt token to StaleAttemptError and an unreachable server to HttpError', async () => {
    const s = await server();
    const port = new HttpPort({ url: s.url });
    cleanups.push(() => port.close());
    const [job] = await port.submit([{ type: 'manual', options: { namespace: 'default' } }]);
    const [claimed] = await port.claim({
      namespace: 'default',
      types: ['manual'],
      limit: 1,
      leaseMs: 30_000,
    });
    expect(claimed!.jobId).toBe(job!.jobId);
    const stale = { id: claimed!.id, token: claimed!.token + 1 };
    await expect(port.progress(stale, 1)).rejects.toBeInstanceOf(StaleAttemptError);
    await expect(port.spawn(stale, [{ type: 'x' }], ['#0'])).rejects.toBeInstanceOf(StaleAttemptError);
    expect(await port.heartbeat([stale], 1000)).toEqual(['lost']);
    // A completion sent twice (a lost answer) is recorded once and answers ok both times.
    const done = { id: claimed!.id, token: claimed!.token, result: 'r' };
    expect((await port.report([done], [])).completed).toEqual([true]);
    expect((await port.report([done], [])).completed).toEqual([true]);

    const nowhere = new HttpPort({ url: 'http://127.0.0.1:9', retryForMs: 200 });
    cleanups.push(() => nowhere.close());
    const err = await nowhere.getJob(randomUUID()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).code).toBe('unreachable');
  });

  it('open() on a URL where no server listens fails within a few seconds, naming the URL', async () => {
    // A port that was just free: nothing listens there.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as AddressInfo;
    await new Promise((r) => probe.close(r));
    const url = `http://127.0.0.1:${port}`;
    const t0 = Date.now();
    const err = await within(
      open({ database: url }).then(
        async (dt) => {
          await dt.close();
          return 'opened';
        },
        (e: unknown) => e,
      ),
      10_000,
      'open() to fail',
    );
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).message).toContain(url);
    expect((err as HttpError).code).toBe('unreachable');
    expect(Date.now() - t0).toBeLessThan(8000);
  });

  it('submits idempotently: a repeated submission with the same job id returns the job', async () => {
    const s = await server();
    const dt = await open({ database: s.url });
    cleanups.push(() => dt.close());
    const jobId = '0190f5c2-7b1e-7cc0-8f3e-1d2b3c4d5e6f';
    const [a] = await dt.submitMany([{ type: 't', payload: 1, options: { jobId } }]);
    const [b] = await dt.submitMany([{ type: 't', payload: 2, options: { jobId } }]);
    expect(b!.id).toBe(a!.id);
    expect(b!.rootTaskId).toBe(a!.rootTaskId);
    expect((await dt.getTask(a!.rootTaskId)).payload).toBe(1);
  });

  it('splits spawns and reports that exceed the server limits; a result it cannot take fails its task', async () => {
    const s = await server();
    const dt = await open({ database: s.url });
    cleanups.push(() => dt.close());
    const pad = 'x'.repeat(150);
    dt.handle('many', async (ctx) => {
      // 6,000 children of about 200 bytes: more than one request may carry (5,000; 512 KiB).
      const kids = await ctx.spawnMany(
        Array.from({ length: 6000 }, (_, n) => ({ type: 'echo', payload: { n, pad } })),
      );
      const out = await ctx.waitAll<{ n: number }>(kids);
      return out.reduce((a, r) => a + r.n, 0);
    });
    dt.handle('echo', async (_ctx, p) => p);
    dt.handle('big', async (_ctx, kb) => 'y'.repeat((kb as number) * 1024));
    dt.handle('bigint', async () => 10n);
    await dt.start();
    const many = await dt.submit('many', null);
    expect(await within(many.result(), 60_000, 'the big fan-out')).toBe((5999 * 6000) / 2);
    // Two results of 600 KiB finishing together: one request each.
    const two = await dt.submitMany([
      { type: 'big', payload: 600 },
      { type: 'big', payload: 600 },
    ]);
    for (const j of two) expect(((await j.result()) as string).length).toBe(600 * 1024);
    const huge = await dt.submit('big', 2048);
    await expect(huge.result()).rejects.toThrow(/larger than the server accepts/);
    expect((await dt.getTask(huge.rootTaskId)).error).toMatchObject({
      name: 'ResultTooLarge',
      retryable: false,
    });
    const bigint = await dt.submit('bigint', null);
    await expect(bigint.result()).rejects.toThrow(/not JSON-serialisable/);
    expect((await dt.getTask(bigint.rootTaskId)).attempt).toBe(1);
  });

  it('reports which types a remote worker serves, and refuses what only in-process can do', async () => {
    const s = await server();
    const dt = await open({ database: s.url });
    cleanups.push(() => dt.close());
    dt.handle('served', async () => null);
    await dt.start();
    const other = await open({ database: s.url });
    cleanups.push(() => other.close());
    await other.submitMany([
      { type: 'unserved', payload: null },
      { type: 'unserved', payload: null },
    ]);
    expect(await other.queuedTypes()).toEqual([{ type: 'unserved', queued: 2, served: false }]);
    expect(() => dt.engine).toThrow(ValidationError);
    await expect(dt.purge({ olderThanMs: 0 })).rejects.toBeInstanceOf(ValidationError);
  });

  it('a remote worker process serves some types while an in-process worker serves the others', async () => {
    const s = await server();
    // The server's own instance serves `root` in-process; the child process serves `leaf`.
    const w = worker({ url: s.url, types: ['leaf'] });
    await w.next('ready');
    s.dt.handle('root', async (ctx, p) => {
      const { leaves } = p as { leaves: number };
      const kids = await ctx.spawnMany(
        Array.from({ length: leaves }, (_, n) => ({ type: 'leaf', payload: { n } })),
      );
      const results = await ctx.waitAll<LeafResult>(kids);
      return { sum: results.reduce((a, r) => a + r.n, 0), pids: [...new Set(results.map((r) => r.pid))] };
    });
    await s.dt.start();
    const job = await s.dt.submit('root', { leaves: 300 });
    const result = await within(job.result(), 30_000, 'mixed job');
    expect(result).toEqual({ sum: 299 * 300, pids: [w.pid] });
    const tasks = (await s.dt.tree(job.id, { limit: 1000 })).tasks;
    expect(tasks.filter((t) => t.type === 'leaf' && t.state === 'succeeded' && t.attempt === 1)).toHaveLength(
      300,
    );
  });

  it('a remote worker killed with SIGKILL mid-task: its leases expire and another worker finishes the job', async () => {
    const s = await server({ leaseMs: 1000 });
    const doomed = worker({ url: s.url, types: ['slow'], leaseMs: 1000, hang: true });
    await doomed.next('ready');
    s.dt.handle('fan', async (ctx) => {
      const kids = await ctx.spawnMany(
        Array.from({ length: 4 }, (_, n) => ({ type: 'slow', payload: { n } })),
      );
      return (await ctx.waitAll<LeafResult>(kids)).map((r) => r.pid);
    });
    await s.dt.start();
    const job = await s.dt.submit('fan', null);
    const { taskId } = await doomed.next<{ type: string; taskId: string }>('hung');
    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    const rescuer = worker({ url: s.url, types: ['slow'], leaseMs: 1000 });
    await rescuer.next('ready');
    const pids = (await within(job.result(), 30_000, 'job after the kill')) as number[];
    expect(pids).toEqual([rescuer.pid, rescuer.pid, rescuer.pid, rescuer.pid]);
    const hung = await s.dt.getTask(taskId);
    expect(hung.state).toBe('succeeded');
    expect(hung.attempts?.map((a) => a.error.name)).toEqual(['LeaseExpired']);
  });

  it("a remote worker that sets no lease holds its tasks for the server's --lease-ms, so a killed one's are retried after it", async () => {
    const s = await server({ leaseMs: 1000 });
    // Neither worker chooses a lease: the server's 1 s applies, not a 30 s client default.
    const doomed = worker({ url: s.url, types: ['slow'], hang: true });
    await doomed.next('ready');
    const job = await s.dt.submit('slow', { n: 1 });
    await doomed.next('hung');
    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    const rescuer = worker({ url: s.url, types: ['slow'] });
    await rescuer.next('ready');
    expect(await within(job.result(), 10_000, 'the job a few leases of 1 s after the kill')).toEqual({
      n: 1,
      pid: rescuer.pid,
    });
    const t = await s.dt.getTask(job.rootTaskId);
    expect(t.attempts?.map((a) => a.error.name)).toEqual(['LeaseExpired']);
    // The first attempt's lease was the server's: it ran out about 1 s after its last renewal.
    const lost = t.attempts![0]!;
    expect(lost.finishedAt - lost.startedAt).toBeLessThan(10_000);
  });

  it('a remote worker stopped with stop() finishes what it runs and leaves nothing claimed', async () => {
    const s = await server();
    const dt = await open({ database: s.url });
    cleanups.push(() => dt.close());
    dt.handle('quick', async () => 'done');
    await dt.start();
    const jobs = await dt.submitMany(Array.from({ length: 50 }, () => ({ type: 'quick', payload: null })));
    for (const j of jobs) expect(await within(j.result(), 10_000, 'quick job')).toBe('done');
    // Idle now: the worker is in a long-poll, which stop ends at once by hanging up.
    const longPolls = async () =>
      Number(/^dynatask_claim_long_polls (\d+)$/m.exec((await s.call('GET', '/metrics')).body)![1]);
    expect(await longPolls()).toBe(1);
    const t0 = Date.now();
    await dt.stop();
    expect(Date.now() - t0).toBeLessThan(2000);
    // The server sees the hang-up a moment later (work arriving in between would be claimed
    // for nobody, and retried once its lease expires, as after a crash).
    while ((await longPolls()) > 0) await new Promise((r) => setTimeout(r, 5));
    const late = await dt.submit('quick', null);
    await new Promise((r) => setTimeout(r, 200));
    const t = await dt.getTask(late.rootTaskId);
    expect(t.state, JSON.stringify(t)).toBe('queued');
  });
});

describe('remote workers through failures of the server', () => {
  it('sends the token, and a missing or wrong token is an HttpError 401', async () => {
    const s = await startServer({
      tokens: [
        { name: 'w', scopes: ['worker', 'operator', 'viewer'], secret: 'sesame' },
        { name: 'v', scopes: ['viewer'], secret: 'look' },
      ],
    });
    cleanups.push(() => s.close());
    const dt = await open({ database: s.url, token: 'sesame' });
    cleanups.push(() => dt.close());
    dt.handle('t', async () => 'ok');
    await dt.start();
    expect(await (await dt.submit('t', null)).result()).toBe('ok');
    for (const token of [undefined, 'wrong']) {
      const other = await open({ database: s.url, ...(token ? { token } : {}) });
      cleanups.push(() => other.close());
      const err = await other.listJobs().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HttpError);
      expect((err as HttpError).status).toBe(401);
    }
    const viewer = await open({ database: s.url, token: 'look' });
    cleanups.push(() => viewer.close());
    expect(await viewer.listJobs()).toHaveLength(1);
    await expect(viewer.submit('t', null)).rejects.toMatchObject({ status: 403, code: 'forbidden' });
  });

  it('a remote worker rides out a server killed with SIGKILL and restarted: the job completes, nothing twice', async () => {
    const database = join(dir, `${randomUUID()}.db`);
    const start = async (port?: number) => {
      const p = new ChildHandle(SERVER, { database, ...(port ? { port } : {}) }, 'server');
      cleanups.push(async () => {
        p.kill();
        await p.exited;
      });
      return { p, url: (await p.next<{ type: string; url: string }>('listening')).url };
    };
    const first = await start();
    const port = Number(new URL(first.url).port);
    const w = worker({ url: first.url, types: ['root', 'leaf'], concurrency: 16 });
    await w.next('ready');
    const dt = await open({ database: first.url });
    cleanups.push(() => dt.close());
    const job = await dt.submit('root', { leaves: 3000 });
    // Kill it once the job is under way, then start it again on the same file and port.
    while ((await dt.getJob(job.id)).counts.succeeded < 200) await new Promise((r) => setTimeout(r, 20));
    first.p.kill('SIGKILL');
    await first.p.exited;
    await start(port);
    const result = (await within(job.result(), 60_000, 'the job after the restart')) as { sum: number };
    expect(result.sum).toBe(2999 * 3000);
    const info = await dt.getJob(job.id);
    expect(info.counts.succeeded).toBe(3001);
    // Leaves in flight when the server died are still held by the worker: no attempt was lost.
    const tasks = (await dt.tree(job.id, { limit: 10_000 })).tasks;
    expect(tasks.filter((t) => t.attempt !== 1)).toEqual([]);
  });
});

/**
 * A proxy in front of a server that, for the first request to each of `paths`, forwards it,
 * lets the server answer, and then cuts the connection instead of passing the answer on: the
 * request took effect and its answer was lost.
 */
async function lossyProxy(target: string, paths: string[]) {
  const cut = new Set<string>();
  const proxy = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = req.url!.split('?')[0]!;
    const answer = await fetch(target + req.url, {
      method: req.method!,
      headers: {
        'content-type': 'application/json',
        ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      },
      ...(chunks.length ? { body: Buffer.concat(chunks) } : {}),
    });
    const body = Buffer.from(await answer.arrayBuffer());
    if (paths.includes(path) && !cut.has(path)) {
      cut.add(path);
      req.socket.destroy();
      return;
    }
    res.writeHead(answer.status, {
      'content-type': answer.headers.get('content-type') ?? 'application/json',
    });
    res.end(body);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => proxy.close(() => r())));
  proxy.closeIdleConnections();
  return { url: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`, cut };
}

describe('answers lost after the server acted', () => {
  it('submit, claim, spawn, wait, step, progress and report are each repeated, and take effect once', async () => {
    const s = await server();
    const paths = [
      '/v1/jobs',
      '/v1/worker/claim',
      '/v1/worker/spawn',
      '/v1/worker/wait',
      '/v1/worker/steps/put',
      '/v1/worker/progress',
      '/v1/worker/report',
    ];
    const proxy = await lossyProxy(s.url, paths);
    const dt = await open({ database: proxy.url });
    cleanups.push(() => dt.close());
    let steps = 0;
    let runs = 0;
    const seen: string[] = [];
    dt.handle('parent', async (ctx) => {
      runs++;
      const n = await ctx.step('once', () => ++steps);
      await ctx.progress('half');
      const kids = await ctx.spawnMany([1, 2, 3].map((i) => ({ type: 'kid', payload: i })));
      const got = await ctx.waitAll<number>(kids).catch((e: Error) => {
        seen.push(e.name); // SuspendSignal, and nothing else: a repeated wait that suspended is not stale
        throw e;
      });
      return { n, sum: got.reduce((a, b) => a + b, 0) };
    });
    // Slow enough that the parent's first wait suspends it (the repeat then finds it waiting).
    dt.handle('kid', async (_ctx, i) => {
      await new Promise((r) => setTimeout(r, 200));
      return (i as number) * 10;
    });
    // Submitted first, so that the first claim (whose answer is cut) carries the parent.
    const job = await dt.submit('parent', null);
    await dt.start();
    expect(await within(job.result(), 20_000, 'the job')).toEqual({ n: 1, sum: 60 });
    // Every kind of call lost an answer once, and was repeated.
    expect([...proxy.cut].sort()).toEqual([...paths].sort());
    // One job, three children, one step execution: nothing happened twice.
    expect(await s.dt.listJobs()).toHaveLength(1);
    const tasks = (await s.dt.tree(job.id)).tasks;
    expect(tasks.map((t) => [t.type, t.state, t.attempt])).toEqual([
      ['parent', 'succeeded', 1],
      ['kid', 'succeeded', 1],
      ['kid', 'succeeded', 1],
      ['kid', 'succeeded', 1],
    ]);
    expect(steps).toBe(1);
    expect(runs).toBe(2);
    expect(seen).toEqual(['SuspendSignal']);
    expect((await s.dt.getTask(job.rootTaskId)).progress).toBe('half');
  });
});

describe('an operator call whose answer is lost', () => {
  it('retryTask repeated after a lost answer is answered as done, and retries once', async () => {
    const s = await server();
    let calls = 0;
    s.dt.handle('flaky', async () => {
      if (++calls === 1) throw new NonRetryableError('first time');
      return 'second time';
    });
    await s.dt.start();
    const job = await s.dt.submit('flaky', null);
    await expect(job.result()).rejects.toThrow(/first time/);
    const path = `/v1/tasks/${job.rootTaskId}/retry`;
    const proxy = await lossyProxy(s.url, [path]);
    const operator = await open({ database: proxy.url });
    cleanups.push(() => operator.close());
    await operator.retryTask(job.rootTaskId);
    expect([...proxy.cut]).toEqual([path]);
    expect(await within(job.result(), 10_000, 'the retried job')).toBe('second time');
    expect(calls).toBe(2);
    expect(await s.dt.getTask(job.rootTaskId)).toMatchObject({ state: 'succeeded', attempt: 2 });
    // Another retry of the task, which has not failed again, is still refused.
    await expect(operator.retryTask(job.rootTaskId)).rejects.toBeInstanceOf(ConflictError);
  });
});

describe('the examples, unchanged, against a server', () => {
  /** Runs examples/<name>.ts as its own process with DYNATASK_DATABASE_URL set; returns its stdout. */
  async function run(name: string, database: string): Promise<string> {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', join(ROOT, 'examples', `${name}.ts`)],
      { cwd: ROOT, env: { ...process.env, DYNATASK_DATABASE_URL: database }, timeout: 60_000 },
    );
    return stdout;
  }

  it('quickstart prints the same result in-process and remotely', async () => {
    const s = await server();
    const local = await run('quickstart', join(dir, 'quickstart.db'));
    const remote = await run('quickstart', s.url);
    expect(remote.trim()).toBe('{ rows: 4, invalid: 1 }');
    expect(remote).toBe(local);
  });

  it('crawler, ci-pipeline and render give their results remotely', async () => {
    const s = await server();
    const crawler = (await run('crawler', s.url)).split('\n');
    expect(crawler[0]).toBe('pages found: 9');
    expect(crawler).toContain('fetches: 10 (repeated: 0)');
    const ci = await run('ci-pipeline', s.url);
    expect(ci).toMatch(/^pipeline a1b2c3d: passed$/m);
    expect(ci).toMatch(/^pipeline e4f5a6b: failed$/m);
    expect(ci).toMatch(/deploy +skipped +DependencyFailed/);
    const render = await run('render', s.url);
    expect(render).toContain('rendered frames: 0 1 2 3 4 5 6 7');
    // Each frame rendered once (its step); its handler ran twice unless its child had already
    // settled when it waited, which a remote worker's long poll makes more likely.
    const runs = Number(/^renders: 8, frame handler runs: (\d+)$/m.exec(render)?.[1]);
    expect(runs).toBeGreaterThanOrEqual(8);
    expect(runs).toBeLessThanOrEqual(16);
    // Progress events reached the example through the server's event stream.
    expect(render).toMatch(/frame \d done \(\d\/8\)/);
  });
});
