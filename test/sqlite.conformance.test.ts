/**
 * The store conformance suite on SQLite: once on real database files in a temporary
 * directory (peers open the same file on their own connection, as another process
 * would), and once on ':memory:' (peers share the one store).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { type Dynatask, open } from '../src/index.js';
import { runConformance, type TargetOptions } from './conformance/suite.js';

const dir = mkdtempSync(join(tmpdir(), 'dynatask-conformance-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
const files = new WeakMap<Dynatask, string>();

runConformance('sqlite file', {
  async open(opts: TargetOptions = {}) {
    const database = join(dir, `db-${++n}.sqlite`);
    const dt = await open({ database, ...opts });
    files.set(dt, database);
    return dt;
  },
  async openPeer(dt, opts: TargetOptions = {}) {
    const database = files.get(dt);
    if (!database) throw new Error('openPeer: not a database this target opened');
    const peer = await open({ database, ...opts });
    files.set(peer, database);
    return peer;
  },
});

runConformance('sqlite :memory:', {
  open: (opts: TargetOptions = {}) => open({ database: ':memory:', ...opts }),
  async openPeer(dt, opts: TargetOptions = {}) {
    // One connection for both: the peer has its own engine and worker, and leaves the store open.
    const peer = await open({ store: dt.store, ...opts });
    peer.close = () => peer.stop();
    return peer;
  },
});
