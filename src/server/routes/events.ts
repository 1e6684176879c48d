/**
 * Live events as Server-Sent Events: every job's, or one job's. They come from engine.subscribe,
 * so a stream carries the transitions committed through this process (its own workers' and the
 * HTTP calls it served); see docs/http-api.md for what a deployment of several servers sees.
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { NotFoundError } from '../../engine/errors.js';
import type { DynataskEvent } from '../../engine/types.js';
import type { ServerContext } from '../context.js';
import { EventsQuery, JobParams, ServerSentEvent } from '../schemas.js';
import { errors, type Typed } from './common.js';

/** A comment line this often keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;
/** A client this far behind is cut off (it can reconnect) rather than buffered without bound. */
const MAX_BUFFERED = 8 * 1024 * 1024;

type Kind = DynataskEvent['kind'];
const KINDS: readonly Kind[] = ['task', 'progress', 'job'];

/** `?kinds=task,job` as a set; all kinds when absent. */
function kindsOf(q: string | undefined): Set<Kind> {
  return new Set(q ? (q.split(',') as Kind[]) : KINDS);
}

interface Stream {
  res: ServerResponse;
  jobId: string | undefined;
  kinds: Set<Kind>;
  seq: number;
}

/** Only job events: served by engine.onJobSettled, which costs transactions nothing. */
const jobsOnly = (s: Stream) => s.kinds.size === 1 && s.kinds.has('job');

/**
 * The open streams, and the engine subscriptions they share while any is open: every event
 * (engine.subscribe, which makes each transaction build its events), or only job settles
 * (engine.onJobSettled, free) when every open stream asked for `kinds=job` alone.
 */
export class EventStreams {
  private readonly streams = new Set<Stream>();
  private unsubscribe: (() => void) | undefined;
  private unsubscribeJobs: (() => void) | undefined;
  private keepalive: NodeJS.Timeout | undefined;

  constructor(private readonly ctx: ServerContext) {}

  get size(): number {
    return this.streams.size;
  }

  open(res: ServerResponse, jobId: string | undefined, kinds: Set<Kind>): Stream {
    const s: Stream = { res, jobId, kinds, seq: 0 };
    this.streams.add(s);
    this.ctx.metrics.eventStreams.set(this.streams.size);
    this.subscriptions();
    if (!this.keepalive) {
      this.keepalive = setInterval(() => {
        for (const st of this.streams) st.res.write(': keepalive\n\n');
      }, KEEPALIVE_MS);
      this.keepalive.unref();
    }
    res.once('close', () => this.remove(s));
    return s;
  }

  send(s: Stream, e: DynataskEvent): void {
    if (s.res.writableLength > MAX_BUFFERED) {
      s.res.end();
      return;
    }
    s.seq++;
    s.res.write(`id: ${s.seq}\ndata: ${JSON.stringify(e)}\n\n`);
  }

  /** Holds exactly the engine subscriptions the open streams need. */
  private subscriptions(): void {
    const all = [...this.streams].some((s) => !jobsOnly(s));
    const jobs = [...this.streams].some(jobsOnly);
    if (all) this.unsubscribe ??= this.ctx.engine.subscribe((e) => this.publish(e));
    else {
      this.unsubscribe?.();
      this.unsubscribe = undefined;
    }
    if (jobs)
      this.unsubscribeJobs ??= this.ctx.engine.onJobSettled((settled) => {
        const at = Date.now();
        for (const j of settled)
          for (const s of this.streams)
            if (jobsOnly(s) && (s.jobId === undefined || s.jobId === j.jobId))
              this.send(s, { kind: 'job', jobId: j.jobId, state: j.state, at });
      });
    else {
      this.unsubscribeJobs?.();
      this.unsubscribeJobs = undefined;
    }
  }

  private publish(e: DynataskEvent): void {
    for (const s of this.streams)
      if (!jobsOnly(s) && s.kinds.has(e.kind) && (s.jobId === undefined || s.jobId === e.jobId))
        this.send(s, e);
  }

  private remove(s: Stream): void {
    if (!this.streams.delete(s)) return;
    this.ctx.metrics.eventStreams.set(this.streams.size);
    this.subscriptions();
    if (this.streams.size === 0) {
      clearInterval(this.keepalive);
      this.keepalive = undefined;
    }
  }

  /** Ends every stream (shutdown: the server cannot close while they are open). */
  closeAll(): void {
    for (const s of [...this.streams]) {
      s.res.end();
      this.remove(s);
    }
  }
}

/** The first bytes of a stream: a comment, and how soon an EventSource reconnects after a drop. */
const CONNECTED = ': connected\nretry: 2000\n\n';

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  // nginx buffers responses unless told not to.
  'x-accel-buffering': 'no',
};

const sseResponse = {
  200: {
    description:
      'text/event-stream: one `data:` line of JSON per event ({kind: task|progress|job, jobId, ...}), `id:` increasing per stream',
    content: { 'text/event-stream': { schema: ServerSentEvent } },
  },
};

/**
 * A hijacked reply skips the onResponse hook that logs and counts every other request: a
 * stream is logged when it opens (it may last hours) and, like the others, when it ends.
 */
function logStream(ctx: ServerContext, req: FastifyRequest, reply: FastifyReply): void {
  const route = req.routeOptions.url ?? 'unmatched';
  const line = { method: req.method, url: req.url, route, status: 200 };
  req.log.info(line, 'event stream opened');
  reply.raw.once('close', () => {
    ctx.metrics.httpRequests.inc({ method: req.method, route, status: 200 });
    ctx.metrics.httpDuration.observe({ route }, reply.elapsedTime / 1000);
    req.log.info({ ...line, ms: Math.round(reply.elapsedTime) }, 'request');
  });
}

export function eventRoutes(app: Typed, ctx: ServerContext, streams: EventStreams): void {
  const tags = ['events'];

  app.get(
    '/v1/events',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'streamEvents',
        tags,
        summary: "Every job's events (Server-Sent Events), as transitions commit through this server",
        querystring: EventsQuery,
        response: { ...sseResponse, ...errors(400, 401, 403) },
      },
    },
    (req, reply) => {
      reply.hijack();
      reply.raw.writeHead(200, SSE_HEADERS);
      reply.raw.write(CONNECTED);
      logStream(ctx, req, reply);
      streams.open(reply.raw, undefined, kindsOf(req.query.kinds));
    },
  );

  app.get(
    '/v1/jobs/:jobId/events',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'streamJobEvents',
        tags,
        summary: "One job's events (Server-Sent Events); a settled job's stream starts with its job event",
        params: JobParams,
        querystring: EventsQuery,
        response: { ...sseResponse, ...errors(400, 401, 403, 404) },
      },
    },
    async (req, reply) => {
      const { jobId } = req.params;
      const kinds = kindsOf(req.query.kinds);
      // Subscribe before reading the job, so that a settle in between is not missed.
      const pending: DynataskEvent[] = [];
      const buffer =
        kinds.size === 1 && kinds.has('job')
          ? ctx.engine.onJobSettled((settled) => {
              for (const j of settled)
                if (j.jobId === jobId) pending.push({ kind: 'job', jobId, state: j.state, at: Date.now() });
            })
          : ctx.engine.subscribe((e) => e.jobId === jobId && kinds.has(e.kind) && pending.push(e));
      try {
        const job = await ctx.store.getJob(jobId);
        if (!job) throw new NotFoundError(`job ${jobId} not found`);
        reply.hijack();
        reply.raw.writeHead(200, SSE_HEADERS);
        reply.raw.write(CONNECTED);
        logStream(ctx, req, reply);
        const s = streams.open(reply.raw, jobId, kinds);
        if (job.state !== 'running' && kinds.has('job') && !pending.some((e) => e.kind === 'job'))
          streams.send(s, { kind: 'job', jobId, state: job.state, at: job.settled_at ?? job.created_at });
        for (const e of pending) streams.send(s, e);
      } finally {
        buffer();
      }
    },
  );
}
