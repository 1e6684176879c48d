/** The property suite (test/properties) on the embedded SQLite store, one temp file per run. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from '../src/index.js';
import { propertySuite } from './properties/suite.js';

propertySuite('SQLite', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'dynatask-prop-'));
  const database = join(dir, 'dynatask.db');
  return {
    open: ({ leaseMs }) => open({ database, leaseMs }),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
});
