/** The examples are documentation: each runs, and the README shows the same code. */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';

const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'dynatask-examples-'));

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

it('examples/quickstart.ts runs and prints the job result', async () => {
  // `dynatask` resolves to this package itself (package.json "exports"), so dist/ must be built.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', join(root, 'examples', 'quickstart.ts')],
    {
      cwd: root,
      env: { ...process.env, DYNATASK_DATABASE_URL: join(dir, 'quickstart.db') },
      timeout: 60_000,
    },
  );
  expect(stdout.trim()).toBe('{ rows: 4, invalid: 1 }');
});

it('README.md shows examples/quickstart.ts as it is', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const example = readFileSync(join(root, 'examples', 'quickstart.ts'), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  expect(blocks).toContain(example);
});
