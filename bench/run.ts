/**
 * `npm run bench [-- --json] [-- --only flat,fanout] [-- --database PATH|URL]`
 *
 * Runs each workload in a fresh child process on a fresh database: a new SQLite file, or,
 * given a postgres:// URL, a new schema on that server (dropped afterwards). Prints a table,
 * or one JSON object per line with --json.
 */
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import pg from 'pg';
import { open } from '../src/index.js';
import { isPostgresUrl } from '../src/store/open.js';
import { parsePostgresUrl } from '../src/store/postgres/postgres-store.js';
import { type Figures, WORKLOADS } from './workloads.js';

interface Row {
  workload: string;
  mode: string;
  tasks: number;
  seconds: number;
  tasks_per_s: number;
  p50_ms: number;
  p99_ms: number;
  peak_rss_mb: number;
  /** Also db_mb_per_m_tasks: the database's size after the run (tables, indexes, WAL file) per million tasks. */
  [k: string]: string | number;
}

function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function child(name: string, database: string) {
  const w = WORKLOADS[name]!;
  const dt = await open({ database });
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const f: Figures = await w.run(dt, w.size, database);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
  await dt.close();
  const lat = [...f.latencies].sort((a, b) => a - b);
  const row: Row = {
    workload: name,
    mode: `in-process/${dt.store.kind}`,
    tasks: f.tasks,
    seconds: +f.seconds.toFixed(3),
    tasks_per_s: Math.round(f.tasks / f.seconds),
    p50_ms: +percentile(lat, 50).toFixed(2),
    p99_ms: +percentile(lat, 99).toFixed(2),
    peak_rss_mb: Math.round(peak / 1024 / 1024),
  };
  for (const [k, v] of Object.entries(f.extra ?? {})) row[k] = +v.toFixed(3);
  process.send!(row);
}

async function main() {
  const program = new Command()
    .name('bench')
    .option('--json', 'one JSON object per line')
    .option('--only <names>', `comma-separated workloads (${Object.keys(WORKLOADS).join(', ')})`)
    .option(
      '--database <path|url>',
      'a SQLite file, or a postgres:// URL: each run gets a fresh schema there (default: a fresh temp SQLite file per run)',
    )
    .option('--runs <n>', 'runs per workload; the median by seconds is reported', '1')
    .parse();
  const opts = program.opts<{ json?: boolean; only?: string; database?: string; runs: string }>();
  const database = opts.database ?? process.env.DYNATASK_DATABASE_URL;
  const names = opts.only ? opts.only.split(',') : Object.keys(WORKLOADS);
  for (const n of names) if (!WORKLOADS[n]) throw new Error(`unknown workload ${n}`);
  if (!opts.json)
    console.log(
      'workload  mode                 tasks    seconds  tasks/s   p50 ms  p99 ms  peak MB  db MB/M tasks',
    );
  for (const name of names) {
    const runs: Row[] = [];
    for (let i = 0; i < Number(opts.runs); i++) runs.push(await runOnce(name, database));
    runs.sort((a, b) => a.seconds - b.seconds);
    const row = runs[Math.floor(runs.length / 2)]!;
    if (opts.json) console.log(JSON.stringify(row));
    else
      console.log(
        `${row.workload.padEnd(9)} ${row.mode.padEnd(20)} ${String(row.tasks).padStart(6)} ${row.seconds.toFixed(3).padStart(9)} ${String(row.tasks_per_s).padStart(8)} ${row.p50_ms.toFixed(2).padStart(8)} ${row.p99_ms.toFixed(2).padStart(7)} ${String(row.peak_rss_mb).padStart(8)} ${String(row.db_mb_per_m_tasks ?? '').padStart(14)}` +
          (row.enqueue_per_s ? `   (enqueue ${Math.round(row.enqueue_per_s as number)}/s)` : '') +
          (row.remote_p50_ms
            ? `   (from another instance: p50 ${row.remote_p50_ms} ms, p99 ${row.remote_p99_ms} ms)`
            : ''),
      );
  }
}

/** One run of a workload on a fresh database, measured, then deleted. */
async function runOnce(name: string, database: string | undefined): Promise<Row> {
  if (database && isPostgresUrl(database)) {
    const server = parsePostgresUrl(database).url;
    const schema = `bench_${randomBytes(6).toString('hex')}`;
    const url = `${server}${server.includes('?') ? '&' : '?'}schema=${schema}`;
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    try {
      const row = await runChild(name, url);
      const { rows } = await client.query<{ bytes: string | null }>(
        `SELECT sum(pg_total_relation_size(c.oid)) AS bytes
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = $1 AND c.relkind = 'r'`,
        [schema],
      );
      return withSize(row, Number(rows[0]?.bytes ?? 0));
    } finally {
      await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await client.end();
    }
  }
  if (database) return runChild(name, database);
  const dir = mkdtempSync(join(tmpdir(), 'dynatask-bench-'));
  try {
    const file = join(dir, 'bench.db');
    const row = await runChild(name, file);
    const bytes = [file, `${file}-wal`].reduce((n, f) => n + (existsSync(f) ? statSync(f).size : 0), 0);
    return withSize(row, bytes);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function withSize(row: Row, bytes: number): Row {
  return { ...row, db_mb_per_m_tasks: Math.round((bytes / 1024 / 1024) * (1_000_000 / row.tasks)) };
}

function runChild(name: string, database: string): Promise<Row> {
  return new Promise((resolve, reject) => {
    const p = fork(new URL(import.meta.url), ['--child', name, database], {
      execArgv: ['--expose-gc', '--import', 'tsx'],
    });
    let row: Row | undefined;
    p.on('message', (m) => {
      row = m as Row;
    });
    p.on('exit', (code) => (row ? resolve(row) : reject(new Error(`workload ${name} exited ${code}`))));
  });
}

if (process.argv[2] === '--child') await child(process.argv[3]!, process.argv[4]!);
else await main();
