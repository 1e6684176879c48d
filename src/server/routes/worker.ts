/**
 * The worker protocol: claim (long-poll), report (complete + fail + claim in one transaction),
 * heartbeat, wait, spawn, progress and steps. Every call about an attempt carries its token;
 * a token that no longer holds the task is `stale` per item, or 409 on single-task calls.
 */
import { type ClaimedTask, DEFAULTS } from '../../engine/defs.js';
import { NotFoundError, StaleAttemptError, ValidationError } from '../../engine/errors.js';
import type { SpawnOptions, TaskError } from '../../engine/types.js';
import type { ServerContext } from '../context.js';
import { toErrorReply } from '../errors.js';
import {
  ClaimBody,
  ClaimReply,
  HeartbeatBody,
  HeartbeatReply,
  OkReply,
  ProgressBody,
  ReleaseBody,
  ReleaseReply,
  ReportBody,
  ReportReply,
  SpawnBody,
  SpawnReply,
  StepGetBody,
  StepGetReply,
  StepPutBody,
  TypeConfigBody,
  WaitBody,
  WaitReply,
  WorkerStopBody,
} from '../schemas.js';
import { claimedTask, typeConfigRows } from '../views.js';
import { errors, type Typed } from './common.js';

/** How soon a long poll looks again at due tasks that a concurrency limit held back. */
const BLOCKED_RECHECK_MS = 200;

/** A per-item error of a batched answer. */
function itemError(e: unknown): { error: { code: string; message: string } } {
  const r = toErrorReply(e);
  if (r.internal) throw e; // a fault of the server fails the request, not one item
  return { error: { code: r.body.error.code, message: r.body.error.message } };
}

export function workerRoutes(app: Typed, ctx: ServerContext): void {
  const { engine, metrics, types } = ctx;
  const tags = ['worker'];
  const worker = { access: 'worker' as const };

  const view = (claimed: ClaimedTask[]) => {
    const now = Date.now();
    metrics.claimed.inc(claimed.length);
    return claimed.map((c) => {
      metrics.claimLatency.observe(Math.max(0, (c.row.started_at ?? now) - c.row.run_at) / 1000);
      return claimedTask(c, types.timeoutOf(c.row.namespace, c.row.type));
    });
  };

  const timedClaim = async (
    namespace: string,
    ts: string[],
    limit: number,
    leaseMs: number | undefined,
    workerId: string | undefined,
  ) => {
    const end = metrics.claimDuration.startTimer();
    try {
      return await engine.claim(namespace, ts, limit, leaseMs, workerId ?? null);
    } finally {
      end();
    }
  };

  app.post(
    '/v1/worker/claim',
    {
      config: worker,
      schema: {
        operationId: 'claim',
        tags,
        summary: 'Claim up to `limit` ready tasks of `types`; long-polls up to `waitMs` when none is ready',
        body: ClaimBody,
        response: { 200: ClaimReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req, reply) => {
      const b = req.body;
      const namespace = b.namespace ?? DEFAULTS.namespace;
      await types.ensure(namespace);
      if (b.workerId) ctx.touchWorker(b.workerId, namespace, b.types);
      // A repeat of a claim whose answer was lost: the same tasks again.
      const seen = b.claimId ? ctx.claims.get(b.claimId) : undefined;
      if (seen) return { tasks: seen };
      if (ctx.draining) return { tasks: [] };
      const deadline = Date.now() + (b.waitMs ?? 0);
      // A client that hangs up ends its wait, so it cannot claim tasks nobody will run.
      const gone = new AbortController();
      reply.raw.once('close', () => gone.abort());
      for (;;) {
        const reg = ctx.wakeups.register(namespace, b.types);
        try {
          const claimed = await timedClaim(namespace, b.types, b.limit, b.leaseMs, b.workerId);
          if (claimed.length && gone.signal.aborted) {
            // Nobody will receive these: give them back now rather than after their lease.
            await engine.release(claimed.map((c) => ({ id: c.row.id, token: c.token })));
            return { tasks: [] };
          }
          if (claimed.length || Date.now() >= deadline || ctx.draining || gone.signal.aborted) {
            const tasks = view(claimed);
            if (b.claimId) ctx.claims.set(b.claimId, tasks);
            return { tasks };
          }
          // Tasks due later (delays, backoffs) wake nobody: their run_at is the next deadline. A
          // task already due that the claim passed over is held back by a concurrency limit,
          // and a freed slot wakes nobody either: look again soon, but do not spin.
          const due = await engine.nextRunAt(namespace, b.types);
          const now = Date.now();
          const recheck = due === null ? Number.POSITIVE_INFINITY : Math.max(due, now + BLOCKED_RECHECK_MS);
          metrics.longPolls.inc();
          try {
            await reg.until(Math.min(deadline, now + ctx.pollMs, recheck), gone.signal);
          } finally {
            metrics.longPolls.dec();
          }
        } finally {
          reg.dispose();
        }
        if (ctx.draining || gone.signal.aborted) return { tasks: [] };
      }
    },
  );

  app.post(
    '/v1/worker/report',
    {
      config: worker,
      schema: {
        operationId: 'report',
        tags,
        summary: "A worker's round trip in one transaction: completions, failures, then the next claim",
        body: ReportBody,
        response: { 200: ReportReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const b = req.body;
      const completed = (b.completed ?? []).map((c) => ({ id: c.id, token: c.token, result: c.result }));
      const failed = (b.failed ?? []).map((f) => {
        const error: TaskError = { name: f.error.name ?? 'Error', message: f.error.message };
        if (f.error.stack !== undefined) error.stack = f.error.stack;
        if (f.error.retryable !== undefined) error.retryable = f.error.retryable;
        return { id: f.id, token: f.token, error };
      });
      let next:
        | { namespace: string; types: string[]; limit: number; leaseMs?: number; workerId?: string }
        | undefined;
      const claim = b.claim;
      // A repeat of a report whose answer was lost: its outcomes answer as before (idempotent
      // by token), and its claim gets the same tasks again.
      const seen = claim?.claimId ? ctx.claims.get(claim.claimId) : undefined;
      if (claim && !seen && !ctx.draining) {
        next = { namespace: claim.namespace ?? DEFAULTS.namespace, types: claim.types, limit: claim.limit };
        if (claim.leaseMs !== undefined) next.leaseMs = claim.leaseMs;
        if (claim.workerId !== undefined) next.workerId = claim.workerId;
        await types.ensure(next.namespace);
        if (claim.workerId) ctx.touchWorker(claim.workerId, next.namespace, claim.types);
      }
      // Failures decide retries from the type settings of the task's namespace.
      if (failed.length) await types.ensure(claim?.namespace ?? DEFAULTS.namespace);
      const end = next ? metrics.claimDuration.startTimer() : undefined;
      const r = await engine.report(completed, failed, next);
      end?.();
      const status = (oks: boolean[]) => {
        const n = oks.filter((ok) => !ok).length;
        if (n) metrics.stale.inc(n);
        return oks.map((ok) => (ok ? ('ok' as const) : ('stale' as const)));
      };
      metrics.completed.inc(r.completed.filter(Boolean).length);
      metrics.failed.inc(r.failed.filter(Boolean).length);
      let tasks = seen;
      if (!tasks) {
        tasks = view(r.claimed);
        if (claim?.claimId) ctx.claims.set(claim.claimId, tasks);
      }
      return { completed: status(r.completed), failed: status(r.failed), tasks };
    },
  );

  app.post(
    '/v1/worker/heartbeat',
    {
      config: worker,
      schema: {
        operationId: 'heartbeat',
        tags,
        summary: 'Renew the leases of running attempts: ok, cancelled (abort the handler) or lost',
        body: HeartbeatBody,
        response: { 200: HeartbeatReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => ({ items: await engine.heartbeat(req.body.items, req.body.leaseMs) }),
  );

  app.post(
    '/v1/worker/release',
    {
      config: worker,
      schema: {
        operationId: 'release',
        tags,
        summary:
          'Give back claimed tasks not started (the worker stops): queued again at once, no attempt counted',
        body: ReleaseBody,
        response: { 200: ReleaseReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const held = await engine.release(req.body.items.map((i) => ({ id: i.id, token: i.token })));
      return { items: held.map((ok) => (ok ? ('ok' as const) : ('stale' as const))) };
    },
  );

  app.post(
    '/v1/worker/wait',
    {
      config: worker,
      schema: {
        operationId: 'wait',
        tags,
        summary: "Durable waits: each item's children outcomes, or suspended (the task left running)",
        body: WaitBody,
        response: { 200: WaitReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const items = [];
      // One transaction per item: the engine waits on one task at a time.
      for (const [i, w] of req.body.items.entries()) {
        try {
          if (w.all === false && w.ids === undefined)
            throw new ValidationError(`items[${i}]: give ids, or all: true`);
          if (w.all === true && w.ids !== undefined)
            throw new ValidationError(`items[${i}]: give ids or all, not both`);
          const r = await engine.wait(
            { id: w.id, token: w.token },
            w.ids !== undefined ? { all: false, ids: w.ids } : { all: true },
          );
          items.push(r);
        } catch (e) {
          if (e instanceof StaleAttemptError) metrics.stale.inc();
          items.push(itemError(e));
        }
      }
      return { items };
    },
  );

  app.post(
    '/v1/worker/spawn',
    {
      config: worker,
      schema: {
        operationId: 'spawn',
        tags,
        summary: "Spawn children of running tasks; idempotent by each child's options.key",
        body: SpawnBody,
        response: { 200: SpawnReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const items = [];
      for (const s of req.body.items) {
        try {
          const specs = s.children.map((c) => ({
            type: c.type,
            payload: c.payload,
            options: c.options as SpawnOptions,
          }));
          const children = await engine.spawn(
            { id: s.id, token: s.token },
            specs,
            s.children.map((c) => c.options.key),
          );
          items.push({ children });
        } catch (e) {
          if (e instanceof StaleAttemptError) metrics.stale.inc();
          items.push(itemError(e));
        }
      }
      return { items };
    },
  );

  app.post(
    '/v1/worker/progress',
    {
      config: worker,
      schema: {
        operationId: 'progress',
        tags,
        summary: "Record a running task's progress (any JSON); subscribers see a progress event",
        body: ProgressBody,
        response: { 200: OkReply, ...errors(400, 401, 403, 404, 409, 413, 415) },
      },
    },
    async (req) => {
      await engine.progress({ id: req.body.id, token: req.body.token }, req.body.progress);
      return {};
    },
  );

  app.post(
    '/v1/worker/steps/get',
    {
      config: worker,
      schema: {
        operationId: 'getStep',
        tags,
        summary: "A memoised step's value, if the task stored one",
        body: StepGetBody,
        response: { 200: StepGetReply, ...errors(400, 401, 403, 404, 409, 413, 415) },
      },
    },
    async (req) => {
      const { id, token, name } = req.body;
      // The engine reads steps by job and task id; the row also tells whether the token holds it.
      const row = await ctx.store.getTask(id);
      if (!row) throw new NotFoundError(`task ${id} not found`);
      if (row.state !== 'running' || row.run_token !== token)
        throw new StaleAttemptError(
          `task ${id} is no longer held by attempt token ${token} (state ${row.state})`,
        );
      const got = await engine.getStep(row.job_id, id, name);
      // A step that stored `undefined` is found with no value, as JSON cannot say undefined.
      return got.found ? { found: true, value: got.value } : { found: false };
    },
  );

  app.post(
    '/v1/worker/steps/put',
    {
      config: worker,
      schema: {
        operationId: 'putStep',
        tags,
        summary: "Store a step's value (memoised across the task's re-runs)",
        body: StepPutBody,
        response: { 200: OkReply, ...errors(400, 401, 403, 404, 409, 413, 415) },
      },
    },
    async (req) => {
      await engine.putStep({ id: req.body.id, token: req.body.token }, req.body.name, req.body.value);
      return {};
    },
  );

  app.post(
    '/v1/worker/types',
    {
      config: worker,
      schema: {
        operationId: 'configureTypes',
        tags,
        summary:
          'Store per-type settings (retries, timeout, concurrency) shared by every worker of the namespace',
        body: TypeConfigBody,
        response: { 200: OkReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const namespace = req.body.namespace ?? DEFAULTS.namespace;
      await engine.configureTypes(typeConfigRows(namespace, req.body.types));
      await types.ensure(namespace);
      await types.refresh();
      return {};
    },
  );

  app.post(
    '/v1/worker/stop',
    {
      config: worker,
      schema: {
        operationId: 'stopWorker',
        tags,
        summary: 'A worker stops: GET /v1/types no longer shows its types as served by it',
        body: WorkerStopBody,
        response: { 200: OkReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      await ctx.forgetWorker(req.body.workerId);
      return {};
    },
  );
}
