/**
 * Benchmark workloads. Each runs in a fresh process (see run.ts) on a fresh database and
 * returns its figures; handlers are no-ops so the figures measure dynatask itself.
 */
import { type Dynatask, open } from '../src/index.js';

export interface Figures {
  tasks: number;
  seconds: number;
  /** Per-task enqueue-to-start latency samples, ms. */
  latencies: number[];
  extra?: Record<string, number>;
}

/** `database` is where `dt` runs, for workloads that open a second instance on it. */
type Workload = (dt: Dynatask, size: number, database?: string) => Promise<Figures>;

/** Latency of each task: from its creation to its handler starting. */
function recordStart(latencies: number[], createdAt: number) {
  latencies.push(Date.now() - createdAt);
}

/** Polls every 5 ms until no job is running (as the peer benchmarks do). */
async function settleAll(dt: Dynatask) {
  while ((await dt.listJobs({ state: 'running', limit: 1 })).length > 0)
    await new Promise((r) => setTimeout(r, 5));
}

/** N independent jobs of one task each: bulk enqueue, then process. */
const flat: Workload = async (dt, n) => {
  const latencies: number[] = [];
  dt.handle('noop', async (ctx) => {
    recordStart(latencies, (ctx.task.payload as { t: number }).t);
    return null;
  });
  const t0 = performance.now();
  const now = Date.now();
  for (let i = 0; i < n; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - i) }, () => ({
      type: 'noop',
      payload: { t: now },
    }));
    await dt.submitMany(batch);
  }
  const enqueueS = (performance.now() - t0) / 1000;
  latencies.length = 0;
  const t1 = performance.now();
  await dt.start();
  await settleAll(dt);
  const seconds = (performance.now() - t1) / 1000;
  return { tasks: n, seconds, latencies, extra: { enqueue_s: enqueueS, enqueue_per_s: n / enqueueS } };
};

/** One parent spawns N children and waits for all of them. Timed from submit to job settled. */
const fanout: Workload = async (dt, n) => {
  dt.handle('parent', async (ctx, count) => {
    const kids = await ctx.spawnMany(
      Array.from({ length: count as number }, () => ({ type: 'child', payload: null })),
    );
    await ctx.waitAll(kids);
    return count;
  });
  dt.handle('child', async () => null);
  await dt.start();
  const t0 = performance.now();
  const job = await dt.submit('parent', n);
  await job.result();
  const seconds = (performance.now() - t0) / 1000;
  return { tasks: n + 1, seconds, latencies: await startLatencies(dt, job.id) };
};

/** Fan-out `width` at each of `depth` levels below the root; every parent waits for its children. */
const tree: Workload = async (dt, depth) => {
  const width = 10;
  dt.handle('node', async (ctx, level) => {
    if ((level as number) >= depth) return 1;
    const kids = await ctx.spawnMany(
      Array.from({ length: width }, () => ({ type: 'node', payload: (level as number) + 1 })),
    );
    const counts = await ctx.waitAll<number>(kids);
    return counts.reduce((a, b) => a + b, 1);
  });
  await dt.start();
  const t0 = performance.now();
  const job = await dt.submit('node', 0);
  const total = (await job.result()) as number;
  const seconds = (performance.now() - t0) / 1000;
  return { tasks: total, seconds, latencies: await startLatencies(dt, job.id) };
};

/** A chain of `depth` tasks, each spawning the next and waiting for it. */
const chain: Workload = async (dt, depth) => {
  dt.handle('link', async (ctx, i) => {
    if ((i as number) >= depth - 1) return 1;
    const [next] = await ctx.spawnMany([{ type: 'link', payload: (i as number) + 1 }]);
    const [n] = await ctx.waitAll<number>([next!]);
    return n! + 1;
  });
  await dt.start();
  const t0 = performance.now();
  const job = await dt.submit('link', 0);
  const total = (await job.result()) as number;
  const seconds = (performance.now() - t0) / 1000;
  return { tasks: total, seconds, latencies: await startLatencies(dt, job.id) };
};

/**
 * Growth: one job of about `n` tasks, the root spawning chunks of 1,000 (one per thousand
 * tasks) that each spawn their leaves, every parent waiting for its children. Timed from
 * submit to the job's settling; the time per task, from 1k to 1M, shows what a job's size
 * costs each of its tasks (`npm run bench -- --growth`).
 */
const grow: Workload = async (dt, n) => {
  const chunks = Math.max(1, Math.round(n / 1000));
  const leaves = Math.max(1, Math.floor((n - 1 - chunks) / chunks));
  dt.handle('grow_root', async (ctx) => {
    const kids = await ctx.spawnMany(
      Array.from({ length: chunks }, () => ({ type: 'grow_chunk', payload: leaves })),
    );
    const counts = await ctx.waitAll<number>(kids);
    return counts.reduce((a, b) => a + b, 1);
  });
  dt.handle('grow_chunk', async (ctx, count) => {
    const kids = await ctx.spawnMany(
      Array.from({ length: count as number }, () => ({ type: 'grow_leaf', payload: null })),
    );
    await ctx.waitAll(kids);
    return (count as number) + 1;
  });
  dt.handle('grow_leaf', async () => null);
  await dt.start();
  const t0 = performance.now();
  const job = await dt.submit('grow_root', null);
  const total = (await job.result()) as number;
  const seconds = (performance.now() - t0) / 1000;
  return { tasks: total, seconds, latencies: [] };
};

/**
 * Idle worker, single submissions 5 ms apart: submit call start to handler start. On a store
 * that wakes other processes' workers (Postgres), also from a second instance on its own
 * connections, as another process would submit (`remote_p50_ms`, `remote_p99_ms`).
 */
const latency: Workload = async (dt, n, database) => {
  let latencies: number[] = [];
  let resolveStarted: (() => void) | undefined;
  dt.handle('ping', async (ctx) => {
    latencies.push(performance.now() - (ctx.task.payload as { t: number }).t);
    resolveStarted?.();
    return null;
  });
  await dt.start({ pollMs: 1000 });
  const pings = async (submitter: Dynatask) => {
    for (let i = 0; i < n; i++) {
      const started = new Promise<void>((r) => (resolveStarted = r));
      await submitter.submit('ping', { t: performance.now() });
      await started;
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  const t0 = performance.now();
  await pings(dt);
  const seconds = (performance.now() - t0) / 1000;
  const local = latencies;
  if (dt.remote || !dt.store.onReady || !database) return { tasks: n, seconds, latencies: local };
  latencies = [];
  const other = await open({ database });
  await pings(other);
  await other.close();
  const remote = latencies.sort((a, b) => a - b);
  const at = (p: number) => remote[Math.min(remote.length - 1, Math.floor((p / 100) * remote.length))]!;
  return { tasks: n, seconds, latencies: local, extra: { remote_p50_ms: at(50), remote_p99_ms: at(99) } };
};

/** Enqueue-to-start latency of every task of a job, from the stored timings. */
async function startLatencies(dt: Dynatask, jobId: string): Promise<number[]> {
  const out: number[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await dt.tree(jobId, { limit: 10_000, ...(after ? { after } : {}) });
    for (const t of page.tasks) if (t.startedAt !== null) out.push(t.startedAt - t.createdAt);
    if (!page.next) return out;
    after = page.next;
  }
}

export const WORKLOADS: Record<string, { run: Workload; size: number; describe: string }> = {
  flat: { run: flat, size: 20_000, describe: '20k independent one-task jobs: bulk enqueue, then process' },
  fanout: { run: fanout, size: 10_000, describe: 'one parent spawns 10k children and waits for them' },
  // Fan-in at scale: 100k completions must not queue on the parent's counter row.
  fanout100k: { run: fanout, size: 100_000, describe: 'one parent spawns 100k children and waits for them' },
  tree: { run: tree, size: 4, describe: 'fan-out 10 at each of 4 levels (11,111 tasks), parents wait' },
  chain: { run: chain, size: 1000, describe: 'chain of depth 1,000: each task spawns the next and waits' },
  latency: { run: latency, size: 200, describe: 'idle worker, 200 single submits 5 ms apart' },
  grow: {
    run: grow,
    size: 100_000,
    describe: 'one job of a root, chunks of 1,000 and their leaves (--growth sizes it)',
  },
};

export { settleAll };
