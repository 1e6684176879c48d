/**
 * The store conformance suite on PostgreSQL: every instance opens a fresh schema of the test
 * server, and peers open the same schema on their own pool, as another process would.
 * Fails (does not skip) when no server is given: see test/postgres/server.ts.
 */
import { afterAll } from 'vitest';
import { type Dynatask, open } from '../src/index.js';
import { runConformance, type TargetOptions } from './conformance/suite.js';
import { Schemas } from './postgres/server.js';

const schemas = new Schemas();
afterAll(() => schemas.dropAll());

const urls = new WeakMap<Dynatask, string>();

runConformance('postgres', {
  async open(opts: TargetOptions = {}) {
    const database = schemas.freshUrl('conf');
    const dt = await open({ database, ...opts });
    urls.set(dt, database);
    return dt;
  },
  async openPeer(dt, opts: TargetOptions = {}) {
    const database = urls.get(dt);
    if (!database) throw new Error('openPeer: not a database this target opened');
    const peer = await open({ database, ...opts });
    urls.set(peer, database);
    return peer;
  },
});
