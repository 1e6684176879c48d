/**
 * `dynatask demo`: runs the demo pipeline (demo-pipeline.ts) in this process on the chosen
 * database, shows live progress from the job's events, and prints a summary once it settled.
 */
import cliProgress from 'cli-progress';
import type { Dynatask, JobHandle } from '../dynatask.js';
import {
  type DynataskEvent,
  isSettled,
  type JobInfo,
  type TaskInfo,
  type TaskState,
} from '../engine/types.js';
import { type CommonOptions, databaseOf, openDatabase } from './database.js';
import { type DemoTasks, type IngestPayload, registerDemo } from './demo-pipeline.js';
import { formatCounts } from './inspect.js';
import { formatDuration, formatJson, printJson } from './output.js';

/** The demo runs in its own namespace, so its workers never claim an application's tasks. */
export const DEMO_NAMESPACE = 'demo';

/** Lines of retried or failed tasks in the summary, at most. */
const MAX_NOTABLE = 8;

export interface DemoOptions extends CommonOptions {
  chunks: number;
  workMs: number;
  fail: boolean;
  progress: boolean;
}

/** Follows the task states of jobs from their events; counts settled and total tasks. */
class JobTracker {
  private readonly states = new Map<string, Map<string, TaskState>>();
  status = '';
  jobId: string | undefined;

  onEvent(e: DynataskEvent): void {
    if (e.kind === 'task') {
      let tasks = this.states.get(e.jobId);
      if (!tasks) {
        tasks = new Map();
        this.states.set(e.jobId, tasks);
      }
      tasks.set(e.taskId, e.state);
    } else if (e.kind === 'progress' && e.jobId === this.jobId) {
      this.status = typeof e.progress === 'string' ? e.progress : JSON.stringify(e.progress);
    }
  }

  /** Counts for the tracked job; events of other jobs (left over in the database) are ignored. */
  counts(): { total: number; settled: number; running: number; waiting: number } {
    const tasks = this.jobId ? this.states.get(this.jobId) : undefined;
    const c = { total: 0, settled: 0, running: 0, waiting: 0 };
    for (const s of tasks?.values() ?? []) {
      c.total++;
      if (isSettled(s)) c.settled++;
      else if (s === 'running') c.running++;
      else if (s === 'waiting' || s === 'completing') c.waiting++;
    }
    return c;
  }
}

/** Live progress on stderr: a redrawn bar on a terminal, a line every half second otherwise. */
function progressBar(tracker: JobTracker): { update(): void; stop(): void } {
  const bar = new cliProgress.SingleBar(
    {
      format: ' {bar} {value}/{total} tasks settled | {running} running, {waiting} waiting | {status}',
      barsize: 30,
      hideCursor: true,
      noTTYOutput: true,
      notTTYSchedule: 500,
      linewrap: false,
      gracefulExit: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const payload = () => {
    const c = tracker.counts();
    return { running: c.running, waiting: c.waiting, status: tracker.status };
  };
  bar.start(1, 0, payload());
  return {
    update() {
      const c = tracker.counts();
      bar.setTotal(Math.max(1, c.total));
      bar.update(c.settled, payload());
    },
    stop() {
      this.update();
      bar.stop();
    },
  };
}

/** A short name for a demo task, from its payload: `validate range of chunk 2`. */
function label(t: TaskInfo): string {
  const p = (t.payload ?? {}) as { index?: number; chunk?: number; check?: string };
  if (t.type === 'chunk') return `chunk ${p.index}`;
  if (t.type === 'validate') return `validate ${p.check} of chunk ${p.chunk}`;
  return t.type;
}

interface Notable {
  taskId: string;
  task: string;
  state: TaskState;
  attempts: number;
  error: string | null;
}

/** Tasks worth a line in the summary: those retried, and those that did not succeed. */
async function notableTasks(dt: Dynatask<DemoTasks>, jobId: string): Promise<Notable[]> {
  const out: Notable[] = [];
  let after: string | undefined;
  do {
    const page = await dt.tree(jobId, after === undefined ? {} : { after });
    for (const t of page.tasks) {
      if (t.attempt <= 1 && (t.state === 'succeeded' || t.error === null)) continue;
      let error = t.error?.message ?? null;
      if (t.state === 'succeeded') {
        const failed = (await dt.getTask(t.id)).attempts ?? [];
        error = failed.map((a) => `attempt ${a.attempt} failed (${a.error.message})`).join(', ');
      }
      out.push({ taskId: t.id, task: label(t), state: t.state, attempts: t.attempt, error });
    }
    after = page.next ?? undefined;
  } while (after !== undefined);
  return out;
}

export async function runDemo(opts: DemoOptions): Promise<number> {
  const database = databaseOf(opts);
  const dt = await openDatabase<DemoTasks>(database, { namespace: DEMO_NAMESPACE, create: true });
  const tracker = new JobTracker();
  let bar: ReturnType<typeof progressBar> | undefined;
  const unsubscribe = dt.subscribe((e) => {
    tracker.onEvent(e);
    bar?.update();
  });
  let job: JobHandle | undefined;
  let interrupted = false;
  const onSigint = () => {
    if (interrupted || !job) process.exit(130);
    interrupted = true;
    tracker.status = 'interrupted: cancelling the job (Ctrl-C again to quit now)';
    dt.cancelJob(job.id, 'demo interrupted (SIGINT)').catch(() => process.exit(130));
  };
  try {
    registerDemo(dt);
    await dt.start();
    const payload: IngestPayload = {
      file: 'events-2024.csv',
      chunks: opts.chunks,
      rowsPerChunk: 250,
      workMs: opts.workMs,
      failChunk: opts.fail ? Math.min(2, opts.chunks - 1) : null,
      flakyChunk: opts.chunks > 1 ? 1 : null,
    };
    if (!opts.json) {
      console.log(
        `dynatask demo: ingest ${payload.file} in ${opts.chunks} chunk(s), 3 checks each, then publish if all passed`,
      );
      console.log(`database: ${database}`);
    }
    const started = Date.now();
    job = await dt.submit('ingest', payload);
    tracker.jobId = job.id;
    process.on('SIGINT', onSigint);
    if (opts.progress && !opts.json) bar = progressBar(tracker);
    const info = await dt.waitForJob(job.id);
    const elapsedMs = Date.now() - started;
    tracker.status = `job ${info.state}`;
    bar?.stop();
    const notable = await notableTasks(dt, job.id);
    if (opts.json) printJson({ database, elapsedMs, job: info, notable });
    else printSummary(info, elapsedMs, notable, opts.database ? ` --database ${opts.database}` : '');
    if (info.state === 'succeeded') return 0;
    return interrupted ? 130 : 1;
  } finally {
    process.off('SIGINT', onSigint);
    bar?.stop();
    unsubscribe();
    await dt.close();
  }
}

function printSummary(job: JobInfo, elapsedMs: number, notable: Notable[], dbFlag: string): void {
  const lines = [
    '',
    `job ${job.id} ${job.state} in ${formatDuration(elapsedMs)}`,
    `  tasks    ${formatCounts(job.counts, job.total)}`,
  ];
  // The root's own error is printed last; list what went wrong below it first, then retries.
  // Cancelled tasks share their cause (the error line says it); the counts line has their number.
  const problems = notable.filter(
    (n) => n.state !== 'succeeded' && n.state !== 'cancelled' && n.taskId !== job.rootTaskId,
  );
  const retried = notable.filter((n) => n.state === 'succeeded');
  const shown = [...problems, ...retried];
  for (const n of shown.slice(0, MAX_NOTABLE)) {
    const what =
      n.state === 'succeeded'
        ? `${n.error}; succeeded on attempt ${n.attempts}`
        : (n.error ?? `${n.state}, no error recorded`);
    lines.push(`  ${(n.state === 'succeeded' ? 'retried' : n.state).padEnd(8)} ${n.task}: ${what}`);
  }
  if (shown.length > MAX_NOTABLE) lines.push(`  ...      and ${shown.length - MAX_NOTABLE} more`);
  if (job.state === 'succeeded')
    lines.push(`  result   ${formatJson(job.result).replace(/\n/g, '\n           ')}`);
  else if (job.error) lines.push(`  error    ${job.error.message}`);
  lines.push(
    '',
    `inspect: dynatask job ${job.id}${dbFlag}`,
    `         dynatask task ${job.rootTaskId}${dbFlag}`,
    `         dynatask jobs --namespace ${DEMO_NAMESPACE}${dbFlag}`,
  );
  console.log(lines.join('\n'));
}
