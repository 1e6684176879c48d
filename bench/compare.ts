/**
 * `npm run bench -- --compare [--runs 3] [--only flat,fanout,latency,chain,tree] [--json]`
 *
 * dynatask's workloads beside the peers' (../shared/anchors: BullMQ 6 with native flows on
 * Redis, graphile-worker 0.17 in batch mode on PostgreSQL), interleaved: round 1 of every
 * measurement, then round 2, and so on, so that a slow minute of the machine hits everyone.
 * Each figure is the median of the rounds. One row per workload and store, with the target
 * of issue 11 and PASS or SHORT; --json prints the rows as JSON lines.
 */
import { anchorsSource, startPeers } from './peers.js';

/** What run.ts measures of one of our runs (the fields used here). */
export interface OurRow {
  seconds: number;
  tasks_per_s: number;
  p50_ms: number;
  p99_ms: number;
  [k: string]: string | number;
}

export type RunOurs = (workload: string, database: string | undefined, http: boolean) => Promise<OurRow>;

type Figures = Record<string, number>;

/** A measurement: ours in one mode, or one peer's configuration. */
interface Measure {
  key: string;
  workload: string;
  /** The figure the rounds' median is taken by. */
  by: string;
  run(): Promise<Figures>;
}

interface Row {
  workload: string;
  mode: string;
  unit: string;
  dynatask: number | null;
  bullmq: number | null;
  graphile: number | null;
  target: string;
  verdict: 'PASS' | 'SHORT' | '';
  /** Each check's ratio (or figure), compared with its bound. */
  detail: string;
}

const WORKLOADS = ['flat', 'fanout', 'latency', 'chain', 'tree'];

export async function compare(opts: {
  runOurs: RunOurs;
  runs: number;
  json: boolean;
  only?: string[];
  anchors?: string;
}): Promise<void> {
  const only = opts.only ?? WORKLOADS;
  for (const w of only)
    if (!WORKLOADS.includes(w)) throw new Error(`--compare runs ${WORKLOADS.join(', ')} (not ${w})`);
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const peers = await startPeers(anchorsSource(opts.anchors), log);
  try {
    const pgUrl = peers.postgresUrl;
    const ours = (workload: string, store: 'sqlite' | 'postgres', http: boolean, by: string): Measure => ({
      key: `${workload}:${http ? 'http' : 'in-process'}/${store}`,
      workload,
      by,
      run: async () => numbers(await opts.runOurs(workload, store === 'postgres' ? pgUrl : undefined, http)),
    });
    const peer = (
      workload: string,
      lib: string,
      bench: 'flat' | 'fanout' | 'latency',
      env: Record<string, string>,
      by: string,
    ): Measure => ({
      key: `${workload}:${lib}`,
      workload,
      by,
      run: async () => {
        const line = peers.run(bench, { LIB: lib, ...env });
        if (line.error) throw new Error(line.error);
        return numbers(line);
      },
    });
    const measures: Measure[] = [
      ...(['sqlite', 'postgres'] as const).flatMap((s) => [
        ours('flat', s, false, 'tasks_per_s'),
        ours('flat', s, true, 'tasks_per_s'),
      ]),
      peer('flat', 'bullmq', 'flat', { C: '50' }, 'process_jobs_per_s'),
      peer('flat', 'graphile', 'flat', { C: '50', BATCH: '1000' }, 'process_jobs_per_s'),
      ...(['sqlite', 'postgres'] as const).flatMap((s) => [
        ours('fanout', s, false, 'seconds'),
        ours('fanout', s, true, 'seconds'),
      ]),
      peer('fanout', 'bullmq', 'fanout', { C: '50' }, 'total_s'),
      ...(['sqlite', 'postgres'] as const).flatMap((s) => [
        ours('latency', s, false, 'p50_ms'),
        ours('latency', s, true, 'p50_ms'),
      ]),
      peer('latency', 'bullmq', 'latency', { C: '10' }, 'p50_ms'),
      peer('latency', 'graphile', 'latency', { C: '10' }, 'p50_ms'),
      ...(['sqlite', 'postgres'] as const).flatMap((s) => [
        ours('chain', s, false, 'seconds'),
        ours('tree', s, false, 'seconds'),
      ]),
    ].filter((m) => only.includes(m.workload));

    const samples = new Map<string, Figures[]>();
    for (let round = 1; round <= opts.runs; round++)
      for (const m of measures) {
        const t0 = Date.now();
        const f = await m.run();
        log(`[round ${round}/${opts.runs}] ${m.key.padEnd(28)} ${m.by} ${f[m.by]} (${Date.now() - t0} ms)`);
        samples.set(m.key, [...(samples.get(m.key) ?? []), f]);
      }
    const median = (key: string): Figures | undefined => {
      const runs = samples.get(key);
      const by = measures.find((m) => m.key === key)?.by;
      if (!runs || !by) return undefined;
      const sorted = [...runs].sort((a, b) => (a[by] ?? 0) - (b[by] ?? 0));
      return sorted[Math.floor(sorted.length / 2)];
    };
    const rows = tabulate(median, only);
    if (opts.json) for (const r of rows) console.log(JSON.stringify(r));
    else print(rows, opts.runs);
  } finally {
    peers.stop();
  }
}

function numbers(o: Record<string, unknown>): Figures {
  const out: Figures = {};
  for (const [k, v] of Object.entries(o)) if (typeof v === 'number') out[k] = v;
  return out;
}

/** The rows of the table, with the targets of issue 11. */
function tabulate(median: (key: string) => Figures | undefined, only: string[]): Row[] {
  const rows: Row[] = [];
  const fig = (key: string, field: string) => median(key)?.[field] ?? null;
  const checks = (parts: Array<[string, number | null, number, 'min' | 'max']>) => {
    // [label, value, bound, kind]: value must be >= bound (min) or <= bound (max).
    const known = parts.filter(([, v]) => v !== null && Number.isFinite(v));
    const ok =
      known.length === parts.length && known.every(([, v, b, k]) => (k === 'min' ? v! >= b : v! <= b));
    return {
      verdict: (ok ? 'PASS' : 'SHORT') as Row['verdict'],
      detail: parts.map(([l, v]) => `${l} ${v === null ? '?' : +v.toFixed(2)}`).join(', '),
    };
  };
  const div = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : a / b);

  if (only.includes('flat')) {
    const bull = fig('flat:bullmq', 'process_jobs_per_s');
    const gra = fig('flat:graphile', 'process_jobs_per_s');
    for (const store of ['sqlite', 'postgres']) {
      const inproc = fig(`flat:in-process/${store}`, 'tasks_per_s');
      const target =
        store === 'sqlite'
          ? checks([['x BullMQ', div(inproc, bull), 4, 'min']])
          : checks([
              ['x graphile', div(inproc, gra), 1, 'min'],
              ['x BullMQ', div(inproc, bull), 2, 'min'],
            ]);
      rows.push({
        workload: 'flat 20k',
        mode: `in-process/${store}`,
        unit: 'tasks/s',
        dynatask: inproc,
        bullmq: bull,
        graphile: gra,
        target: store === 'sqlite' ? '>= 4x BullMQ' : '>= 1x graphile, >= 2x BullMQ',
        ...target,
      });
      const http = fig(`flat:http/${store}`, 'tasks_per_s');
      rows.push({
        workload: 'flat 20k',
        mode: `http/${store}`,
        unit: 'tasks/s',
        dynatask: http,
        bullmq: bull,
        graphile: gra,
        target: '>= 0.8x in-process',
        ...checks([['x in-process', div(http, inproc), 0.8, 'min']]),
      });
    }
  }
  if (only.includes('fanout')) {
    const bull = fig('fanout:bullmq', 'total_s');
    for (const store of ['sqlite', 'postgres']) {
      const inproc = fig(`fanout:in-process/${store}`, 'seconds');
      const times = store === 'sqlite' ? 5 : 3;
      rows.push({
        workload: 'fan-out 10k',
        mode: `in-process/${store}`,
        unit: 's',
        dynatask: inproc,
        bullmq: bull,
        graphile: null,
        target: `>= ${times}x faster than BullMQ`,
        ...checks([['x faster', div(bull, inproc), times, 'min']]),
      });
      const http = fig(`fanout:http/${store}`, 'seconds');
      rows.push({
        workload: 'fan-out 10k',
        mode: `http/${store}`,
        unit: 's',
        dynatask: http,
        bullmq: bull,
        graphile: null,
        target: '>= 0.8x in-process rate',
        ...checks([['x in-process', div(inproc, http), 0.8, 'min']]),
      });
    }
  }
  if (only.includes('latency')) {
    const bull = median('latency:bullmq');
    const gra = median('latency:graphile');
    const graP50 = gra?.p50_ms ?? null;
    for (const store of ['sqlite', 'postgres']) {
      const f = median(`latency:in-process/${store}`);
      const p50 = f?.p50_ms ?? null;
      const p99 = f?.p99_ms ?? null;
      rows.push({
        workload: 'pick-up p50 (p99)',
        mode: `in-process/${store}`,
        unit: 'ms',
        dynatask: p50,
        bullmq: bull?.p50_ms ?? null,
        graphile: graP50,
        target: store === 'sqlite' ? 'p50 <= 1 ms, p99 <= 10 ms' : 'p50 <= graphile, p99 <= 10 ms',
        ...checks([
          ['p50', p50, store === 'sqlite' ? 1 : (graP50 ?? Number.NaN), 'max'],
          ['p99', p99, 10, 'max'],
        ]),
      });
      if (store === 'postgres') {
        const rp50 = f?.remote_p50_ms ?? null;
        rows.push({
          workload: 'pick-up p50 (p99)',
          mode: 'another process/postgres',
          unit: 'ms',
          dynatask: rp50,
          bullmq: bull?.p50_ms ?? null,
          graphile: graP50,
          target: 'p50 <= graphile, p99 <= 10 ms',
          ...checks([
            ['p50', rp50, graP50 ?? Number.NaN, 'max'],
            ['p99', f?.remote_p99_ms ?? null, 10, 'max'],
          ]),
        });
      }
      const h = median(`latency:http/${store}`);
      rows.push({
        workload: 'pick-up p50 (p99)',
        mode: `http/${store}`,
        unit: 'ms',
        dynatask: h?.p50_ms ?? null,
        bullmq: bull?.p50_ms ?? null,
        graphile: graP50,
        target: '',
        verdict: '',
        detail: `p99 ${h?.p99_ms ?? '?'}`,
      });
    }
  }
  for (const [workload, label, bounds] of [
    ['chain', 'chain of 1,000', { sqlite: 0.3, postgres: 3 }],
    ['tree', 'tree of 11,111', { postgres: 1.5 }],
  ] as const) {
    if (!only.includes(workload)) continue;
    for (const store of ['sqlite', 'postgres'] as const) {
      const s = fig(`${workload}:in-process/${store}`, 'seconds');
      const bound = (bounds as Partial<Record<string, number>>)[store];
      rows.push({
        workload: label,
        mode: `in-process/${store}`,
        unit: 's',
        dynatask: s,
        bullmq: null,
        graphile: null,
        target: bound ? `< ${bound} s` : '',
        ...(bound ? checks([['s', s, bound, 'max']]) : { verdict: '' as const, detail: '' }),
      });
    }
  }
  return rows;
}

function print(rows: Row[], runs: number) {
  const fmt = (v: number | null, unit: string) =>
    v === null
      ? ''
      : unit === 'tasks/s'
        ? Math.round(v).toLocaleString('en-US')
        : v.toFixed(unit === 's' ? 2 : 2);
  const header = [
    'workload',
    'mode',
    'unit',
    'dynatask',
    'BullMQ',
    'graphile',
    'target',
    'verdict',
    'figures',
  ];
  const lines = rows.map((r) => [
    r.workload,
    r.mode,
    r.unit,
    fmt(r.dynatask, r.unit),
    fmt(r.bullmq, r.unit),
    fmt(r.graphile, r.unit),
    r.target,
    r.verdict,
    r.detail,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (l: string[]) =>
    l
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  console.log(
    `\nmedian of ${runs} interleaved rounds; peers: BullMQ 6 (Redis; concurrency 50, native flows), graphile-worker 0.17 (PostgreSQL; flat in batch mode 1000)`,
  );
  console.log(row(header));
  for (const l of lines) console.log(row(l));
}
