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

/** Runs examples/<name>.ts as its own process, on a database file of its own; returns its stdout. */
async function run(name: string, args: string[] = []): Promise<string> {
  // `dynatask` resolves to this package itself (package.json "exports"), so dist/ must be built.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', join(root, 'examples', `${name}.ts`), ...args],
    {
      cwd: root,
      env: { ...process.env, DYNATASK_DATABASE_URL: join(dir, `${name}.db`) },
      timeout: 60_000,
    },
  );
  return stdout;
}

it('examples/quickstart.ts runs and prints the job result', async () => {
  expect((await run('quickstart')).trim()).toBe('{ rows: 4, invalid: 1 }');
});

it('examples/crawler.ts fetches every reachable page once, at most two at once per host', async () => {
  const out = await run('crawler');
  const lines = out.trim().split('\n');
  const pages = [
    'https://blog.example/',
    'https://blog.example/review-p3',
    'https://shop.example/',
    'https://shop.example/about',
    'https://shop.example/cart',
    'https://shop.example/p/1',
    'https://shop.example/p/2',
    'https://shop.example/p/3',
    'https://shop.example/p/4',
  ];
  // Each page once: a page counted by two parents would show twice here.
  expect(lines.slice(0, 1 + pages.length)).toEqual([
    `pages found: ${pages.length}`,
    ...pages.map((p) => `  ${p}`),
  ]);
  expect(lines).toContain('broken links: https://shop.example/missing');
  // One fetch per unique URL, the broken one included: dedup keys, and steps across re-runs.
  expect(lines).toContain(`fetches: ${pages.length + 1} (repeated: 0)`);
  const most = Object.fromEntries(
    lines.flatMap((l) =>
      [...l.matchAll(/^most fetches at once on (\S+): (\d+)$/g)].map((m) => [m[1], Number(m[2])]),
    ),
  );
  // The root page links to six shop pages at once: the per-host limit holds them to two.
  expect(most).toEqual({ 'shop.example': 2, 'blog.example': expect.any(Number) });
  expect(most['blog.example']).toBeLessThanOrEqual(2);
});

it('examples/ci-pipeline.ts deploys a good commit and skips the deploy of a broken one', async () => {
  const out = await run('ci-pipeline');
  const [good, broken] = out.split(/^(?=pipeline )/m).map((run) => run.trim().split('\n'));
  const step = (lines: string[], name: string) => lines.find((l) => l.startsWith(`  ${name} `))?.trim();

  expect(good![0]).toBe('pipeline a1b2c3d: passed');
  for (const name of ['build', 'test:unit', 'test:integration', 'test:lint', 'deploy', 'notify'])
    expect(step(good!, name)).toMatch(new RegExp(`^${name} +succeeded `));
  expect(step(good!, 'deploy')).toContain('https://staging.example/a1b2c3d');
  // The three suites ran in parallel once the build had succeeded.
  expect(Number(good!.at(-1)!.match(/up to (\d+)/)![1])).toBeGreaterThan(1);

  expect(broken![0]).toBe('pipeline e4f5a6b: failed');
  expect(step(broken!, 'test:integration')).toBe(
    'test:integration failed    NonRetryableError: 2 of 48 integration tests failed',
  );
  expect(step(broken!, 'test:unit')).toMatch(/^test:unit +succeeded /);
  expect(step(broken!, 'deploy')).toBe(
    'deploy           skipped   DependencyFailed: dependency test:integration (test) failed',
  );
  // notify ran regardless, and saw the deploy skipped.
  expect(step(broken!, 'notify')).toMatch(/^notify +succeeded .*test:integration failed.*deploy skipped$/);
});

it('examples/render.ts renders every frame once and reports progress to 100%', async () => {
  const lines = (await run('render', ['5'])).trim().split('\n');
  const progress = lines.flatMap((l) => [...l.matchAll(/^rendering +(\d+)%/g)].map((m) => Number(m[1])));
  expect(progress.length).toBeGreaterThan(1);
  expect(progress).toEqual([...progress].sort((a, b) => a - b));
  expect(progress.at(-1)).toBe(100);
  const done = lines.flatMap((l) => [...l.matchAll(/^frame (\d+) done \((\d+)\/5\)$/g)]);
  expect(done.map((m) => Number(m[1])).sort()).toEqual([0, 1, 2, 3, 4]);
  expect(done.map((m) => Number(m[2]))).toEqual([1, 2, 3, 4, 5]);
  expect(lines).toContain('rendered frames: 0 1 2 3 4');
  // Each frame's handler ran again after waiting for its post-processing, but the render
  // step ran once per frame.
  const [, renders, runs] = lines.at(-1)!.match(/^renders: (\d+), frame handler runs: (\d+)$/)!;
  expect(Number(renders)).toBe(5);
  expect(Number(runs)).toBeGreaterThan(5);
});

it('README.md shows examples/quickstart.ts as it is', () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const example = readFileSync(join(root, 'examples', 'quickstart.ts'), 'utf8');
  const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  expect(blocks).toContain(example);
});
