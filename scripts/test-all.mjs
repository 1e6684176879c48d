#!/usr/bin/env node
// `npm test`: every check and test suite, in order; stops at the first failure.
import { spawnSync } from 'node:child_process';

const steps = [
  ['format and lint (biome)', 'npx', ['biome', 'check', '.']],
  ['type-check (tsc)', 'npx', ['tsc', '--noEmit', '-p', '.']],
  ['build (tsc)', 'npm', ['run', 'build']],
  ['TypeScript tests (vitest)', 'npx', ['vitest', 'run']],
];

for (const [name, cmd, args] of steps) {
  console.log(`\n== ${name}: ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`\n== FAILED: ${name} (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}
console.log('\n== all checks passed');
