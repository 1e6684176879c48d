/**
 * The dynatask HTTP server: a thin layer over the engine. It validates every request against
 * its TypeBox schema, checks the token's scope, calls the engine (or, for reads, the store) in
 * this process, and serialises the answer; docs/http-api.md is the contract. Beside the routes
 * it runs the lease sweeper, so tasks of remote workers that crashed are retried.
 */
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyReply, type FastifyServerOptions, LogController } from 'fastify';
import type { Dynatask } from '../dynatask.js';
import type { Engine } from '../engine/engine.js';
import { Auth, type TokenSpec } from './auth.js';
import { ClaimMemory } from './claims.js';
import { hoistTitledSchemas, withoutAuth } from './components.js';
import { type ServerContext, TypeSettings } from './context.js';
import { checkDepth, HttpError, installErrorHandlers, toErrorReply } from './errors.js';
import { Metrics } from './metrics.js';
import type { Typed } from './routes/common.js';
import { EventStreams, eventRoutes } from './routes/events.js';
import { jobRoutes } from './routes/jobs.js';
import { opsRoutes } from './routes/ops.js';
import { workerRoutes } from './routes/worker.js';
import { validatorCompiler } from './validation.js';
import { Wakeups } from './wakeups.js';

/** Expired leases failed per sweeper transaction. */
const SWEEP_BATCH = 1000;

/** Default request body limit: 1 MiB. */
export const DEFAULT_BODY_LIMIT = 1024 * 1024;

export interface ServerOptions {
  /** The engine to serve, from an open Dynatask (`dt.engine`) or built on a store. */
  dt?: Pick<Dynatask, 'engine'>;
  engine?: Engine;
  /** Bearer tokens; none = no authentication (local use). */
  tokens?: TokenSpec[];
  /** Largest request body in bytes (413 above it). Default 1 MiB. */
  bodyLimit?: number;
  /** Fastify's logger option: false (default), true for pino JSON lines, or pino options. */
  logger?: FastifyServerOptions['logger'];
  /** Fail the attempts whose lease expired, as workers of other processes crash. Default true. */
  sweepLeases?: boolean;
  /**
   * Longest a long-polling claim goes without trying again when no wake-up comes. Default 1 s on
   * SQLite (other processes' commits wake nobody), 5 s on PostgreSQL (they NOTIFY).
   */
  pollMs?: number;
}

/** A built server: the Fastify app, listening and graceful close. */
export interface DynataskServer {
  readonly app: Typed;
  /** Starts listening; returns the base URL (port 0 picks a free port). */
  listen(opts?: { host?: string; port?: number }): Promise<string>;
  /**
   * Drains and closes: long polls answer empty, event streams end, /readyz answers 503, requests
   * in flight finish, then the listener closes. The store stays open (its owner closes it).
   */
  close(): Promise<void>;
}

/** The OpenAPI document's fixed parts; paths come from the route schemas. */
const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'dynatask',
    version: '1',
    description:
      'Durable task trees over HTTP: submit jobs, run tasks as remote workers (claim, report, spawn, wait), follow events. See docs/http-api.md.',
  },
  components: { securitySchemes: { bearer: { type: 'http' as const, scheme: 'bearer' } } },
  security: [{ bearer: [] }],
  tags: [
    { name: 'jobs', description: 'Submitting and reading jobs (operator, viewer)' },
    { name: 'tasks', description: 'Reading, cancelling and retrying tasks (operator, viewer)' },
    { name: 'worker', description: 'The worker protocol: every call carries the attempt token (worker)' },
    { name: 'events', description: 'Server-Sent Event streams (viewer)' },
    { name: 'operations', description: 'Health, readiness and metrics' },
  ],
};

/** Builds the server (not yet listening). */
export async function buildServer(opts: ServerOptions): Promise<DynataskServer> {
  const engine = opts.engine ?? opts.dt?.engine;
  if (!engine) throw new Error('buildServer: give dt or engine');
  const store = engine.store;
  const auth = new Auth(opts.tokens ?? []);
  const types = new TypeSettings(engine);
  const metrics = new Metrics(engine);
  const wakeups = new Wakeups(engine);
  const touched = new Map<string, number>();
  let draining = false;

  const ctx: ServerContext = {
    engine,
    claims: new ClaimMemory(),
    store,
    auth,
    metrics,
    wakeups,
    types,
    pollMs: opts.pollMs ?? (engine.hearsOtherProcesses ? 5000 : 1000),
    get draining() {
      return draining;
    },
    touchWorker(workerId, namespace, ts) {
      const key = `${workerId}\0${namespace}`;
      const now = Date.now();
      if (now - (touched.get(key) ?? 0) < 5000) return;
      touched.set(key, now);
      store
        .touchWorker(workerId, namespace, ts, now)
        .catch((err) => app.log.warn({ err }, 'worker presence'));
    },
    async forgetWorker(workerId) {
      for (const key of touched.keys()) if (key.startsWith(`${workerId}\0`)) touched.delete(key);
      await store.removeWorker(workerId);
    },
  };

  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: opts.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // Requests on open keep-alive connections while closing are served (a worker's last
    // report), not refused: the listener is closed and those connections end after them.
    return503OnClosing: false,
    // One log line per request (the onResponse hook below), not two.
    logController: new LogController({ disableRequestLogging: true }),
    // Errors of the router itself (a malformed URL, a path parameter over maxParamLength) get
    // the contract's shape too.
    frameworkErrors: (err, _req, reply: FastifyReply) => {
      const r = toErrorReply(err);
      void reply.code(r.status).send(r.body);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  installErrorHandlers(app);

  await app.register(swagger, {
    openapi: OPENAPI,
    // Named types for SDK generators (components.ts); without tokens configured, the document
    // of an open server: no bearer auth for a generated client to send, no 401 or 403.
    transformObject: (d) => {
      if (!('openapiObject' in d)) return d.swaggerObject;
      const doc = hoistTitledSchemas(d.openapiObject);
      return auth.enabled ? doc : withoutAuth(doc);
    },
  });

  // The methods of each route path, for 405 answers (with Allow) to the methods it lacks.
  const paths = new Map<string, { pattern: RegExp; methods: Set<string> }>();
  app.addHook('onRoute', (r) => {
    let p = paths.get(r.url);
    if (!p) {
      const pattern = new RegExp(
        `^${r.url.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/:\w+/g, '[^/]+')}$`,
      );
      p = { pattern, methods: new Set() };
      paths.set(r.url, p);
    }
    for (const m of Array.isArray(r.method) ? r.method : [r.method]) p.methods.add(m);
  });

  app.addHook('onRequest', async (req, reply) => {
    if (req.is404) {
      const path = req.url.split('?')[0]!;
      const allowed = [...paths.values()].find((p) => p.pattern.test(path));
      if (allowed) {
        const allow = [...allowed.methods].sort().join(', ');
        void reply.header('allow', allow);
        throw new HttpError(
          405,
          'method_not_allowed',
          `${req.method} ${path} is not allowed (allowed: ${allow})`,
        );
      }
      return;
    }
    auth.check(req, req.routeOptions.config.access ?? 'any');
  });
  app.addHook('preValidation', async (req) => {
    if (req.body !== null && typeof req.body === 'object') checkDepth(req.body);
  });
  app.addHook('onResponse', async (req, reply) => {
    const route = req.is404 ? 'unmatched' : (req.routeOptions.url ?? 'unmatched');
    const status = reply.statusCode;
    metrics.httpRequests.inc({ method: req.method, route, status });
    metrics.httpDuration.observe({ route }, reply.elapsedTime / 1000);
    req.log.info(
      { method: req.method, url: req.url, route, status, ms: Math.round(reply.elapsedTime) },
      'request',
    );
  });

  const streams = new EventStreams(ctx);
  jobRoutes(app, ctx);
  workerRoutes(app, ctx);
  eventRoutes(app, ctx, streams);
  opsRoutes(app, ctx);
  await app.ready();

  // Background work: each job runs one at a time, and close() waits for a run in progress,
  // so the store is never closed under it.
  const timers: NodeJS.Timeout[] = [];
  const running = new Set<Promise<void>>();
  const every = (ms: number, job: () => Promise<void>) => {
    let busy = false;
    const t = setInterval(() => {
      if (busy || draining) return;
      busy = true;
      const run = job().finally(() => {
        busy = false;
        running.delete(run);
      });
      running.add(run);
    }, ms);
    t.unref();
    timers.push(t);
  };
  if (opts.sweepLeases ?? true)
    every(Math.max(50, Math.min(5000, Math.floor(engine.leaseMs / 2))), async () => {
      try {
        // A full batch means more may have expired (a worker holding many tasks died).
        for (let n = SWEEP_BATCH; n === SWEEP_BATCH && !draining; ) {
          n = await engine.expireLeases(SWEEP_BATCH);
          if (n) metrics.leaseExpiries.inc(n);
        }
      } catch (err) {
        app.log.error({ err }, 'lease sweeper');
      }
    });
  every(10_000, async () => {
    const old = Date.now() - 60_000;
    for (const [k, t] of touched) if (t < old) touched.delete(k);
    await types.refresh().catch((err) => app.log.warn({ err }, 'reloading type settings'));
  });

  let closing: Promise<void> | undefined;
  return {
    app,
    async listen(l = {}) {
      await app.listen({ host: l.host ?? '127.0.0.1', port: l.port ?? 0 });
      const addr = app.server.address();
      if (addr === null || typeof addr === 'string') return String(addr);
      const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
      return `http://${host}:${addr.port}`;
    },
    close() {
      closing ??= (async () => {
        draining = true;
        for (const t of timers) clearInterval(t);
        wakeups.close();
        streams.closeAll();
        await app.close();
        await Promise.all(running);
      })();
      return closing;
    },
  };
}
