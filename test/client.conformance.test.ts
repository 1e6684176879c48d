/**
 * The conformance suite through a dynatask server: every instance is a remote client
 * (`open({ database: 'http://…' })`) of a server on a fresh SQLite file, and its peers are
 * other clients of the same server.
 */
import { type Dynatask, open } from '../src/index.js';
import { runConformance, type TargetOptions } from './conformance/suite.js';
import { startServer, type TestServer } from './fixtures/http.js';

const servers = new WeakMap<Dynatask, TestServer>();

runConformance('remote client over HTTP', {
  inProcess: false,
  async open(opts: TargetOptions = {}) {
    const server = await startServer(opts.leaseMs ? { leaseMs: opts.leaseMs } : {});
    const dt = await open({ database: server.url, ...opts });
    servers.set(dt, server);
    const close = dt.close.bind(dt);
    dt.close = async (o) => {
      await close(o);
      await server.close();
    };
    return dt;
  },
  async openPeer(dt, opts: TargetOptions = {}) {
    const server = servers.get(dt);
    if (!server) throw new Error('openPeer: not an instance this target opened');
    return open({ database: server.url, ...opts });
  },
});
