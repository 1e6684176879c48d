/** The operator commands: list and show jobs and tasks, cancel a job, purge old jobs. */
import type { JobInfo, JobState, TaskInfo, TaskState } from '../engine/types.js';
import { TASK_STATES } from '../engine/types.js';
import { type CommonOptions, withDatabase } from './database.js';
import { formatDuration, formatJson, formatTime, parseDuration, printJson, table } from './output.js';

export interface JobsOptions extends CommonOptions {
  namespace: string;
  state?: JobState;
  type?: string;
  limit: number;
  before?: string;
}

export async function listJobs(opts: JobsOptions): Promise<number> {
  const jobs = await withDatabase({ ...opts }, async (dt) =>
    dt.listJobs({
      namespace: opts.namespace,
      limit: opts.limit,
      ...(opts.state ? { state: opts.state } : {}),
      ...(opts.type ? { type: opts.type } : {}),
      ...(opts.before ? { before: opts.before } : {}),
    }),
  );
  if (opts.json) {
    printJson(jobs);
    return 0;
  }
  if (jobs.length === 0) {
    const filters = [opts.state && `state ${opts.state}`, opts.type && `type ${opts.type}`].filter(Boolean);
    console.log(
      `no jobs in namespace ${opts.namespace}${filters.length ? ` with ${filters.join(' and ')}` : ''}`,
    );
    if (opts.namespace === 'default' && !opts.json)
      console.log(`(\`dynatask demo\` runs its jobs in namespace demo: dynatask jobs --namespace demo)`);
    return 0;
  }
  const now = Date.now();
  console.log(
    table(
      ['ID', 'TYPE', 'STATE', 'CREATED', 'DURATION'],
      jobs.map((j) => [
        j.id,
        j.type,
        j.state,
        formatTime(j.createdAt),
        j.settledAt === null
          ? `${formatDuration(now - j.createdAt)} so far`
          : formatDuration(j.settledAt - j.createdAt),
      ]),
    ),
  );
  if (jobs.length === opts.limit) {
    const flags = [
      opts.namespace !== 'default' && `--namespace ${opts.namespace}`,
      opts.state && `--state ${opts.state}`,
      opts.type && `--type ${opts.type}`,
      `--limit ${opts.limit}`,
      opts.database && `--database ${opts.database}`,
    ].filter(Boolean);
    console.log(`\nnext page: dynatask jobs --before ${jobs[jobs.length - 1]!.id} ${flags.join(' ')}`);
  }
  return 0;
}

/** `34 total: 30 succeeded, 4 running` (states with no task left out). */
export function formatCounts(counts: Record<TaskState, number>, total: number): string {
  const parts = TASK_STATES.filter((s) => counts[s] > 0).map((s) => `${counts[s]} ${s}`);
  return `${total} total${parts.length ? `: ${parts.join(', ')}` : ''}`;
}

/** `  name  value` lines, aligned; rows whose value is null are left out. */
function fields(rows: Array<[string, string | null | undefined]>): string {
  const shown = rows.filter((r): r is [string, string] => r[1] !== null && r[1] !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  const indent = ' '.repeat(width + 4);
  return shown.map(([k, v]) => `  ${k.padEnd(width)}  ${v.replace(/\n/g, `\n${indent}`)}`).join('\n');
}

export function describeJob(job: JobInfo): string {
  const settled =
    job.settledAt === null
      ? null
      : `${formatTime(job.settledAt)} (after ${formatDuration(job.settledAt - job.createdAt)})`;
  return `job ${job.id}\n${fields([
    ['type', job.type],
    ['namespace', job.namespace],
    ['state', job.state],
    ['root task', job.rootTaskId],
    ['created', formatTime(job.createdAt)],
    ['settled', settled],
    ['tasks', formatCounts(job.counts, job.total)],
    ['result', job.state === 'succeeded' ? formatJson(job.result) : null],
    ['error', job.error ? `${job.error.name}: ${job.error.message}` : null],
  ])}`;
}

export async function showJob(id: string, opts: CommonOptions): Promise<number> {
  const job = await withDatabase(opts, (dt) => dt.getJob(id));
  if (opts.json) printJson(job);
  else console.log(describeJob(job));
  return 0;
}

function describeTask(t: TaskInfo): string {
  const out = [
    `task ${t.id}`,
    fields([
      ['type', t.type],
      ['job', t.jobId],
      ['parent', t.parentId ?? '- (root task of the job)'],
      ['key', t.key],
      ['dedup key', t.dedupKey],
      ['state', t.state],
      ['attempt', `${t.attempt}${t.maxAttempts !== null ? ` of ${t.maxAttempts}` : ''}`],
      ['priority', String(t.priority)],
      ['run at', formatTime(t.runAt)],
      ['created', formatTime(t.createdAt)],
      ['started', t.startedAt === null ? null : formatTime(t.startedAt)],
      ['worker', t.workerId],
      ['lease until', t.leaseExpiresAt === null ? null : formatTime(t.leaseExpiresAt)],
      ['finished', t.finishedAt === null ? null : formatTime(t.finishedAt)],
      ['settled', t.settledAt === null ? null : formatTime(t.settledAt)],
      ['open children', t.openChildren > 0 ? String(t.openChildren) : null],
      ['payload', formatJson(t.payload)],
      ['progress', t.progress === null ? null : formatJson(t.progress)],
      ['result', t.state === 'succeeded' || t.result !== null ? formatJson(t.result) : null],
      ['error', t.error ? `${t.error.name}: ${t.error.message}` : null],
    ]),
  ];
  const attempts = t.attempts ?? [];
  if (attempts.length) {
    out.push('  failed attempts:');
    for (const a of attempts)
      out.push(
        `    #${a.attempt}  ${formatTime(a.startedAt)}  ${formatDuration(a.finishedAt - a.startedAt)}  ${a.error.name}: ${a.error.message}`,
      );
  }
  return out.join('\n');
}

export async function showTask(id: string, opts: CommonOptions): Promise<number> {
  const task = await withDatabase(opts, (dt) => dt.getTask(id));
  if (opts.json) printJson(task);
  else console.log(describeTask(task));
  return 0;
}

export interface CancelOptions extends CommonOptions {
  reason?: string;
}

export async function cancelJob(id: string, opts: CancelOptions): Promise<number> {
  const { cancelled, job } = await withDatabase(opts, async (dt) => {
    const cancelled = await dt.cancelJob(id, opts.reason);
    return { cancelled, job: await dt.getJob(id) };
  });
  if (opts.json) printJson({ jobId: id, cancelled, state: job.state });
  else if (cancelled) console.log(`job ${id} cancelled (${formatCounts(job.counts, job.total)})`);
  else console.log(`job ${id} had already settled (${job.state}); nothing to cancel`);
  return 0;
}

export interface PurgeOptions extends CommonOptions {
  olderThan: string;
  namespace: string;
}

export async function purge(opts: PurgeOptions): Promise<number> {
  const olderThanMs = parseDuration(opts.olderThan);
  const purged = await withDatabase(opts, (dt) => dt.purge({ olderThanMs }));
  if (opts.json) printJson({ purged, olderThanMs });
  else
    console.log(
      `purged ${purged} job${purged === 1 ? '' : 's'} of namespace ${opts.namespace} settled more than ${formatDuration(olderThanMs)} ago`,
    );
  return 0;
}
