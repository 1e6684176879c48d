/**
 * A TypeScript remote worker for the Python SDK's tests: opens dynatask on the server URL it is
 * given and serves the task types it is given with the handlers below; prints one JSON line
 * `{"ready": true, "pid": ...}` on stdout once it serves, and drains on SIGTERM.
 *
 *   node --import tsx sdk/python/tests/ts/worker.ts '{"url": "http://...", "types": ["echo"]}'
 */
import { NonRetryableError, open } from '../../../../src/index.js';

interface Config {
  url: string;
  types: string[];
  namespace?: string;
}

const config = JSON.parse(process.argv[2] ?? '{}') as Config;
const dt = await open({ database: config.url, ...(config.namespace ? { namespace: config.namespace } : {}) });

type Payload = Record<string, unknown> | null;
const handlers: Record<string, () => void> = {
  // Returns its payload.
  echo: () => dt.handle('echo', async (_ctx, p) => p),
  // Fails every attempt with the payload's message (retryable unless `final`).
  fail: () =>
    dt.handle('fail', async (_ctx, p) => {
      const { message = 'boom', final = false } = (p ?? {}) as { message?: string; final?: boolean };
      throw final ? new NonRetryableError(message) : new Error(message);
    }),
  // Fails its first attempt, succeeds afterwards (for retries).
  flaky: () =>
    dt.handle('flaky', async (ctx) => {
      if (ctx.task.attempt === 1) throw new Error('first attempt fails');
      return { attempt: ctx.task.attempt };
    }),
  // Reports `steps` progress values, then returns their count.
  progress: () =>
    dt.handle('progress', async (ctx, p) => {
      const steps = ((p as Payload)?.steps as number | undefined) ?? 3;
      for (let i = 1; i <= steps; i++) await ctx.progress({ done: i, of: steps });
      return { steps };
    }),
  // Spawns `children` echo children and returns their results.
  parent: () =>
    dt.handle('parent', async (ctx, p) => {
      const n = ((p as Payload)?.children as number | undefined) ?? 2;
      const kids = await ctx.spawnMany(
        Array.from({ length: n }, (_, i) => ({ type: 'echo', payload: { i } })),
      );
      return await ctx.waitAll(kids);
    }),
};
for (const t of config.types) {
  const register = handlers[t];
  if (!register) throw new Error(`ts/worker.ts: no handler for ${t}`);
  register();
}
await dt.start();
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);

for (const s of ['SIGTERM', 'SIGINT'] as const)
  process.once(s, async () => {
    await dt.close({ graceMs: 2000 });
    process.exit(0);
  });
