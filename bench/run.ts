/**
 * `npm run bench [-- --json] [-- --only flat,fanout] [-- --database PATH|URL] [-- --http]`
 *
 * Runs each workload in a fresh child process on a fresh database: a new SQLite file, or,
 * given a postgres:// URL, a new schema on that server (dropped afterwards). Prints a table,
 * or one JSON object per line with --json.
 *
 * With --http, each run starts a dynatask server process on that database, and the workload's
 * process is one remote worker (and submitter) talking to it over HTTP (mode `http/<store>`).
 *
 * With --python (flat and latency only), each workload runs three times, each on a fresh database behind a
 * server process of its own: with the TypeScript remote worker as --http does, then with one
 * Python worker process (sdk/python/bench/workloads.py) whose handlers are plain functions
 * (`python-sync/<store>`, on its thread pool) and coroutines (`python-async/<store>`). The
 * Python is $DYNATASK_PYTHON, else the .venv at the repository root (`npm run test:python`
 * creates it).
 *
 * With --rust (flat and latency only), each workload also runs with one Rust worker process
 * (sdk/rust/examples/bench.rs, built first with `cargo build --release`; mode `rust/<store>`),
 * on a fresh database behind a server process of its own. With --python too, all four run.
 *
 * With --compare, beside the peers in one interleaved run (median of 3): see compare.ts.
 * With --growth, one job of 1k to 1M tasks: the time per task as a job grows.
 */
import { execFileSync, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import pg from 'pg';
import { open } from '../src/index.js';
import { buildServer } from '../src/server/server.js';
import { isPostgresUrl } from '../src/store/open.js';
import { parsePostgresUrl } from '../src/store/postgres/postgres-store.js';
import { compare } from './compare.js';
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

async function child(name: string, database: string, serverStore?: string) {
  const w = WORKLOADS[name]!;
  const dt = await open({ database });
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  const size = Number(process.env.DYNATASK_BENCH_SIZE || w.size);
  const f: Figures = await w.run(dt, size, database);
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
  await dt.close();
  const lat = [...f.latencies].sort((a, b) => a - b);
  const row: Row = {
    workload: name,
    mode: serverStore ? `http/${serverStore}` : `in-process/${dt.store.kind}`,
    tasks: f.tasks,
    seconds: +f.seconds.toFixed(3),
    tasks_per_s: Math.round(f.tasks / f.seconds),
    p50_ms: +percentile(lat, 50).toFixed(2),
    p99_ms: +percentile(lat, 99).toFixed(2),
    peak_rss_mb: Math.round(peak / 1024 / 1024),
    cpu_s: +((process.cpuUsage().user + process.cpuUsage().system) / 1e6).toFixed(2),
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
    .option(
      '--runs <n>',
      'runs per workload; the median by seconds is reported (default 1; 3 with --compare)',
    )
    .option('--http', 'through a dynatask server process: the workload runs as one remote worker')
    .option('--compare', 'beside the peers (BullMQ, graphile-worker) in one interleaved run: see compare.ts')
    .option(
      '--growth [sizes]',
      'one job of each size (default 1000,10000,100000,1000000 tasks): the time per task as a job grows, peak memory, database size',
    )
    .option('--anchors <dir>', 'the peer benchmark scripts for --compare (default: ../shared/anchors)')
    .option(
      '--python',
      'flat and latency also with one Python worker process (sync and async handlers), through a server',
    )
    .option('--rust', 'flat and latency also with one Rust worker process, through a server')
    .parse();
  const opts = program.opts<{
    json?: boolean;
    only?: string;
    database?: string;
    runs?: string;
    http?: boolean;
    python?: boolean;
    compare?: boolean;
    anchors?: string;
    growth?: string | boolean;
    rust?: boolean;
  }>();
  if (opts.compare)
    return compare({
      runOurs: (name, db, http) => runOnce(name, db, http),
      runs: Number(opts.runs ?? 3),
      json: opts.json ?? false,
      ...(opts.only ? { only: opts.only.split(',') } : {}),
      ...(opts.anchors ? { anchors: opts.anchors } : {}),
    });
  const database = opts.database ?? process.env.DYNATASK_DATABASE_URL;
  if (opts.growth) return growth(opts.growth, database, opts.http ?? false, opts.json ?? false);
  const names = opts.only ? opts.only.split(',') : Object.keys(WORKLOADS);
  for (const n of names) if (!WORKLOADS[n]) throw new Error(`unknown workload ${n}`);
  if (!opts.json)
    console.log(
      'workload  mode                 tasks    seconds  tasks/s   p50 ms  p99 ms  peak MB  db MB/M tasks',
    );
  if ((opts.python || opts.rust) && names.some((n) => !PYTHON_WORKLOADS.includes(n)))
    throw new Error(`--python and --rust run ${PYTHON_WORKLOADS.join(' and ')} only (--only flat,latency)`);
  const modes: Array<WorkerMode | undefined> = [
    undefined,
    ...(opts.python ? (['sync', 'async'] as const) : []),
    ...(opts.rust ? (['rust'] as const) : []),
  ];
  if (opts.rust) buildRust();
  const viaServer = (opts.http ?? false) || (opts.python ?? false) || (opts.rust ?? false);
  for (const [name, worker] of names.flatMap((n) => modes.map((m) => [n, m] as const))) {
    const runs: Row[] = [];
    for (let i = 0; i < Number(opts.runs ?? 1); i++)
      runs.push(await runOnce(name, database, viaServer, worker));
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

/** The `grow` workload at each size, each on a fresh database; the time per task against the smallest. */
async function growth(sizes: string | true, database: string | undefined, http: boolean, json: boolean) {
  const ns = (sizes === true ? '1000,10000,100000,1000000' : sizes).split(',').map(Number);
  if (!json)
    console.log('tasks in the job   seconds  µs per task  vs first  peak MB  server peak MB  db MB/M tasks');
  let first: number | undefined;
  for (const n of ns) {
    process.env.DYNATASK_BENCH_SIZE = String(n);
    const row = await runOnce('grow', database, http);
    const perTask = (row.seconds / row.tasks) * 1e6;
    first ??= perTask;
    const out = { ...row, us_per_task: +perTask.toFixed(1), vs_first: +(perTask / first).toFixed(2) };
    if (json) console.log(JSON.stringify(out));
    else
      console.log(
        `${String(row.tasks).padStart(16)} ${row.seconds.toFixed(2).padStart(9)} ${perTask.toFixed(1).padStart(12)} ${out.vs_first.toFixed(2).padStart(9)} ${String(row.peak_rss_mb).padStart(8)} ${String(row.server_peak_rss_mb ?? '').padStart(15)} ${String(row.db_mb_per_m_tasks ?? '').padStart(14)}`,
      );
  }
  delete process.env.DYNATASK_BENCH_SIZE;
}

/** One run of a workload on a fresh database, measured, then deleted. */
async function runOnce(
  name: string,
  database: string | undefined,
  http: boolean,
  worker?: WorkerMode,
): Promise<Row> {
  const run = (db: string) => (http ? runViaServer(name, db, worker) : runChild(name, db));
  if (database && isPostgresUrl(database)) {
    const server = parsePostgresUrl(database).url;
    const schema = `bench_${randomBytes(6).toString('hex')}`;
    const url = `${server}${server.includes('?') ? '&' : '?'}schema=${schema}`;
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    try {
      const row = await run(url);
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
  if (database) return run(database);
  const dir = mkdtempSync(join(tmpdir(), 'dynatask-bench-'));
  try {
    const file = join(dir, 'bench.db');
    const row = await run(file);
    const bytes = [file, `${file}-wal`].reduce((n, f) => n + (existsSync(f) ? statSync(f).size : 0), 0);
    return withSize(row, bytes);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function withSize(row: Row, bytes: number): Row {
  return { ...row, db_mb_per_m_tasks: Math.round((bytes / 1024 / 1024) * (1_000_000 / row.tasks)) };
}

function runChild(name: string, database: string, serverStore?: string): Promise<Row> {
  return new Promise((resolve, reject) => {
    const p = fork(
      new URL(import.meta.url),
      ['--child', name, database, ...(serverStore ? [serverStore] : [])],
      {
        execArgv: ['--expose-gc', '--import', 'tsx'],
      },
    );
    let row: Row | undefined;
    p.on('message', (m) => {
      row = m as Row;
    });
    p.on('exit', (code) => (row ? resolve(row) : reject(new Error(`workload ${name} exited ${code}`))));
  });
}

/** Starts a server process on `database`, runs the workload's process against it, stops the server. */
async function runViaServer(name: string, database: string, worker?: WorkerMode): Promise<Row> {
  const server = fork(new URL(import.meta.url), ['--server', database], { execArgv: ['--import', 'tsx'] });
  const exited = new Promise<number | null>((r) => server.once('exit', r));
  let stopped = false;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      server.once('message', (m) => resolve((m as { url: string }).url));
      server.once('exit', (code) => reject(new Error(`bench server exited ${code}`)));
    });
    const store = isPostgresUrl(database) ? 'postgres' : 'sqlite';
    const row =
      worker === 'rust'
        ? runRust(name, url, store)
        : worker
          ? runPython(name, url, store, worker)
          : await runChild(name, url, store);
    // The server's own peak: with a remote worker, the server holds no handler state.
    const peak = new Promise<number>((r) =>
      server.once('message', (m) => r((m as { peakRssMb: number }).peakRssMb)),
    );
    stopped = true;
    server.send({ type: 'stop' });
    return { ...row, server_peak_rss_mb: await peak };
  } finally {
    if (!stopped) server.send({ type: 'stop' });
    await exited;
  }
}

type PythonMode = 'sync' | 'async';
/** The worker of a run through a server besides the TypeScript one. */
type WorkerMode = PythonMode | 'rust';
const PYTHON_WORKLOADS = ['flat', 'latency'];

/** The workload in one Python worker process (sdk/python/bench/workloads.py) against the server at `url`. */
function runPython(name: string, url: string, store: string, mode: PythonMode): Row {
  const root = new URL('..', import.meta.url).pathname;
  const venv = join(root, '.venv', 'bin', 'python');
  const python = process.env.DYNATASK_PYTHON ?? (existsSync(venv) ? venv : undefined);
  if (!python)
    throw new Error(
      '--python: no .venv at the repository root (`npm run test:python` creates it), nor $DYNATASK_PYTHON',
    );
  const out = execFileSync(
    python,
    [join(root, 'sdk', 'python', 'bench', 'workloads.py'), url, name, mode, String(WORKLOADS[name]!.size)],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const figures = JSON.parse(out.trim().split('\n').pop()!) as Omit<Row, 'workload' | 'mode'>;
  return { workload: name, mode: `python-${mode}/${store}`, ...figures } as Row;
}

const cargoEnv = () => ({
  ...process.env,
  PATH: `${process.env.PATH ?? ''}:${join(homedir(), '.cargo', 'bin')}`,
  CARGO_TARGET_DIR: process.env.CARGO_TARGET_DIR || join(homedir(), '.cache', 'dynatask', 'cargo-target'),
});

/** Builds sdk/rust/examples/bench.rs (optimised) once, before the runs; no cargo fails. */
function buildRust() {
  const crate = new URL('../sdk/rust', import.meta.url).pathname;
  try {
    execFileSync('cargo', ['build', '--release', '--locked', '--example', 'bench'], {
      cwd: crate,
      env: cargoEnv(),
      stdio: ['ignore', 'inherit', 'inherit'],
    });
  } catch (e) {
    throw new Error(`--rust: cannot build the Rust benchmark (is cargo installed?): ${(e as Error).message}`);
  }
}

/** The workload in one Rust worker process (sdk/rust/examples/bench.rs) against the server at `url`. */
function runRust(name: string, url: string, store: string): Row {
  const bin = join(cargoEnv().CARGO_TARGET_DIR, 'release', 'examples', 'bench');
  const out = execFileSync(bin, [url, name, String(WORKLOADS[name]!.size)], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const figures = JSON.parse(out.trim().split('\n').pop()!) as Omit<Row, 'workload' | 'mode'>;
  return { workload: name, mode: `rust/${store}`, ...figures } as Row;
}

/** The server process of --http: serves `database` on a free port until told to stop. */
async function serve(database: string) {
  const dt = await open({ database });
  const server = await buildServer({ dt });
  process.send!({ url: await server.listen({ port: 0 }) });
  let peak = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 20);
  process.once('message', async () => {
    clearInterval(sampler);
    peak = Math.max(peak, process.memoryUsage().rss, process.resourceUsage().maxRSS * 1024);
    process.send!({ peakRssMb: Math.round(peak / 1024 / 1024) });
    await server.close();
    await dt.close();
    process.exit(0);
  });
}

if (process.argv[2] === '--child') await child(process.argv[3]!, process.argv[4]!, process.argv[5]);
else if (process.argv[2] === '--server') await serve(process.argv[3]!);
else await main();
