/**
 * The TypeScript client on PostgreSQL: two dynatask server processes on one schema behave as
 * one, with remote worker processes spread across them (fixtures/server-process.ts and
 * fixtures/remote-worker.ts), and a remote worker killed on one server is recovered through
 * the other.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { type Dynatask, open } from '../src/index.js';
import { within } from './conformance/harness.js';
import { ChildHandle } from './fixtures/child.js';
import type { LeafResult, RemoteWorkerConfig } from './fixtures/remote-worker.js';
import type { ServerProcessConfig } from './fixtures/server-process.js';
import { Schemas } from './postgres/server.js';

const SERVER = fileURLToPath(new URL('./fixtures/server-process.ts', import.meta.url));
const WORKER = fileURLToPath(new URL('./fixtures/remote-worker.ts', import.meta.url));
const schemas = new Schemas();

const children: ChildHandle[] = [];
const instances: Dynatask[] = [];
afterEach(async () => {
  for (const dt of instances.splice(0)) await dt.close();
  for (const c of children.splice(0).reverse()) {
    c.kill();
    await c.exited;
  }
});
afterAll(() => schemas.dropAll());

async function serverProcess(config: ServerProcessConfig): Promise<string> {
  const s = new ChildHandle(SERVER, config, 'server');
  children.push(s);
  return (await s.next<{ type: string; url: string }>('listening')).url;
}

async function workerProcess(config: RemoteWorkerConfig): Promise<ChildHandle> {
  const w = new ChildHandle(WORKER, config, 'remote worker');
  children.push(w);
  await w.next('ready');
  return w;
}

async function client(url: string): Promise<Dynatask> {
  const dt = await open({ database: url });
  instances.push(dt);
  return dt;
}

describe('remote workers on two servers sharing one PostgreSQL schema', () => {
  it('run one job together: every leaf once, by workers of both servers', async () => {
    const database = schemas.freshUrl('client');
    const [a, b] = await Promise.all([serverProcess({ database }), serverProcess({ database })]);
    // Small concurrencies, so neither worker can take every leaf on its own.
    const wa = await workerProcess({ url: a!, types: ['root', 'leaf'], concurrency: 8 });
    const wb = await workerProcess({ url: b!, types: ['leaf'], concurrency: 8 });
    const dt = await client(b!);
    const leaves = 2000;
    const job = await dt.submit('root', { leaves });
    const result = (await within(job.result(), 60_000, 'the job')) as {
      sum: number;
      pids: number[];
      rootPid: number;
    };
    expect(result.sum).toBe(leaves * (leaves - 1));
    expect(result.rootPid).toBe(wa.pid);
    expect(result.pids).toEqual([wa.pid, wb.pid].sort());
    const info = await dt.getJob(job.id);
    expect(info.total).toBe(leaves + 1);
    expect(info.counts.succeeded).toBe(leaves + 1);
    // Nothing ran twice: every task succeeded on its first attempt.
    const other = await client(a!);
    let after: string | undefined;
    let tasks = 0;
    do {
      const page = await other.tree(job.id, { limit: 500, ...(after ? { after } : {}) });
      for (const t of page.tasks) expect([t.state, t.attempt]).toEqual(['succeeded', 1]);
      tasks += page.tasks.length;
      after = page.next ?? undefined;
    } while (after);
    expect(tasks).toBe(leaves + 1);
  });

  it("a worker killed with SIGKILL on one server: the other server's worker finishes its tasks", async () => {
    const database = schemas.freshUrl('client');
    const [a, b] = await Promise.all([
      serverProcess({ database, leaseMs: 1000 }),
      serverProcess({ database, leaseMs: 1000 }),
    ]);
    const doomed = await workerProcess({ url: b!, types: ['slow'], leaseMs: 1000, hang: true });
    const dt = await client(a!);
    const jobs = await dt.submitMany(Array.from({ length: 3 }, (_, n) => ({ type: 'slow', payload: { n } })));
    const { taskId } = await doomed.next<{ type: string; taskId: string }>('hung');
    doomed.kill('SIGKILL');
    await doomed.exited;
    const rescuer = await workerProcess({ url: a!, types: ['slow'], leaseMs: 1000 });
    for (const j of jobs)
      expect(((await within(j.result(), 30_000, 'a slow job')) as LeafResult).pid).toBe(rescuer.pid);
    const hung = await dt.getTask(taskId);
    expect(hung.attempts?.map((x) => x.error.name)).toEqual(['LeaseExpired']);
  });
});
