/**
 * `npm run bench [-- --json] [-- --only flat,fanout] [-- --database PATH]`
 *
 * Runs each workload in a fresh child process on a fresh SQLite file (or the given
 * database), and prints a table, or one JSON object per line with --json.
 */
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { open } from '../src/index.js';
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
  const f: Figures = await w.run(dt, w.size);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
  await dt.close();
  const lat = [...f.latencies].sort((a, b) => a - b);
  const row: Row = {
    workload: name,
    mode: 'in-process/sqlite',
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
    .option('--database <path>', 'SQLite file (default: a fresh temp file per workload)')
    .option('--runs <n>', 'runs per workload; the median by seconds is reported', '1')
    .parse();
  const opts = program.opts<{ json?: boolean; only?: string; database?: string; runs: string }>();
  const names = opts.only ? opts.only.split(',') : Object.keys(WORKLOADS);
  for (const n of names) if (!WORKLOADS[n]) throw new Error(`unknown workload ${n}`);
  if (!opts.json)
    console.log('workload  mode               tasks    seconds  tasks/s   p50 ms  p99 ms  peak MB');
  for (const name of names) {
    const runs: Row[] = [];
    for (let i = 0; i < Number(opts.runs); i++) {
      const dir = mkdtempSync(join(tmpdir(), 'dynatask-bench-'));
      const database = opts.database ?? join(dir, 'bench.db');
      runs.push(await runChild(name, database));
      rmSync(dir, { recursive: true, force: true });
    }
    runs.sort((a, b) => a.seconds - b.seconds);
    const row = runs[Math.floor(runs.length / 2)]!;
    if (opts.json) console.log(JSON.stringify(row));
    else
      console.log(
        `${row.workload.padEnd(9)} ${row.mode.padEnd(18)} ${String(row.tasks).padStart(6)} ${row.seconds.toFixed(3).padStart(9)} ${String(row.tasks_per_s).padStart(8)} ${row.p50_ms.toFixed(2).padStart(8)} ${row.p99_ms.toFixed(2).padStart(7)} ${String(row.peak_rss_mb).padStart(8)}` +
          (row.enqueue_per_s ? `   (enqueue ${Math.round(row.enqueue_per_s as number)}/s)` : ''),
      );
  }
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
