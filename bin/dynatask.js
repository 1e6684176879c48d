#!/usr/bin/env node
// The `dynatask` command. The CLI itself is compiled into dist/ by `npm run build`, which
// `npm ci` runs through the `prepare` script.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  console.error('dynatask: the CLI is not built (dist/cli/main.js is missing); run `npm run build` first');
  process.exit(1);
}
const { run } = await import(entry.href);
process.exitCode = await run(process.argv);
