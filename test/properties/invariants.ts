/**
 * The invariants checked after every generated run. Each returns violations as sentences
 * naming the job, the node path and the task id, so a failing property says what broke.
 *
 * Global invariants hold whatever the model: every job settles exactly once and takes its
 * root's state; no task settles before its descendants; counts add up; no duplicate children;
 * no task lost; events are consistent with the final states; memoised steps never re-run
 * once committed. Local invariants check each task against its node's spec and the actual
 * final states of its children (so they hold under cancellations and crashes too).
 */
import type { DynataskEvent, TaskInfo, TaskState } from '../../src/index.js';
import type { JobRun, JobSnapshot, Observation } from './harness.js';
import { ownMarker } from './harness.js';
import { awaitedIndexes, type NodeSpec, parentPath, ROOT_PATH, waitThrows } from './model.js';

const SETTLED: readonly TaskState[] = ['succeeded', 'failed', 'cancelled', 'skipped'];
const isSettled = (s: string) => (SETTLED as readonly string[]).includes(s);

interface Ctx {
  obs: Observation;
  run: JobRun;
  snap: JobSnapshot;
  byId: Map<string, TaskInfo>;
  byPath: Map<string, TaskInfo>;
  children: Map<string, TaskInfo[]>;
  /** Index in obs.events of each task's settling event. */
  settledAt: Map<string, number>;
  out: string[];
}

const pathOf = (t: TaskInfo) => (t.payload as { path: string }).path;

export function checkObservation(obs: Observation): string[] {
  const out: string[] = [...obs.violations];
  for (const e of obs.loopErrors) out.push(`an engine loop logged an error: ${e}`);
  if (obs.held && obs.scenario.disruption.kind === 'cancel') {
    const held = obs.held;
    const hit = obs.cancels.some((c) => c.ok && c.job === held.job && isAncestorOrSelf(c.path, held.path));
    if (hit && !held.sawAbort)
      out.push(
        `held task ${held.path} (${held.taskId}) was cancelled but its handler never saw the AbortSignal`,
      );
  }
  obs.runs.forEach((run, j) => {
    const snap = obs.snapshots[j];
    if (!snap) {
      out.push(`job ${j}: no snapshot`);
      return;
    }
    checkJob(obs, run, snap, out);
  });
  return out;
}

function isAncestorOrSelf(a: string, p: string): boolean {
  return p === a || p.startsWith(`${a}.`);
}

function checkJob(obs: Observation, run: JobRun, snap: JobSnapshot, out: string[]): void {
  const j = `job ${run.index}`;
  const { job, tasks } = snap;
  const byId = new Map<string, TaskInfo>();
  const byPath = new Map<string, TaskInfo>();
  const children = new Map<string, TaskInfo[]>();
  for (const t of tasks) {
    if (byId.has(t.id)) out.push(`${j}: task ${t.id} appears twice in the tree pages`);
    byId.set(t.id, t);
    const p = t.payload as { job?: number; path?: string } | null;
    if (!p || p.job !== run.index || typeof p.path !== 'string') {
      out.push(`${j}: task ${t.id} has a foreign payload ${JSON.stringify(p)}`);
      continue;
    }
    if (byPath.has(p.path))
      out.push(
        `${j}: node ${p.path} exists twice (tasks ${byPath.get(p.path)!.id} and ${t.id}): duplicate child`,
      );
    byPath.set(p.path, t);
    if (!run.nodes.has(p.path))
      out.push(`${j}: task ${t.id} runs node ${p.path}, which the tree does not have`);
    if (t.parentId !== null) {
      const list = children.get(t.parentId) ?? [];
      list.push(t);
      children.set(t.parentId, list);
    }
  }

  // The job: settled once, with its root's state, result and error.
  const root = byId.get(job.rootTaskId);
  if (!root) out.push(`${j}: root task ${job.rootTaskId} is not in the tree pages`);
  if (job.state === 'running') out.push(`${j}: still running after waitForJob returned`);
  if (root) {
    if (root.parentId !== null) out.push(`${j}: root has parent ${root.parentId}`);
    if (pathOf(root) !== ROOT_PATH) out.push(`${j}: root runs node ${pathOf(root)}`);
    const want = root.state === 'skipped' ? 'failed' : root.state;
    if (job.state !== want) out.push(`${j}: job state ${job.state} but root state ${root.state}`);
    if (job.settledAt !== root.settledAt)
      out.push(`${j}: job settledAt ${job.settledAt} but root settledAt ${root.settledAt}`);
    if (job.state === 'succeeded' && JSON.stringify(job.result) !== JSON.stringify(root.result))
      out.push(
        `${j}: job result ${JSON.stringify(job.result)} is not the root's ${JSON.stringify(root.result)}`,
      );
    if (job.state !== 'succeeded' && JSON.stringify(job.error) !== JSON.stringify(root.error))
      out.push(`${j}: job error is not the root's error`);
  }
  const jobEvents = obs.events.filter((e) => e.kind === 'job' && e.jobId === job.id);
  if (jobEvents.length !== 1)
    out.push(
      `${j}: ${jobEvents.length} 'job' events (states ${jobEvents.map((e) => (e as { state: string }).state)}), expected exactly 1`,
    );
  else if ((jobEvents[0] as { state: string }).state !== job.state)
    out.push(`${j}: job event says ${(jobEvents[0] as { state: string }).state}, job is ${job.state}`);

  // Counts add up: by state, in total, and against the tree pages.
  let sum = 0;
  const tally = new Map<string, number>();
  for (const t of tasks) tally.set(t.state, (tally.get(t.state) ?? 0) + 1);
  for (const [state, n] of Object.entries(job.counts)) {
    sum += n;
    if ((tally.get(state) ?? 0) !== n)
      out.push(`${j}: counts.${state} = ${n}, tree pages hold ${tally.get(state) ?? 0}`);
  }
  if (sum !== job.total) out.push(`${j}: counts sum to ${sum}, total is ${job.total}`);
  if (job.total !== tasks.length) out.push(`${j}: total ${job.total}, tree pages hold ${tasks.length}`);
  const expectPages = Math.max(1, Math.ceil(tasks.length / obs.scenario.pageSize));
  if (snap.pages !== expectPages)
    out.push(
      `${j}: ${tasks.length} tasks came in ${snap.pages} pages of ${obs.scenario.pageSize}, expected ${expectPages}`,
    );

  // No duplicate children: (parentId, key) unique; each task under its node's parent node.
  const keys = new Set<string>();
  for (const t of tasks) {
    if (t.parentId === null) continue;
    const k = `${t.parentId}\0${t.key}`;
    if (keys.has(k)) out.push(`${j}: two children of ${t.parentId} share the key ${t.key}`);
    keys.add(k);
    const parent = byId.get(t.parentId);
    if (!parent) out.push(`${j}: task ${t.id} (${pathOf(t)}) has parent ${t.parentId}, not in the job`);
    else if (parentPath(pathOf(t)) !== pathOf(parent))
      out.push(`${j}: node ${pathOf(t)} is a child of node ${pathOf(parent)}`);
  }

  // No task lost: every task settled; the tasks spawn created are exactly the stored ones.
  for (const t of tasks)
    if (!isSettled(t.state)) out.push(`${j}: ${pathOf(t)} (${t.id}) never settled: ${t.state}`);
  for (const t of tasks) {
    if (t.parentId === null) continue;
    const n = obs.created.get(t.id) ?? 0;
    if (n !== 1)
      out.push(`${j}: ${pathOf(t)} (${t.id}) was reported created by ${n} spawn calls, expected 1`);
    if (run.idsByPath.get(pathOf(t)) !== t.id)
      out.push(`${j}: ${pathOf(t)} is stored as ${t.id}, spawn returned ${run.idsByPath.get(pathOf(t))}`);
  }
  for (const [path, id] of run.idsByPath)
    if (!byId.has(id)) out.push(`${j}: ${path} (${id}) was returned by spawn but is not stored: task lost`);

  const ctx: Ctx = { obs, run, snap, byId, byPath, children, settledAt: new Map(), out };
  checkEvents(ctx);
  for (const t of tasks) {
    checkSettleOrder(ctx, t);
    checkSteps(ctx, t);
    checkAttempts(ctx, t);
    const spec = run.nodes.get(pathOf(t));
    if (spec) checkLocal(ctx, t, spec);
  }
  checkCancellations(ctx);
}

/** Each task settles exactly once in the event stream, in its final state, and nothing follows. */
function checkEvents(c: Ctx): void {
  const perTask = new Map<string, Array<{ i: number; e: DynataskEvent & { kind: 'task' } }>>();
  c.obs.events.forEach((e, i) => {
    if (e.kind !== 'task' || e.jobId !== c.snap.job.id) return;
    const list = perTask.get(e.taskId) ?? [];
    list.push({ i, e });
    perTask.set(e.taskId, list);
  });
  for (const id of perTask.keys())
    if (!c.byId.has(id)) c.out.push(`job ${c.run.index}: events for task ${id}, which is not stored`);
  for (const t of c.snap.tasks) {
    const list = perTask.get(t.id) ?? [];
    const where = `job ${c.run.index}: ${pathOf(t)} (${t.id})`;
    if (!list.length) {
      c.out.push(`${where}: no events`);
      continue;
    }
    if (list[0]!.e.state !== 'queued' && list[0]!.e.state !== 'blocked')
      c.out.push(`${where}: first event is ${list[0]!.e.state}`);
    const settles = list.filter((x) => isSettled(x.e.state));
    if (settles.length !== 1)
      c.out.push(
        `${where}: settled ${settles.length} times in the events (${settles.map((x) => x.e.state).join(', ')})`,
      );
    const s = settles[0];
    if (!s) continue;
    c.settledAt.set(t.id, s.i);
    if (s.e.state !== t.state) c.out.push(`${where}: settle event says ${s.e.state}, task is ${t.state}`);
    const after = list.filter((x) => x.i > s.i);
    if (after.length)
      c.out.push(`${where}: events after it settled: ${after.map((x) => x.e.state).join(', ')}`);
  }
}

/** No task settles before its descendants (checked child by child, which is transitive). */
function checkSettleOrder(c: Ctx, t: TaskInfo): void {
  for (const ch of c.children.get(t.id) ?? []) {
    const where = `job ${c.run.index}: ${pathOf(t)} (${t.id})`;
    if (t.settledAt !== null && ch.settledAt !== null && t.settledAt < ch.settledAt)
      c.out.push(`${where} settled at ${t.settledAt}, before its child ${pathOf(ch)} at ${ch.settledAt}`);
    if (t.settledAt !== null && ch.settledAt === null)
      c.out.push(`${where} settled, its child ${pathOf(ch)} has no settledAt`);
    const pi = c.settledAt.get(t.id);
    const ci = c.settledAt.get(ch.id);
    if (pi !== undefined && ci !== undefined && pi < ci && c.obs.events[pi]!.at !== c.obs.events[ci]!.at)
      c.out.push(`${where}'s settle event precedes its child ${pathOf(ch)}'s, in an earlier transaction`);
  }
}

/** A memoised step never runs again once it committed, and always returns the committed value. */
function checkSteps(c: Ctx, t: TaskInfo): void {
  const records = c.obs.steps.get(t.id) ?? [];
  const where = `job ${c.run.index}: ${pathOf(t)} (${t.id})`;
  const first = records.findIndex((r) => r.kind === 'return');
  if (first >= 0) {
    const committed = records[first] as StepReturn;
    for (const r of records.slice(first + 1)) {
      if (r.kind === 'exec' && r.attempt >= committed.attempt)
        c.out.push(
          `${where}: step 'effect' ran again in attempt ${r.attempt} after it committed in attempt ${committed.attempt}`,
        );
      if (r.kind === 'return' && r.value !== committed.value)
        c.out.push(
          `${where}: step 'effect' returned ${String(r.value)}, it had committed ${String(committed.value)}`,
        );
    }
    const exec = records.find((r) => r.kind === 'exec' && r.value === committed.value);
    if (!exec)
      c.out.push(`${where}: step 'effect' returned ${String(committed.value)}, which no execution produced`);
  }
  if (t.state === 'succeeded' && first < 0)
    c.out.push(`${where}: succeeded without its step 'effect' returning`);
}

type StepReturn = { kind: 'return'; attempt: number; value: unknown; executed: boolean };

/** Attempts are recorded with errors and timings; where the model is exact, their number too. */
function checkAttempts(c: Ctx, t: TaskInfo): void {
  const spec = c.run.nodes.get(pathOf(t));
  const attempts = t.attempts ?? [];
  const where = `job ${c.run.index}: ${pathOf(t)} (${t.id})`;
  attempts.forEach((a, i) => {
    if (i > 0 && a.attempt <= attempts[i - 1]!.attempt)
      c.out.push(`${where}: attempt numbers not increasing`);
    if (a.finishedAt < a.startedAt) c.out.push(`${where}: attempt ${a.attempt} finished before it started`);
    if (!a.error || typeof a.error.message !== 'string')
      c.out.push(`${where}: attempt ${a.attempt} has no error`);
  });
  // Attempts lost to an expired lease (a crash, or a short lease on a loaded machine) add
  // attempts the model cannot count.
  const expired = c.obs.shortLease && attempts.some((a) => a.error?.name === 'LeaseExpired');
  if (!spec || c.obs.crashed || expired) return;
  if (t.maxAttempts !== null && attempts.length > t.maxAttempts)
    c.out.push(`${where}: ${attempts.length} failed attempts recorded, maxAttempts ${t.maxAttempts}`);
  if (t.state === 'succeeded') {
    const want = spec.fail.kind === 'flaky' ? spec.fail.times : 0;
    if (attempts.length !== want)
      c.out.push(`${where}: succeeded after ${attempts.length} failed attempts, expected ${want}`);
  }
  if (t.state === 'failed' && t.error?.message.includes(ownMarker(pathOf(t)))) {
    const want = spec.fail.kind === 'exhaust' ? spec.fail.maxAttempts : 1;
    if (attempts.length !== want)
      c.out.push(`${where}: failed after ${attempts.length} attempts, expected ${want}`);
    if (spec.fail.kind === 'nonRetryable' && attempts[0]?.error.retryable !== false)
      c.out.push(`${where}: its NonRetryableError was not recorded as retryable: false`);
  }
}

/**
 * The task against its spec, given the actual final states of its children: its state, its
 * error (naming the failed child when a child caused it), its result and its children.
 */
function checkLocal(c: Ctx, t: TaskInfo, spec: NodeSpec): void {
  const path = pathOf(t);
  const where = `job ${c.run.index}: ${path} (${t.id})`;
  const kids = c.children.get(t.id) ?? [];
  const kidAt = new Map<number, TaskInfo>();
  for (const k of kids) {
    const i = Number(pathOf(k).slice(path.length + 1));
    if (!(i >= 0 && i < spec.children.length)) c.out.push(`${where}: unexpected child ${pathOf(k)}`);
    kidAt.set(i, k);
  }
  if (t.state === 'cancelled') {
    if (!mayBeCancelled(c, path))
      c.out.push(`${where}: cancelled, but neither it nor an ancestor was cancelled or failed`);
    return;
  }
  if (t.state !== 'succeeded' && t.state !== 'failed') {
    c.out.push(`${where}: final state ${t.state}`);
    return;
  }

  // A crash (or a short lease lost on a loaded machine) can take the last attempt of a task
  // that was going to fail anyway, wherever it was.
  if ((c.obs.crashed || c.obs.shortLease) && t.state === 'failed' && t.error?.name === 'LeaseExpired') return;
  const permanent = spec.fail.kind === 'nonRetryable' || spec.fail.kind === 'exhaust';
  const spawned = !(permanent && spec.failAt === 'beforeSpawn');
  const wantKids = spawned ? spec.children.length : 0;
  if (kids.length !== wantKids) c.out.push(`${where}: has ${kids.length} children, expected ${wantKids}`);

  type Expect =
    | { state: 'succeeded' }
    | { state: 'failed'; cause: 'own' }
    | { state: 'failed'; cause: 'wait'; culprits: TaskInfo[] }
    | { state: 'failed'; cause: 'unobserved'; culprits: TaskInfo[] };
  let expect: Expect;
  const awaited = awaitedIndexes(spec).flatMap((i) => (kidAt.has(i) ? [kidAt.get(i)!] : []));
  const notOk = awaited.filter((k) => k.state !== 'succeeded');
  if (!spawned || (permanent && spec.failAt === 'afterSpawn')) expect = { state: 'failed', cause: 'own' };
  else if (waitThrows(spec) && notOk.length && spec.onChildFailure !== 'swallow')
    expect = { state: 'failed', cause: 'wait', culprits: notOk };
  else if (permanent) expect = { state: 'failed', cause: 'own' };
  else {
    const observed = new Set(spec.wait === 'none' ? [] : awaited.map((k) => k.id));
    const culprits = kids.filter((k) => {
      const ks = c.run.nodes.get(pathOf(k));
      return k.state === 'failed' && !observed.has(k.id) && !ks?.ignoreFailure;
    });
    expect = culprits.length ? { state: 'failed', cause: 'unobserved', culprits } : { state: 'succeeded' };
  }

  const describe = () =>
    `${expect.state}${'cause' in expect ? ` (${expect.cause})` : ''}; children ${kids.map((k) => `${pathOf(k)}=${k.state}`).join(' ')}; error ${JSON.stringify(t.error?.message)}`;
  if (t.state !== expect.state) {
    c.out.push(`${where}: ${t.state}, expected ${describe()}`);
    return;
  }
  if (expect.state === 'succeeded') {
    if (JSON.stringify(t.result) !== JSON.stringify({ path }))
      c.out.push(`${where}: succeeded with result ${JSON.stringify(t.result)}`);
    return;
  }
  const err = t.error;
  if (!err) {
    c.out.push(`${where}: failed without an error`);
    return;
  }
  if (expect.cause === 'own') {
    if (!err.message.includes(ownMarker(path)))
      c.out.push(`${where}: failed with ${JSON.stringify(err.message)}, expected its own error`);
    return;
  }
  const names =
    expect.cause === 'wait'
      ? [spec.onChildFailure === 'rethrow' ? 'ChildTaskFailedError' : 'NonRetryableError']
      : ['ChildTaskFailed'];
  if (!names.includes(err.name))
    c.out.push(`${where}: failed with ${err.name}, expected ${names.join('/')}: ${describe()}`);
  const named = expect.culprits.filter((k) => err.message.includes(k.id));
  if (!named.length)
    c.out.push(
      `${where}: its error does not name the failed child (${expect.culprits.map((k) => k.id).join(', ')}): ${JSON.stringify(err.message)}`,
    );
  if (expect.cause === 'unobserved' && !expect.culprits.some((k) => k.id === err.childTaskId))
    c.out.push(`${where}: error.childTaskId ${err.childTaskId} is not a failed, unobserved child`);
}

/** A task may end cancelled if it or an ancestor was a cancel target, or an ancestor terminated. */
function mayBeCancelled(c: Ctx, path: string): boolean {
  if (c.obs.cancels.some((x) => x.job === c.run.index && isAncestorOrSelf(x.path, path))) return true;
  for (let p = parentPath(path); p !== null; p = parentPath(p)) {
    const a = c.byPath.get(p);
    if (a?.state === 'failed' && a.error?.name !== 'ChildTaskFailed') return true;
  }
  return false;
}

/** A successful cancel settles its whole subtree at once: nothing in it moves afterwards. */
function checkCancellations(c: Ctx): void {
  for (const x of c.obs.cancels) {
    if (x.job !== c.run.index) continue;
    const t = c.byId.get(x.taskId);
    if (!t) continue;
    if (!x.ok) {
      // Already settled when cancelled: fine, as long as it was settled before the call.
      continue;
    }
    if (t.state !== 'cancelled') {
      c.out.push(`job ${c.run.index}: cancel of ${x.path} returned true, but it ended ${t.state}`);
      continue;
    }
    const at = c.obs.events.findIndex(
      (e) => e.kind === 'task' && e.taskId === x.taskId && e.state === 'cancelled',
    );
    if (at < 0) continue; // reported by checkEvents
    const inSubtree = new Set<string>();
    const stack = [t];
    while (stack.length) {
      const n = stack.pop()!;
      inSubtree.add(n.id);
      stack.push(...(c.children.get(n.id) ?? []));
    }
    c.obs.events.slice(at + 1).forEach((e) => {
      if (e.kind === 'task' && inSubtree.has(e.taskId))
        c.out.push(
          `job ${c.run.index}: ${pathOf(c.byId.get(e.taskId)!)} moved to ${e.state} after its ancestor ${x.path} was cancelled`,
        );
    });
    for (const id of inSubtree) {
      const d = c.byId.get(id)!;
      const si = c.settledAt.get(id);
      if (si !== undefined && si > at)
        c.out.push(`job ${c.run.index}: ${pathOf(d)} settled after its ancestor ${x.path} was cancelled`);
    }
  }
}
