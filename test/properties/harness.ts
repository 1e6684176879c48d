/**
 * Runs one generated scenario on a database and records everything the invariants need:
 * the events of every Dynatask instance involved (in commit order), what each handler saw
 * (spawn handles, step executions and returns, wait results), the cancellations made, and a
 * snapshot of the jobs and their task trees taken through the public API once they settled.
 *
 * Only the public API (src/index.ts) and `dt.engine` are used, so the same scenarios run on
 * any store: the caller provides a factory of fresh databases.
 */
import { randomUUID } from 'node:crypto';
import {
  ChildTaskFailedError,
  type Dynatask,
  type DynataskEvent,
  type JobInfo,
  NonRetryableError,
  type TaskContext,
  type TaskHandle,
  type TaskInfo,
} from '../../src/index.js';
import {
  ancestorsOf,
  awaitedIndexes,
  childPath,
  flatten,
  maxAttemptsOf,
  type NodeSpec,
  ROOT_PATH,
} from './model.js';

/** A fresh, empty database that can be opened more than once (again after a simulated crash). */
export interface TestDatabase {
  /** Opens a Dynatask on this database (handlers not registered, not started). */
  open(opts: { leaseMs: number }): Promise<Dynatask>;
  /** Removes the database. Called after every Dynatask opened on it has been closed. */
  dispose(): Promise<void>;
}

export type DatabaseFactory = () => Promise<TestDatabase>;

/** Something that happens to the run at the `atInvocation`-th handler invocation. */
export type Disruption =
  | { kind: 'none' }
  | {
      /** Cancels an ancestor-or-self of the task whose handler is held there, and maybe another task. */
      kind: 'cancel';
      atInvocation: number;
      where: 'start' | 'afterSpawn';
      /** Index (mod depth) into the held task's ancestors, root first: which one to cancel. */
      ancestorPick: number;
      /** Index (mod size) into the job's nodes of a second task to cancel, if it exists by then. */
      extraTarget: number | null;
    }
  | {
      /**
       * Simulates a crash of the Dynatask instance while that handler is held: its store is
       * closed under it (nothing more commits, heartbeats stop), then a new instance is opened
       * on the same database and must recover the expired leases and finish the jobs.
       */
      kind: 'crash';
      atInvocation: number;
      where: 'start' | 'afterSpawn';
    };

export interface Scenario {
  jobs: NodeSpec[];
  disruption: Disruption;
  /** Page size used to read the job trees back (exercises paging). */
  pageSize: number;
}

export interface JobRun {
  index: number;
  spec: NodeSpec;
  nodes: Map<string, NodeSpec>;
  jobId: string;
  rootId: string;
  /** Task id of every node path, as returned by spawn (and submit for the root). */
  idsByPath: Map<string, string>;
}

export type StepRecord =
  | { kind: 'exec'; attempt: number; value: string }
  | { kind: 'return'; attempt: number; value: unknown; executed: boolean };

export interface CancelRecord {
  job: number;
  path: string;
  taskId: string;
  /** What cancelTask / cancelJob returned. */
  ok: boolean;
}

export interface JobSnapshot {
  job: JobInfo;
  /** Every task of the job, read page by page with `dt.tree`, each with its attempts. */
  tasks: TaskInfo[];
  pages: number;
}

/** Everything recorded by one run, handed to the invariant checks. */
export interface Observation {
  scenario: Scenario;
  runs: JobRun[];
  events: DynataskEvent[];
  /** Violations noticed while running (in handlers, or by the harness itself). */
  violations: string[];
  /** Task id -> number of spawn calls that reported it as created. */
  created: Map<string, number>;
  /** Task id -> the memoised step's executions and returns, in order. */
  steps: Map<string, StepRecord[]>;
  cancels: CancelRecord[];
  /** The handler held at the disruption point, if it was reached. */
  held: { job: number; path: string; taskId: string; sawAbort: boolean } | null;
  crashed: boolean;
  /**
   * The scenario runs with the short crash lease: on a loaded machine a live worker can lose a
   * lease too (a heartbeat queued behind a slow transaction), crash reached or not.
   */
  shortLease: boolean;
  /** Errors the engine's own loops logged (worker, sweeper) outside a simulated crash. */
  loopErrors: string[];
  snapshots: JobSnapshot[];
}

/** Lease used in crash scenarios: short, so the reopened instance recovers the tasks quickly. */
export const CRASH_LEASE_MS = 400;
/** Lease used otherwise: long, so a loaded machine never loses a lease by accident. */
export const NORMAL_LEASE_MS = 10_000;
/** How long one scenario may take before it is reported as stuck. */
export const SCENARIO_DEADLINE_MS = 25_000;

const RETRY = { backoffMs: 1, maxBackoffMs: 4 };

interface Payload {
  job: number;
  path: string;
}

class Deferred<T = void> {
  resolve!: (v: T) => void;
  readonly promise = new Promise<T>((r) => {
    this.resolve = r;
  });
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

/** Rejects with `what` (and whatever `diagnose` adds) if `p` has not settled within `ms`. */
async function deadline<T>(p: Promise<T>, ms: number, what: string, diagnose?: () => Promise<string>) {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const detail = diagnose ? diagnose().catch((e) => `(diagnosis failed: ${e})`) : Promise.resolve('');
      void detail.then((d) => reject(new Error(`${what} within ${ms} ms${d ? `\n${d}` : ''}`)));
    }, ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Engine loop errors are logged with console.error('dynatask ...'): collect them instead. */
function captureLoopErrors(sink: string[], quiet: () => boolean): () => void {
  const original = console.error;
  console.error = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].startsWith('dynatask')) {
      if (!quiet()) sink.push(args.map((a) => (a instanceof Error ? a.stack : String(a))).join(' '));
      return;
    }
    original(...args);
  };
  return () => {
    console.error = original;
  };
}

/** Our own failure messages carry this marker, so checks can tell them from propagated ones. */
export function ownMarker(path: string): string {
  return `[node ${path}]`;
}

export async function runScenario(factory: DatabaseFactory, scenario: Scenario): Promise<Observation> {
  const obs: Observation = {
    scenario,
    runs: [],
    events: [],
    violations: [],
    created: new Map(),
    steps: new Map(),
    cancels: [],
    held: null,
    crashed: false,
    shortLease: false,
    loopErrors: [],
    snapshots: [],
  };
  const { disruption } = scenario;
  obs.shortLease = disruption.kind === 'crash';
  const leaseMs = obs.shortLease ? CRASH_LEASE_MS : NORMAL_LEASE_MS;
  let invocations = 0;
  const reached = new Deferred();
  const gate = new Deferred();
  const abortSeen = new Deferred();
  let quiet = false;
  const restoreConsole = captureLoopErrors(obs.loopErrors, () => quiet);
  const violation = (m: string) => obs.violations.push(m);

  // ------------------------------------------------------------ the handler of every node

  const hold = async (ctx: TaskContext, p: Payload) => {
    obs.held = { job: p.job, path: p.path, taskId: ctx.task.id, sawAbort: false };
    reached.resolve();
    await Promise.race([gate.promise, aborted(ctx.signal)]);
    if (ctx.signal.aborted) {
      obs.held.sawAbort = true;
      abortSeen.resolve();
      throw ctx.signal.reason ?? new Error('aborted');
    }
  };

  const failIfDue = (ctx: TaskContext, spec: NodeSpec, path: string) => {
    const at = `${ownMarker(path)} attempt ${ctx.task.attempt}`;
    switch (spec.fail.kind) {
      case 'flaky':
        if (ctx.task.attempt <= spec.fail.times) throw new Error(`${at}: flaky failure`);
        return;
      case 'exhaust':
        throw new Error(`${at}: fails on every attempt`);
      case 'nonRetryable':
        throw new NonRetryableError(`${at}: non-retryable failure`);
      case 'none':
        return;
    }
  };

  const effect = async (ctx: TaskContext) => {
    const records = obs.steps.get(ctx.task.id) ?? [];
    obs.steps.set(ctx.task.id, records);
    let executed = false;
    const value = await ctx.step('effect', () => {
      executed = true;
      const v = randomUUID();
      records.push({ kind: 'exec', attempt: ctx.task.attempt, value: v });
      return v;
    });
    records.push({ kind: 'return', attempt: ctx.task.attempt, value, executed });
  };

  const spawnChildren = async (ctx: TaskContext, run: JobRun, spec: NodeSpec, path: string) => {
    const specs = spec.children.map((c, i) => ({
      type: 'node',
      payload: { job: run.index, path: childPath(path, i) } satisfies Payload,
      options: {
        maxAttempts: maxAttemptsOf(c),
        ...RETRY,
        ...(c.ignoreFailure ? { ignoreFailure: true } : {}),
        ...(spec.spawnStyle === 'keyed' ? { key: `k${i}` } : {}),
      },
    }));
    const handles: TaskHandle[] = [];
    // Record each call's handles as soon as it returns: a later call may fail (crash, cancel).
    const got = (hs: TaskHandle[]) => {
      for (const h of hs) {
        const i = handles.length;
        handles.push(h);
        const p = childPath(path, i);
        const known = run.idsByPath.get(p);
        if (known !== undefined && known !== h.id)
          violation(
            `${p}: a re-run's spawn returned task ${h.id}, the first returned ${known} (duplicate child)`,
          );
        if (known === undefined && !h.created)
          violation(`${p}: first spawn of the child returned created=false (${h.id})`);
        run.idsByPath.set(p, h.id);
        if (h.created) obs.created.set(h.id, (obs.created.get(h.id) ?? 0) + 1);
        if (h.parentId !== ctx.task.id)
          violation(`${p}: handle parentId ${h.parentId}, expected ${ctx.task.id}`);
        if (h.type !== 'node') violation(`${p}: handle type ${h.type}`);
        if (spec.spawnStyle === 'keyed' && h.key !== `k${i}`)
          violation(`${p}: handle key ${h.key}, expected k${i}`);
      }
    };
    switch (spec.spawnStyle) {
      case 'many':
      case 'keyed':
        got(await ctx.spawnMany(specs));
        break;
      case 'each':
        for (const s of specs) got([await ctx.spawn(s.type, s.payload, s.options)]);
        break;
      case 'split': {
        const half = Math.ceil(specs.length / 2);
        got(await ctx.spawnMany(specs.slice(0, half)));
        got(await ctx.spawnMany(specs.slice(half)));
        break;
      }
    }
    if (handles.length !== specs.length)
      violation(`${path}: spawned ${specs.length} children, got ${handles.length} handles`);
    return handles;
  };

  const waitChildren = async (ctx: TaskContext, spec: NodeSpec, path: string, handles: TaskHandle[]) => {
    if (spec.wait === 'none') return;
    const idx = awaitedIndexes(spec);
    const whole = spec.wait === 'all' || spec.wait === 'allSettled';
    const arg = whole ? (spec.explicitHandles ? handles : undefined) : idx.map((i) => handles[i]!);
    if (spec.wait === 'allSettled' || spec.wait === 'subsetSettled') {
      const outcomes = await ctx.waitAllSettled(arg);
      if (outcomes.length !== idx.length)
        violation(`${path}: waitAllSettled returned ${outcomes.length} outcomes for ${idx.length} children`);
      outcomes.forEach((o, k) => {
        const i = idx[k]!;
        if (o.taskId !== handles[i]?.id)
          violation(`${path}: outcome ${k} is of task ${o.taskId}, expected ${handles[i]?.id}`);
        if (
          o.state === 'succeeded' &&
          JSON.stringify(o.result) !== JSON.stringify({ path: childPath(path, i) })
        )
          violation(`${path}: outcome of ${childPath(path, i)} has result ${JSON.stringify(o.result)}`);
      });
      return;
    }
    try {
      const results = await ctx.waitAll(arg);
      if (results.length !== idx.length)
        violation(`${path}: waitAll returned ${results.length} results for ${idx.length} children`);
      results.forEach((r, k) => {
        const want = JSON.stringify({ path: childPath(path, idx[k]!) });
        if (JSON.stringify(r) !== want)
          violation(`${path}: waitAll result ${k} is ${JSON.stringify(r)}, expected ${want}`);
      });
    } catch (e) {
      if (!(e instanceof ChildTaskFailedError)) throw e;
      if (spec.onChildFailure === 'rethrow') throw e;
      if (spec.onChildFailure === 'nonRetryable') throw new NonRetryableError(`wrapped: ${e.message}`);
    }
  };

  const handler = async (ctx: TaskContext, p: Payload) => {
    const run = obs.runs[p.job];
    const spec = run?.nodes.get(p.path);
    if (!run || !spec) {
      violation(`handler ran with an unknown payload ${JSON.stringify(p)}`);
      throw new NonRetryableError('unknown payload');
    }
    if (p.path === ROOT_PATH && ctx.task.parentId !== null) violation(`root ${ctx.task.id} has a parent`);
    const n = ++invocations;
    const holdAt = disruption.kind !== 'none' && n === disruption.atInvocation ? disruption.where : null;
    if (holdAt === 'start') await hold(ctx, p);
    if (spec.failAt === 'beforeSpawn') failIfDue(ctx, spec, p.path);
    await effect(ctx);
    const handles = await spawnChildren(ctx, run, spec, p.path);
    if (holdAt === 'afterSpawn') await hold(ctx, p);
    if (spec.failAt === 'afterSpawn') failIfDue(ctx, spec, p.path);
    await waitChildren(ctx, spec, p.path, handles);
    if (spec.failAt === 'afterWait') failIfDue(ctx, spec, p.path);
    return { path: p.path };
  };

  // ------------------------------------------------------------ instances

  const db = await factory();
  const instances: Dynatask[] = [];
  const openInstance = async () => {
    const dt = await db.open({ leaseMs });
    dt.handle('node', handler as never);
    dt.subscribe((e) => obs.events.push(e));
    await dt.start({ pollMs: 100 });
    instances.push(dt);
    return dt;
  };

  let dt = await openInstance();
  const diagnose = async () => {
    const lines: string[] = [];
    for (const run of obs.runs) {
      const job = await dt.getJob(run.jobId).catch(() => null);
      lines.push(`job ${run.index} ${run.jobId}: ${job?.state} counts ${JSON.stringify(job?.counts)}`);
      let after: string | undefined;
      do {
        const page = await dt.tree(run.jobId, after ? { after } : {});
        for (const t of page.tasks)
          if (!['succeeded', 'failed', 'cancelled', 'skipped'].includes(t.state))
            lines.push(
              `  unsettled ${(t.payload as Payload).path} ${t.id} ${t.state} attempt ${t.attempt} open_children ${t.openChildren}`,
            );
        after = page.next ?? undefined;
      } while (after);
    }
    return lines.join('\n');
  };
  const settleAll = (d: Dynatask) => Promise.all(obs.runs.map((r) => d.waitForJob(r.jobId, 100)));

  try {
    const handles = await dt.submitMany(
      scenario.jobs.map((spec, j) => ({
        type: 'node',
        payload: { job: j, path: ROOT_PATH } satisfies Payload,
        options: { maxAttempts: maxAttemptsOf(spec), ...RETRY },
      })),
    );
    handles.forEach((h, j) => {
      const spec = scenario.jobs[j]!;
      obs.runs.push({
        index: j,
        spec,
        nodes: flatten(spec),
        jobId: h.id,
        rootId: h.rootTaskId,
        idsByPath: new Map([[ROOT_PATH, h.rootTaskId]]),
      });
    });

    const first = await deadline(
      Promise.race([
        settleAll(dt).then(() => 'settled' as const),
        reached.promise.then(() => 'reached' as const),
      ]),
      SCENARIO_DEADLINE_MS,
      'jobs did not settle (nor reach the disruption point)',
      diagnose,
    );

    if (first === 'reached' && disruption.kind === 'cancel') {
      const held = obs.held!;
      const run = obs.runs[held.job]!;
      const ancestors = ancestorsOf(held.path);
      const targets = [ancestors[disruption.ancestorPick % ancestors.length]!];
      if (disruption.extraTarget !== null) {
        const paths = [...run.nodes.keys()];
        targets.push(paths[disruption.extraTarget % paths.length]!);
      }
      let expectAbort = false;
      for (const path of targets) {
        const taskId = run.idsByPath.get(path);
        if (taskId === undefined) continue; // not spawned (yet)
        const ok =
          path === ROOT_PATH
            ? await dt.cancelJob(run.jobId, 'cancelled by the property test')
            : await dt.cancelTask(taskId, 'cancelled by the property test');
        obs.cancels.push({ job: held.job, path, taskId, ok });
        if (ok && ancestors.includes(path)) expectAbort = true;
      }
      if (expectAbort)
        await deadline(
          abortSeen.promise,
          5000,
          'the held handler of a cancelled task did not see its AbortSignal',
        );
      gate.resolve();
    } else if (first === 'reached' && disruption.kind === 'crash') {
      // Crash: nothing more commits through this instance, its heartbeats stop, its handlers
      // fail on their next store call. The next instance must recover the expired leases.
      quiet = true;
      obs.crashed = true;
      const victim = dt;
      await victim.store.close();
      gate.resolve();
      await victim.stop().catch(() => {});
      quiet = false;
      dt = await openInstance();
    } else {
      gate.resolve();
    }

    await deadline(settleAll(dt), SCENARIO_DEADLINE_MS, 'jobs did not settle', diagnose);
    // Stop first: every handler has returned and every outcome is stored before we read.
    await dt.stop();
    for (const run of obs.runs) {
      const job = await dt.getJob(run.jobId);
      const tasks: TaskInfo[] = [];
      let pages = 0;
      let after: string | undefined;
      do {
        const page = await dt.tree(run.jobId, { ...(after ? { after } : {}), limit: scenario.pageSize });
        pages++;
        for (const t of page.tasks) tasks.push(await dt.getTask(t.id));
        after = page.next ?? undefined;
      } while (after);
      obs.snapshots.push({ job, tasks, pages });
    }
  } finally {
    gate.resolve();
    quiet = false;
    const live = instances.filter((i) => !(obs.crashed && i === instances[0]));
    for (const i of live)
      await deadline(i.close(), 10_000, 'close did not return').catch((e) => violation(String(e)));
    restoreConsole();
    await db.dispose();
  }
  return obs;
}
