/**
 * The `dynatask` command, run as users run it: the built bin/dynatask.js in a child process
 * (`npm test` builds dist/ before running the tests).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin', 'dynatask.js');

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

// The tests choose the database themselves: not one from the environment running them.
const { DYNATASK_DATABASE_URL: _ignored, ...baseEnv } = process.env;

function dynatask(args: string[], env: Record<string, string> = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { cwd: dir, env: { ...baseEnv, ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A user error: one line naming the problem, and no stack trace. */
function expectUserError(r: Ran, message: RegExp): void {
  expect(r.code).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/^\s+at /m);
}

let dir: string;
let db: string;

beforeAll(() => {
  if (!existsSync(join(root, 'dist', 'cli', 'main.js')))
    throw new Error('dist/cli/main.js is missing: run `npm run build` first (`npm test` does)');
  dir = mkdtempSync(join(tmpdir(), 'dynatask-cli-'));
  db = join(dir, 'demo.db');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('dynatask demo', () => {
  let jobId: string;

  it('runs the demo job tree with progress, prints a summary and exits 0', async () => {
    const r = await dynatask(['demo', '--database', db, '--work-ms', '20']);
    expect(r.stderr).toMatch(/\d+\/34 tasks settled/); // the progress bar (not a TTY: one line per tick)
    expect(r.stdout).toMatch(/^job \S+ succeeded in /m);
    expect(r.stdout).toContain('34 total: 34 succeeded');
    expect(r.stdout).toMatch(/retried\s+validate schema of chunk 1/);
    expect(r.stdout).toContain('"checksPassed": 24');
    expect(r.code).toBe(0);
    jobId = /^job (\S+) succeeded/m.exec(r.stdout)![1]!;
  });

  it('shows the job it ran, with its tasks counted by state', async () => {
    const r = await dynatask(['job', jobId, '--database', db, '--json']);
    expect(r.code).toBe(0);
    const job = JSON.parse(r.stdout);
    expect(job).toMatchObject({ id: jobId, state: 'succeeded', namespace: 'demo', total: 34 });
    expect(job.counts.succeeded).toBe(34);

    const listed = await dynatask(['jobs', '--namespace', 'demo', '--database', db]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toMatch(new RegExp(`^${jobId}\\s+ingest\\s+succeeded`, 'm'));

    const task = await dynatask(['task', job.rootTaskId, '--database', db]);
    expect(task.code).toBe(0);
    expect(task.stdout).toMatch(/state\s+succeeded/);
  });

  it('exits 1 when the job fails, naming the failed check and the skipped step', async () => {
    const r = await dynatask(['demo', '--database', db, '--work-ms', '20', '--fail', '--no-progress']);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/^job \S+ failed in /m);
    expect(r.stdout).toMatch(/failed\s+validate range of chunk 2: range check: row \d+ has amount/);
    expect(r.stdout).toMatch(/skipped\s+publish: dependency \S+ \(chunk\) failed/);
  });

  it('uses $DYNATASK_DATABASE_URL when --database is not given', async () => {
    const envDb = join(dir, 'from-env.db');
    const r = await dynatask(['demo', '--chunks', '2', '--work-ms', '10', '--json'], {
      DYNATASK_DATABASE_URL: envDb,
    });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ database: envDb, job: { state: 'succeeded', total: 10 } });
  });
});

describe('dynatask commands on bad input', () => {
  it('names an unknown job or task id and exits 1', async () => {
    expectUserError(await dynatask(['job', 'no-such-job', '--database', db]), /job no-such-job not found/);
    expectUserError(
      await dynatask(['task', 'no-such-task', '--database', db]),
      /task no-such-task not found/,
    );
    expectUserError(await dynatask(['cancel', 'no-such-job', '--database', db]), /job no-such-job not found/);
  });

  it('refuses a database that does not exist instead of creating an empty one', async () => {
    const missing = join(dir, 'missing.db');
    expectUserError(await dynatask(['jobs', '--database', missing]), /no database at .*missing\.db/);
    expect(existsSync(missing)).toBe(false);
  });

  it('rejects bad options with a message', async () => {
    expectUserError(
      await dynatask(['purge', '--older-than', 'soon', '--database', db]),
      /invalid duration "soon"/,
    );
    expectUserError(await dynatask(['jobs', '--state', 'done', '--database', db]), /Allowed choices/);
    expectUserError(await dynatask(['demo', '--chunks', '0', '--database', db]), /--chunks/);
    expectUserError(await dynatask(['frobnicate']), /unknown command 'frobnicate'/);
  });

  it('purges settled jobs older than a duration', async () => {
    const kept = await dynatask(['purge', '--older-than', '1h', '--database', db, '--json']);
    expect(kept.code).toBe(0);
    expect(JSON.parse(kept.stdout)).toEqual({ purged: 0, olderThanMs: 3_600_000 });
    const other = await dynatask(['purge', '--older-than', '0s', '--database', db]);
    expect(other.stdout).toMatch(/^purged 0 jobs of namespace default/);
    const purged = await dynatask(['purge', '--older-than', '0s', '--namespace', 'demo', '--database', db]);
    expect(purged.code).toBe(0);
    expect(purged.stdout).toMatch(/^purged 2 jobs of namespace demo settled more than 0 ms ago/);
  });
});

describe('dynatask migrate', () => {
  it('lists pending migrations with --check, applies them, and then finds the schema up to date', async () => {
    const fresh = join(dir, 'fresh.db');
    const before = await dynatask(['migrate', '--check', '--database', fresh, '--json']);
    expect(before.code).toBe(1);
    expect(JSON.parse(before.stdout)).toEqual({
      database: 'sqlite',
      pending: ['001_init.sql', '002_slots.sql'],
    });
    const applied = await dynatask(['migrate', '--database', fresh]);
    expect(applied).toMatchObject({ code: 0, stdout: 'applied 001_init.sql, 002_slots.sql\n' });
    expect((await dynatask(['migrate', '--database', fresh])).stdout).toBe('the schema is up to date\n');
    expect((await dynatask(['migrate', '--check', '--database', fresh])).code).toBe(0);
  });

  it('refuses a server URL: it migrates the database itself', async () => {
    expectUserError(
      await dynatask(['migrate', '--database', 'http://127.0.0.1:1']),
      /migrate needs the database itself/,
    );
  });
});
