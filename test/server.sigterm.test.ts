/**
 * `dynatask server` as a real child process: a job runs through it, SIGTERM arrives while a
 * claim long-polls and a worker holds tasks; the process drains and exits 0, and a server
 * started again on the same SQLite file finishes the job with nothing lost or run twice. And
 * bad configuration is refused with exit 1 and a message.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { killServerProcesses, startServerProcess } from './fixtures/cli-server.js';
import { fanOutHandlers, type Loose, runWorker, type TestServer } from './fixtures/http.js';

const dir = mkdtempSync(join(tmpdir(), 'dynatask-sigterm-'));
afterAll(() => {
  killServerProcesses();
  rmSync(dir, { recursive: true, force: true });
});

it('SIGTERM mid-claim: drains, exits 0, and no task is lost', async () => {
  const database = join(dir, 'db.sqlite');
  const first = await startServerProcess(database);
  const leaves = 12;
  const job = (await first.call('POST', '/v1/jobs', { jobs: [{ type: 'root', payload: { n: leaves } }] }))
    .body.jobs[0];

  // The root spawns its leaves and suspends in its wait.
  const root = (await first.call('POST', '/v1/worker/claim', { types: ['root'], limit: 1 })).body.tasks[0];
  expect(await fanOutHandlers().root!(root, first as unknown as TestServer)).toBeTypeOf('symbol');
  // A worker holds five leaves (claimed, not yet reported) when the signal comes.
  const held = (await first.call('POST', '/v1/worker/claim', { types: ['leaf'], limit: 5 })).body.tasks;
  expect(held).toHaveLength(5);
  // Another worker is parked in a long poll.
  const poll = first.call('POST', '/v1/worker/claim', { types: ['idle'], limit: 1, waitMs: 30_000 });
  for (;;) {
    const m = (await first.call('GET', '/metrics')).body as string;
    if (/dynatask_claim_long_polls 1/.test(m)) break;
  }
  const t0 = Date.now();
  first.child.kill('SIGTERM');
  const answered = await poll;
  expect(answered.status).toBe(200);
  expect(answered.body).toEqual({ tasks: [] });
  expect(Date.now() - t0).toBeLessThan(10_000); // drained, not timed out
  expect(await first.exited).toEqual({ code: 0, signal: null });
  expect(first.logs.map((l) => l.msg)).toContain('dynatask server stopped');

  // Restarted on the same file: the held leaves are still the worker's (their leases run), and
  // the rest of the job finishes.
  const second = await startServerProcess(database);
  const report = await second.call('POST', '/v1/worker/report', {
    completed: held.map((t: Loose) => ({ id: t.id, token: t.token, result: t.payload.i + 1 })),
  });
  expect(report.body.completed).toEqual(held.map(() => 'ok'));
  await runWorker(
    second,
    fanOutHandlers(),
    async () => (await second.call('GET', `/v1/jobs/${job.jobId}`)).body.state !== 'running',
  );
  const info = (await second.call('GET', `/v1/jobs/${job.jobId}`)).body;
  expect(info).toMatchObject({ state: 'succeeded', total: leaves + 1, result: (leaves * (leaves + 1)) / 2 });
  expect(info.counts.succeeded).toBe(leaves + 1);
  const tasks = (await second.call('GET', `/v1/jobs/${job.jobId}/tasks`)).body.tasks;
  expect(tasks.filter((t: Loose) => t.attempt !== 1)).toEqual([]);
  second.child.kill('SIGINT');
  expect(await second.exited).toEqual({ code: 0, signal: null });
}, 60_000);

it('refuses bad configuration with exit 1 and a message: tokens, an http:// database', async () => {
  const cli = (args: string[], env: Record<string, string> = {}) =>
    spawnSync(
      process.execPath,
      ['--import', 'tsx', 'test/fixtures/cli.ts', 'server', '--port', '0', ...args],
      {
        cwd: new URL('..', import.meta.url),
        env: { ...process.env, ...env },
        encoding: 'utf8',
      },
    );
  const bad = cli(['--database', join(dir, 'x.db')], { DYNATASK_TOKENS: 'ci:root:0123456789abcdef' });
  expect(bad.status).toBe(1);
  expect(bad.stderr).toContain('$DYNATASK_TOKENS: token "ci": unknown scope "root"');
  const remote = cli(['--database', 'http://127.0.0.1:7077']);
  expect(remote.status).toBe(1);
  expect(remote.stderr).toContain('the server needs a database, not another server');
});
