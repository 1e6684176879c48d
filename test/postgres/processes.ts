/**
 * Dynatask processes on one Postgres database (test/fixtures/pg-process.ts), and the checks
 * of a finished job tree that the multi-process and fault tests share: read from the
 * database itself and from the executions the workers logged.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ChildHandle, type Message } from '../fixtures/child.js';
import type { NodePayload, NodeResult, PgProcessConfig, RunLine } from '../fixtures/pg-process.js';

const SCRIPT = fileURLToPath(new URL('../fixtures/pg-process.ts', import.meta.url));

export type { Message };

/** A dynatask process of the multi-process tests; a `problem` message from it fails every wait. */
export class PgProcess extends ChildHandle {
  constructor(readonly config: PgProcessConfig) {
    super(SCRIPT, config, config.role, 'problem');
  }

  /** Asks it to close, and waits for its exit code. */
  async stop(): Promise<number | null> {
    if (this.running) this.send({ type: 'stop' });
    return (await this.exited).code;
  }
}

/** Number of tasks in a tree whose levels fan out by `shape`. */
export function treeSize(shape: number[]): number {
  let total = 1;
  let level = 1;
  for (const n of shape) {
    level *= n;
    total += level;
  }
  return total;
}

export async function readRuns(dir: string): Promise<RunLine[]> {
  const lines: RunLine[] = [];
  for (const f of await readdir(dir)) {
    const text = await readFile(join(dir, f), 'utf8');
    for (const l of text.split('\n')) if (l.trim()) lines.push(JSON.parse(l) as RunLine);
  }
  return lines;
}

interface DbTask {
  id: string;
  parent_id: string | null;
  spawn_key: string | null;
  state: string;
  payload: string;
  result: string | null;
  run_token: number;
  open_children: number;
  wait_remaining: number;
  lease_expires_at: number | null;
}

export interface TreeCheck {
  /** Every line of trouble found; empty when all holds. */
  problems: string[];
  /** Handler executions per task (claims that ran), for reporting. */
  executions: number;
  tasks: number;
}

/**
 * Checks a settled job tree of shape `shape` against the database and the runs logged:
 * - the job succeeded, with every task of the tree succeeded exactly once (one row per node,
 *   the right number of children under each parent, no (parent, key) twice);
 * - counters settled: no open children or remaining waits left anywhere (a completion applied
 *   twice or half would leave one off zero, or the job stuck);
 * - every task ran, no attempt token was used by two executions, the last execution ran with
 *   the task's final token, and the results add up (the root counts every leaf);
 * - `strict` (no faults): no two executions of one task overlapped in time, every claim ran
 *   exactly one execution, and every leaf ran exactly once.
 */
export async function checkTree(
  url: string,
  schema: string,
  jobId: string,
  shape: number[],
  runs: RunLine[],
  strict: boolean,
): Promise<TreeCheck> {
  const problems: string[] = [];
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let rows: DbTask[];
  let jobState: string;
  try {
    jobState = (await c.query(`SELECT state FROM "${schema}".jobs WHERE id = $1`, [jobId])).rows[0]?.state;
    rows = (
      await c.query<DbTask>(
        `SELECT id, parent_id, spawn_key, state, payload, result, run_token, open_children, wait_remaining,
                lease_expires_at
           FROM "${schema}".tasks WHERE job_id = $1`,
        [jobId],
      )
    ).rows;
  } finally {
    await c.end();
  }
  if (jobState !== 'succeeded') problems.push(`job ${jobId} is ${jobState}`);
  const total = treeSize(shape);
  if (rows.length !== total) problems.push(`${rows.length} tasks, expected ${total}`);

  const byId = new Map(rows.map((r) => [r.id, r]));
  const paths = new Set<string>();
  const keys = new Set<string>();
  const children = new Map<string, number>();
  for (const r of rows) {
    const p = JSON.parse(r.payload) as NodePayload;
    if (paths.has(p.path)) problems.push(`node ${p.path} exists twice`);
    paths.add(p.path);
    if (r.state !== 'succeeded') problems.push(`${p.path} ${r.id} is ${r.state}`);
    if (r.open_children !== 0) problems.push(`${p.path} ${r.id} has open_children ${r.open_children}`);
    if (r.wait_remaining !== 0) problems.push(`${p.path} ${r.id} has wait_remaining ${r.wait_remaining}`);
    const depth = p.path.split('.').length - 1;
    const leavesBelow = shape.slice(depth).reduce((a, b) => a * b, 1);
    const result = r.result === null ? null : (JSON.parse(r.result) as NodeResult);
    if (result?.leaves !== leavesBelow)
      problems.push(`${p.path} ${r.id}: result ${r.result}, expected ${leavesBelow} leaves`);
    if (r.parent_id === null) continue;
    const key = `${r.parent_id}/${r.spawn_key}`;
    if (keys.has(key)) problems.push(`duplicate child ${key}`);
    keys.add(key);
    children.set(r.parent_id, (children.get(r.parent_id) ?? 0) + 1);
    const parent = byId.get(r.parent_id);
    if (
      !parent ||
      `${(JSON.parse(parent.payload) as NodePayload).path}.${p.path.split('.').pop()}` !== p.path
    )
      problems.push(`${p.path} has the wrong parent ${r.parent_id}`);
  }
  for (const r of rows) {
    const depth = (JSON.parse(r.payload) as NodePayload).path.split('.').length - 1;
    const want = shape[depth] ?? 0;
    if ((children.get(r.id) ?? 0) !== want)
      problems.push(`${r.id} (depth ${depth}) has ${children.get(r.id) ?? 0} children, expected ${want}`);
  }

  // Executions: the 's' line opens one (task, token); 'w' and 'e' lines are its progress.
  type Exec = { tok: number; pid: number; start: number; end: number | undefined; ended: boolean };
  const execs = new Map<string, Map<number, Exec>>();
  let executions = 0;
  for (const l of runs) {
    if (l.job !== jobId) continue;
    let m = execs.get(l.task);
    if (!m) {
      m = new Map();
      execs.set(l.task, m);
    }
    const e = m.get(l.tok);
    if (l.k === 's') {
      executions++;
      if (e) problems.push(`task ${l.task}: token ${l.tok} used twice (pids ${e.pid} and ${l.pid})`);
      else m.set(l.tok, { tok: l.tok, pid: l.pid, start: l.t, end: undefined, ended: false });
      continue;
    }
    if (!e || e.pid !== l.pid) {
      problems.push(`task ${l.task}: '${l.k}' of token ${l.tok} in pid ${l.pid} without its start`);
      continue;
    }
    e.end = Math.max(e.end ?? l.t, l.t);
    if (l.k === 'e') e.ended = true;
  }
  for (const id of execs.keys()) if (!byId.has(id)) problems.push(`executions logged for unknown task ${id}`);
  for (const r of rows) {
    const list = [...(execs.get(r.id)?.values() ?? [])].sort((a, b) => a.tok - b.tok);
    if (!list.length) {
      problems.push(`task ${r.id} never ran`);
      continue;
    }
    const last = list[list.length - 1]!;
    if (last.tok !== r.run_token)
      problems.push(`task ${r.id}: last execution ran with token ${last.tok}, the task's is ${r.run_token}`);
    if (!last.ended) problems.push(`task ${r.id}: its last execution (token ${last.tok}) did not end`);
    if (!strict) continue;
    if (list.length !== r.run_token)
      problems.push(`task ${r.id}: ${list.length} executions for ${r.run_token} claims`);
    if (r.open_children === 0 && children.get(r.id) === undefined && list.length !== 1)
      problems.push(`leaf ${r.id} ran ${list.length} times`);
    // Later tokens are later claims: each must start after the previous execution let go.
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1]!;
      const cur = list[i]!;
      if (prev.end === undefined || cur.start < prev.end)
        problems.push(
          `task ${r.id}: token ${cur.tok} (pid ${cur.pid}) started at ${cur.start}, while token ${prev.tok} (pid ${prev.pid}) held it until ${prev.end}`,
        );
    }
  }
  return { problems: problems.slice(0, 50), executions, tasks: rows.length };
}
