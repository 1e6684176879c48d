/**
 * Crashes with real processes: workers are child processes (test/fixtures/crash-worker.ts)
 * sharing one SQLite file, and one of them is killed with SIGKILL in the middle of a job of
 * 3,209 tasks whose parents wait for their children. The job must still complete with every
 * task succeeded exactly once in the tree, and no memoised step executed again where it had
 * committed (executions are logged by the workers to files that survive SIGKILL).
 *
 * The kill is synchronised, never timed: a worker reports over IPC that a leaf's step has
 * committed and that it now hangs holding that task's lease; the test kills it then.
 */
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type Dynatask, type JobInfo, open } from '../src/index.js';
import { allTasks, within } from './conformance/harness.js';
import { ChildHandle, type Message } from './fixtures/child.js';
import type { EffectLine, NodePayload, NodeResult, WorkerConfig } from './fixtures/crash-worker.js';

const WORKER = fileURLToPath(new URL('./fixtures/crash-worker.ts', import.meta.url));
/** Fan-out per level: 1 root, 8 mids, 200 subs, 3,000 leaves. */
const SHAPE = [8, 25, 15];
const LEAVES = SHAPE.reduce((a, b) => a * b, 1);
const TOTAL = 1 + SHAPE.reduce((acc, _, i) => acc + SHAPE.slice(0, i + 1).reduce((a, b) => a * b, 1), 0);
const LEASE_MS = 1000;
/** Watchdog only: every wait below ends on an event long before this. */
const JOB_TIMEOUT_MS = 90_000;

async function readEffects(dir: string): Promise<EffectLine[]> {
  const lines: EffectLine[] = [];
  for (const f of await readdir(dir)) {
    const text = await readFile(join(dir, f), 'utf8');
    // A process killed mid-write can leave a partial last line: it never returned from fn.
    for (const l of text.split('\n')) if (l.trim()) lines.push(JSON.parse(l) as EffectLine);
  }
  return lines;
}

/**
 * Nothing lost, nothing duplicated: the job succeeded with the full tree, each node once,
 * and each task's step committed once, re-executed only where an attempt died before its
 * commit (in the killed process, or an attempt that was recorded as failed).
 */
async function verify(
  dt: Dynatask,
  jobId: string,
  effectsDir: string,
  killed: { pid: number; hungTaskId: string },
): Promise<void> {
  const job: JobInfo = await dt.getJob(jobId);
  expect(job.state, JSON.stringify(job.error)).toBe('succeeded');
  expect((job.result as NodeResult).leaves).toBe(LEAVES);
  expect(job.total).toBe(TOTAL);
  expect(job.counts.succeeded).toBe(TOTAL);

  const tasks = await allTasks(dt, jobId);
  expect(tasks.length).toBe(TOTAL);
  const problems: string[] = [];
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const paths = new Set<string>();
  const keys = new Set<string>();
  const childCount = new Map<string, number>();
  for (const t of tasks) {
    const { path } = t.payload as NodePayload;
    if (paths.has(path)) problems.push(`node ${path} exists twice`);
    paths.add(path);
    if (t.state !== 'succeeded') problems.push(`${path} ${t.id} is ${t.state}`);
    if (t.parentId === null) continue;
    const key = `${t.parentId}/${t.key}`;
    if (keys.has(key)) problems.push(`duplicate child ${key}`);
    keys.add(key);
    childCount.set(t.parentId, (childCount.get(t.parentId) ?? 0) + 1);
    const parent = byId.get(t.parentId);
    if (!parent || `${(parent.payload as NodePayload).path}.${path.split('.').pop()}` !== path)
      problems.push(`${path} has the wrong parent ${t.parentId}`);
  }
  for (const t of tasks) {
    const depth = (t.payload as NodePayload).path.split('.').length - 1;
    const want = SHAPE[depth] ?? 0;
    if ((childCount.get(t.id) ?? 0) !== want)
      problems.push(
        `${(t.payload as NodePayload).path} has ${childCount.get(t.id) ?? 0} children, expected ${want}`,
      );
  }

  // Memoised steps: the committed execution is the one in the task's result.
  const effects = await readEffects(effectsDir);
  const byTask = new Map<string, EffectLine[]>();
  const returnsByTask = new Map<string, EffectLine[]>();
  for (const e of effects) {
    if (e.kind === 'return') {
      returnsByTask.set(e.task, [...(returnsByTask.get(e.task) ?? []), e]);
      continue;
    }
    const list = byTask.get(e.task) ?? [];
    list.push(e);
    byTask.set(e.task, list);
  }
  for (const id of byTask.keys()) if (!byId.has(id)) problems.push(`effects logged for unknown task ${id}`);
  for (const t of tasks) {
    const execs = byTask.get(t.id) ?? [];
    const committed = (t.result as NodeResult).exec;
    if (!execs.some((e) => e.exec === committed))
      problems.push(`${t.id}: committed execution ${committed} is not in the effects log`);
    // Once ctx.step returned a value anywhere, it had committed: it must be the final one
    // (putStep replaces, so a re-execution after a commit would change the stored value).
    for (const r of returnsByTask.get(t.id) ?? [])
      if (r.exec !== committed)
        problems.push(
          `${(t.payload as NodePayload).path} ${t.id}: step returned ${r.exec} (pid ${r.pid}), but ${committed} is the final value: re-executed after it committed`,
        );
    const others = execs.filter((e) => e.exec !== committed);
    if (!others.length) continue;
    // Re-execution is legitimate only for an attempt that died before committing its step.
    const failedAttempts = new Set(((await dt.getTask(t.id)).attempts ?? []).map((a) => a.attempt));
    for (const e of others)
      if (e.pid !== killed.pid && !failedAttempts.has(e.attempt))
        problems.push(
          `${(t.payload as NodePayload).path} ${t.id}: step executed again (pid ${e.pid}, attempt ${e.attempt}) beside the committed one`,
        );
  }

  // The task the killed process held: its lease expired, it was re-run, its step was not.
  const hung = await dt.getTask(killed.hungTaskId);
  expect(hung.state).toBe('succeeded');
  expect(hung.attempts?.map((a) => a.error.name)).toContain('LeaseExpired');
  expect(byTask.get(killed.hungTaskId)?.length, 'executions of the hung task step').toBe(1);
  expect(effects.filter((e) => e.pid === killed.pid).length).toBeGreaterThan(0);
  expect(effects.filter((e) => e.pid !== killed.pid).length).toBeGreaterThan(0);
  expect(problems).toEqual([]);
}

describe('crash: workers in child processes on one SQLite file, SIGKILL mid-job', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanup.splice(0).reverse()) await c();
  });

  async function tempDatabase() {
    const dir = await mkdtemp(join(tmpdir(), 'dynatask-crash-'));
    cleanup.push(() => rm(dir, { recursive: true, force: true }));
    const effectsDir = join(dir, 'effects');
    await mkdir(effectsDir);
    return { database: join(dir, 'dynatask.db'), effectsDir };
  }

  function spawnWorker(config: WorkerConfig): ChildHandle {
    const w = new ChildHandle(WORKER, config, 'worker');
    cleanup.push(async () => {
      w.kill('SIGKILL');
      await w.exited;
    });
    return w;
  }

  it('one of two workers is killed: the other recovers its leases and the job completes exactly', async () => {
    const { database, effectsDir } = await tempDatabase();
    // The test process submits and watches; it runs no worker of its own.
    const dt = await open({ database });
    cleanup.push(() => dt.close());
    const victim = spawnWorker({ database, effectsDir, leaseMs: LEASE_MS, hangAfter: 100 });
    const survivor = spawnWorker({ database, effectsDir, leaseMs: LEASE_MS });
    await Promise.all([victim.next('ready'), survivor.next('ready')]);

    const job = await dt.submit('node', { path: 'r', fan: SHAPE } satisfies NodePayload);
    const { taskId } = await victim.next<Message & { taskId: string }>('hanging');
    expect((await dt.getJob(job.id)).state).toBe('running');
    victim.kill('SIGKILL');
    expect((await victim.exited).signal).toBe('SIGKILL');

    await within(dt.waitForJob(job.id), JOB_TIMEOUT_MS, 'the job did not settle after the kill');
    survivor.child.send({ type: 'stop' });
    expect((await survivor.exited).code).toBe(0);
    await verify(dt, job.id, effectsDir, { pid: victim.pid, hungTaskId: taskId });
  }, 180_000);

  it('the single process owning the file is killed: a new process reopens it and the job completes', async () => {
    const { database, effectsDir } = await tempDatabase();
    const owner = spawnWorker({ database, effectsDir, leaseMs: LEASE_MS, submit: SHAPE, hangAfter: 300 });
    const { jobId } = await owner.next<Message & { jobId: string }>('submitted');
    const { taskId } = await owner.next<Message & { taskId: string }>('hanging');
    owner.kill('SIGKILL');
    expect((await owner.exited).signal).toBe('SIGKILL');

    // Nothing holds the file now. A new process opens it, recovers the expired leases, finishes.
    const resumed = spawnWorker({ database, effectsDir, leaseMs: LEASE_MS, waitForJob: jobId });
    const { job } = await resumed.next<Message & { job: JobInfo }>('settled', JOB_TIMEOUT_MS);
    expect(job.state).toBe('succeeded');
    expect((await resumed.exited).code).toBe(0);

    const dt = await open({ database });
    cleanup.push(() => dt.close());
    await verify(dt, jobId, effectsDir, { pid: owner.pid, hungTaskId: taskId });
  }, 180_000);
});
