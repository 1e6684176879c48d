/**
 * The engine port over HTTP: what `open({ database: 'http://…' })` runs on. Each port call is
 * one request of the server's API (docs/http-api.md), so each stays one transaction there;
 * the worker's round trip (outcomes, then the next claim) is one `POST /v1/worker/report`.
 *
 * Every call is safe to repeat after a lost answer, and is repeated through connection errors
 * and 503s: worker calls are guarded by their attempt token, spawns by their keys, and
 * submissions by a job id chosen here.
 */
import { hostname } from 'node:os';
import type { AttemptRef, SpawnSpec, WaitResult, WaitSpec } from '../engine/defs.js';
import { NotFoundError, StaleAttemptError, ValidationError } from '../engine/errors.js';
import { newId } from '../engine/ids.js';
import type {
  ClaimQuery,
  DynataskPort,
  HeartbeatStatus,
  JobQuery,
  JobSpec,
  JobSummary,
  PortTask,
  ReportResult,
  TypeSettings,
} from '../engine/port.js';
import { toJson, validateOptions, validateType } from '../engine/rows.js';
import type {
  DynataskEvent,
  JobInfo,
  Outcome,
  SpawnOptions,
  SubmitOptions,
  TaskError,
  TaskHandle,
  TaskInfo,
} from '../engine/types.js';
import { streamEvents } from './events.js';
import { errorFrom, HttpError, PayloadTooLargeError, Transport, type TransportOptions } from './transport.js';

/** A claimed task as the server sends it. */
interface WireTask {
  id: string;
  jobId: string;
  parentId: string | null;
  type: string;
  payload: unknown;
  attempt: number;
  token: number;
  timeoutMs: number | null;
  /** On the server's clock: their difference is the lease the server granted. */
  startedAt?: number;
  leaseExpiresAt?: number;
}

type ItemError = { error: { code: string; message: string } };

const MAX_TEXT = 100_000;
/** Children per spawn request, and their bytes: within the server's limits (10,000; 1 MiB). */
const SPAWN_CHILDREN = 5000;
const SPAWN_BYTES = 512 * 1024;
/** Children named per wait request (about 40 bytes each). */
const WAIT_IDS = 20_000;
/** Bytes of jobs per submission request. */
const SUBMIT_BYTES = 512 * 1024;
/** Bytes of outcomes per report request: well within the server's default body limit (1 MiB). */
const REPORT_BYTES = 512 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * An id for a path. One that is no UUID names nothing, so it is not found, as in-process (the
 * server would refuse it as malformed instead).
 */
function idPath(id: string, what: 'job' | 'task'): string {
  if (typeof id !== 'string' || !UUID.test(id)) throw new NotFoundError(`${what} ${id} not found`);
  return id;
}

/** A task to create, serialised; a payload JSON cannot hold is bad input, as in-process. */
function task(type: string, payload: unknown, options: Record<string, unknown>, where: string): string {
  validateType(type, where);
  const json = toJson(payload, 'payload');
  return `{"type":${JSON.stringify(type)}${json === null ? '' : `,"payload":${json}`},"options":${JSON.stringify(options)}}`;
}

/**
 * Consecutive slices of serialised items, each of at most `count` items and about `bytes`
 * (an item bigger than that goes alone). Always at least one slice, maybe empty.
 */
function chunks(items: string[], count: number, bytes: number): string[][] {
  const out: string[][] = [[]];
  let size = 0;
  for (const item of items) {
    const last = out[out.length - 1]!;
    if (last.length > 0 && (last.length >= count || size + item.length > bytes)) {
      out.push([item]);
      size = item.length;
    } else {
      last.push(item);
      size += item.length;
    }
  }
  return out;
}

/** An outcome serialised for a report; `index` is its place among the caller's completions or failures. */
interface ReportItem {
  failed: boolean;
  index: number;
  json: string;
}

/** A completion that must be reported as a failure instead (its result cannot be sent). */
function failure(index: number, ref: AttemptRef, name: string, why: string): ReportItem {
  const error = { name, message: `result of task ${ref.id} ${why}`, retryable: false };
  return { failed: true, index, json: JSON.stringify({ id: ref.id, token: ref.token, error }) };
}

function portTask(t: WireTask, now: number): PortTask {
  return {
    id: t.id,
    jobId: t.jobId,
    parentId: t.parentId,
    type: t.type,
    attempt: t.attempt,
    token: t.token,
    payload: t.payload ?? null,
    timeoutMs: t.timeoutMs ?? null,
    // The server's clock may differ: the timeout counts from when this process got the task.
    startedAt: now,
  };
}

/** Task options as the wire takes them: times as epoch ms, dependencies as ids or keys. */
function wireOptions(o: SpawnOptions | SubmitOptions | undefined, where: string): Record<string, unknown> {
  if (!o) return {};
  // The limits in-process, with the same messages, before the server's schema would refuse
  // the value with a message about HTTP body paths.
  validateOptions(o, where);
  const { transaction, runAt, ...rest } = o as SpawnOptions & SubmitOptions;
  if (transaction !== undefined)
    throw new ValidationError(
      `${where}.transaction: a transaction of yours can only be joined in-process, on the database itself`,
    );
  const out: Record<string, unknown> = rest;
  if (runAt !== undefined) out.runAt = runAt instanceof Date ? runAt.getTime() : runAt;
  const after = (o as SpawnOptions).after;
  if (after) out.after = after.map((a) => (typeof a === 'string' ? a : a.id));
  return out;
}

/** A stored error within the bounds the server accepts. */
function wireError(e: TaskError): Record<string, unknown> {
  const out: Record<string, unknown> = { name: e.name.slice(0, 200), message: e.message.slice(0, MAX_TEXT) };
  if (e.stack !== undefined) out.stack = e.stack.slice(0, MAX_TEXT);
  if (e.retryable !== undefined) out.retryable = e.retryable;
  return out;
}

function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}

export interface HttpPortOptions extends TransportOptions {
  /** Lease of claimed tasks. Default: the server's (`dynatask server --lease-ms`). */
  leaseMs?: number;
}

/** How long `open()` tries to reach the server before it fails. */
const CONNECT_WITHIN_MS = 3000;

/** The lease assumed until a claim shows the server's: the server's own default. */
const SERVER_DEFAULT_LEASE_MS = 30_000;

export class HttpPort implements DynataskPort {
  readonly longPoll = true;
  /** A running handler learns of its task's cancellation within this (one request for all). */
  readonly cancelPollMs = 1000;
  /** A lease the caller chose, sent with claims and heartbeats; else the server's applies. */
  private readonly askedLeaseMs: number | undefined;
  /** The lease the server granted in its last claim that carried a task. */
  private grantedLeaseMs: number | undefined;
  readonly transport: Transport;
  /** Names this process's worker to the server, so its types show as served. */
  private readonly workerId = `${hostname()}:${process.pid}:${newId()}`;
  private readonly streams = new Set<() => void>();
  /** Event streams being connected; submissions wait for them (see `subscribe`). */
  private connecting: Promise<void> = Promise.resolve();

  constructor(opts: HttpPortOptions) {
    this.transport = new Transport(opts);
    this.askedLeaseMs = opts.leaseMs;
  }

  /** The lease of claimed tasks: the one asked for, else the server's as its claims show it. */
  get leaseMs(): number {
    return this.askedLeaseMs ?? this.grantedLeaseMs ?? SERVER_DEFAULT_LEASE_MS;
  }

  /** Claimed tasks for the worker; notes the lease the server granted them. */
  private tasksOf(tasks: WireTask[]): PortTask[] {
    const now = Date.now();
    const t = tasks[0];
    if (t?.startedAt && t.leaseExpiresAt && t.leaseExpiresAt > t.startedAt)
      this.grantedLeaseMs = t.leaseExpiresAt - t.startedAt;
    return tasks.map((w) => portTask(w, now));
  }

  get where(): string {
    return this.transport.origin;
  }

  /**
   * Checks that a dynatask server answers at the URL (its unauthenticated `/healthz`), trying
   * for `withinMs` through connection errors and 503s: a wrong URL or a server that is down
   * fails `open()` at once, naming the URL, not the first call after the transport's retries.
   */
  async connect(url: string, withinMs = CONNECT_WITHIN_MS): Promise<void> {
    try {
      const r = await this.transport.call<{ status?: unknown }>('GET', '/healthz', undefined, {
        retryForMs: withinMs,
      });
      if (r?.status !== 'ok') throw new Error('its /healthz did not answer {"status":"ok"}');
    } catch (e) {
      const status = e instanceof HttpError ? e.status : 0;
      throw new HttpError(
        status,
        status === 0 ? 'unreachable' : 'not_a_server',
        `database: no dynatask server answers at ${url}: ${(e as Error).message}`,
        { cause: e },
      );
    }
  }

  private post<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    return this.transport.call<T>('POST', path, body, signal ? { signal } : {});
  }

  // ---------------------------------------------------------------- worker

  async claim(q: ClaimQuery & { waitMs?: number }, signal?: AbortSignal): Promise<PortTask[]> {
    const r = await this.post<{ tasks: WireTask[] }>(
      '/v1/worker/claim',
      { ...this.claimQuery(q), waitMs: q.waitMs },
      signal,
    );
    return this.tasksOf(r.tasks);
  }

  /**
   * A claim as the wire takes it. The lease is sent only when one was asked for: the server's
   * `--lease-ms` applies otherwise.
   */
  private claimQuery(q: ClaimQuery) {
    const leaseMs = q.leaseMs ?? this.askedLeaseMs;
    return {
      namespace: q.namespace,
      types: q.types,
      limit: Math.min(q.limit, 1000),
      ...(leaseMs !== undefined ? { leaseMs } : {}),
      workerId: this.workerId,
      // A claim id: the transport's repeat after a lost answer gets the same tasks again.
      claimId: newId(),
    };
  }

  async report(
    completed: Array<AttemptRef & { result: unknown }>,
    failed: Array<AttemptRef & { error: TaskError }>,
    next?: ClaimQuery,
  ): Promise<ReportResult> {
    // Items are serialised here, one by one: each result once, and a result JSON cannot hold
    // fails its own task (as in-process), never the whole batch.
    const items: ReportItem[] = [];
    completed.forEach((c, i) => {
      let json: string | undefined;
      try {
        json = JSON.stringify(c.result);
      } catch (e) {
        items.push(failure(-1, c, 'InvalidResult', `is not JSON-serialisable: ${(e as Error).message}`));
        return;
      }
      const result = json === undefined ? '' : `,"result":${json}`;
      items.push({
        failed: false,
        index: i,
        json: `{"id":${JSON.stringify(c.id)},"token":${c.token}${result}}`,
      });
    });
    failed.forEach((f, i) => {
      items.push({
        failed: true,
        index: i,
        json: JSON.stringify({ id: f.id, token: f.token, error: wireError(f.error) }),
      });
    });
    const out: ReportResult = {
      completed: completed.map(() => false),
      failed: failed.map(() => false),
      claimed: [],
    };
    // Within the server's limits (1000 items a list, its body limit): a big batch goes in several
    // requests, the claim with the last. Each is a transaction of its own, as outcomes may be.
    let chunk: ReportItem[] = [];
    let bytes = 0;
    for (const [k, item] of items.entries()) {
      chunk.push(item);
      bytes += item.json.length;
      const last = k === items.length - 1;
      const nextItem = items[k + 1];
      if (last || chunk.length >= 1000 || bytes + (nextItem?.json.length ?? 0) > REPORT_BYTES) {
        await this.reportChunk(chunk, last ? next : undefined, out, completed);
        chunk = [];
        bytes = 0;
      }
    }
    if (!items.length && next) await this.reportChunk([], next, out, completed);
    return out;
  }

  private async reportChunk(
    chunk: ReportItem[],
    next: ClaimQuery | undefined,
    out: ReportResult,
    completed: Array<AttemptRef & { result: unknown }>,
  ): Promise<void> {
    const done = chunk.filter((i) => !i.failed);
    const failing = chunk.filter((i) => i.failed);
    let raw = `{"completed":[${done.map((i) => i.json).join(',')}]`;
    if (failing.length) raw += `,"failed":[${failing.map((i) => i.json).join(',')}]`;
    if (next) raw += `,"claim":${JSON.stringify(this.claimQuery(next))}`;
    raw += '}';
    let r: { completed: string[]; failed: string[]; tasks: WireTask[] };
    try {
      r = await this.transport.call('POST', '/v1/worker/report', undefined, { raw });
    } catch (e) {
      // One result over the server's body limit can only fail its task, like one JSON cannot hold.
      if (e instanceof PayloadTooLargeError && chunk.length === 1 && !chunk[0]!.failed) {
        const c = completed[chunk[0]!.index]!;
        const item = failure(-1, c, 'ResultTooLarge', `is larger than the server accepts (${e.message})`);
        await this.reportChunk([item], next, out, completed);
        return;
      }
      throw e;
    }
    done.forEach((item, j) => {
      out.completed[item.index] = r.completed[j] === 'ok';
    });
    failing.forEach((item, j) => {
      if (item.index >= 0) out.failed[item.index] = r.failed[j] === 'ok';
    });
    out.claimed.push(...this.tasksOf(r.tasks));
  }

  async release(items: AttemptRef[]): Promise<boolean[]> {
    const out: boolean[] = [];
    for (let i = 0; i < items.length; i += 1000) {
      const chunk = items.slice(i, i + 1000).map((r) => ({ id: r.id, token: r.token }));
      const r = await this.post<{ items: Array<'ok' | 'stale'> }>('/v1/worker/release', { items: chunk });
      out.push(...r.items.map((s) => s === 'ok'));
    }
    return out;
  }

  async heartbeat(items: AttemptRef[], leaseMs = this.askedLeaseMs): Promise<HeartbeatStatus[]> {
    const out: HeartbeatStatus[] = [];
    for (let i = 0; i < items.length; i += 10_000) {
      const chunk = items.slice(i, i + 10_000).map((r) => ({ id: r.id, token: r.token }));
      const r = await this.post<{ items: HeartbeatStatus[] }>('/v1/worker/heartbeat', {
        items: chunk,
        leaseMs,
      });
      out.push(...r.items);
    }
    return out;
  }

  async spawn(parent: AttemptRef, specs: SpawnSpec[], keys: string[]): Promise<TaskHandle[]> {
    const children = specs.map((s, i) =>
      task(
        s.type,
        s.payload,
        { ...wireOptions(s.options, `children[${i}].options`), key: keys[i] },
        `children[${i}]`,
      ),
    );
    // Usually one request, one transaction. A spawn too big for one request goes in several, in
    // order: safe, as each child's key makes it idempotent (a re-run spawns what is missing).
    const handles: TaskHandle[] = [];
    for (const chunk of chunks(children, SPAWN_CHILDREN, SPAWN_BYTES)) {
      const raw = `{"items":[{"id":${JSON.stringify(parent.id)},"token":${parent.token},"children":[${chunk.join(',')}]}]}`;
      const r = await this.transport.call<{ items: Array<{ children: TaskHandle[] } | ItemError> }>(
        'POST',
        '/v1/worker/spawn',
        undefined,
        { raw },
      );
      const item = r.items[0]!;
      if ('error' in item) throw errorFrom(409, item);
      handles.push(...item.children);
    }
    return handles;
  }

  async wait(ref: AttemptRef, spec: WaitSpec): Promise<WaitResult> {
    if (spec.all || spec.ids.length <= WAIT_IDS) return this.waitOnce(ref, spec);
    // More children than one request may name: wait for them a slice at a time. A slice not
    // settled suspends the task, whose re-run finds the earlier slices settled.
    const outcomes: Outcome[] = [];
    for (let i = 0; i < spec.ids.length; i += WAIT_IDS) {
      const r = await this.waitOnce(ref, { all: false, ids: spec.ids.slice(i, i + WAIT_IDS) });
      if (r.suspended) return r;
      outcomes.push(...r.outcomes);
    }
    return { suspended: false, outcomes };
  }

  private async waitOnce(ref: AttemptRef, spec: WaitSpec): Promise<WaitResult> {
    let repeated = false;
    const item = spec.all ? { ...ref, all: true } : { ...ref, ids: spec.ids };
    let r: { items: Array<WaitResult | ItemError> };
    try {
      r = await this.transport.call(
        'POST',
        '/v1/worker/wait',
        { items: [item] },
        { onRetry: () => (repeated = true) },
      );
    } catch (e) {
      // The first try may have suspended the task before its answer was lost: the repeat then
      // finds the attempt no longer holds it, which is what suspending means.
      if (repeated && e instanceof StaleAttemptError) return { suspended: true };
      throw e;
    }
    const out = r.items[0]!;
    if ('error' in out) {
      const e = errorFrom(409, out);
      if (repeated && e instanceof StaleAttemptError) return { suspended: true };
      throw e;
    }
    if (out.suspended) return { suspended: true };
    return { suspended: false, outcomes: out.outcomes as Outcome[] };
  }

  async getStep(task: AttemptRef & { jobId: string }, name: string) {
    const r = await this.post<{ found: boolean; value?: unknown }>('/v1/worker/steps/get', {
      id: task.id,
      token: task.token,
      name,
    });
    return { found: r.found, value: r.value };
  }

  async putStep(ref: AttemptRef, name: string, value: unknown): Promise<void> {
    // `undefined` is sent as no value at all, which the server stores as `undefined`.
    const json = toJson(value, `step ${name}`);
    const raw = `{"id":${JSON.stringify(ref.id)},"token":${ref.token},"name":${JSON.stringify(name)}${json === null ? '' : `,"value":${json}`}}`;
    await this.transport.call('POST', '/v1/worker/steps/put', undefined, { raw });
  }

  async progress(ref: AttemptRef, value: unknown): Promise<void> {
    const raw = `{"id":${JSON.stringify(ref.id)},"token":${ref.token},"progress":${toJson(value, 'progress') ?? 'null'}}`;
    await this.transport.call('POST', '/v1/worker/progress', undefined, { raw });
  }

  // ---------------------------------------------------------------- operators and readers

  async submit(jobs: JobSpec[]) {
    await this.connecting;
    // A job id chosen here makes the submission safe to repeat after a lost answer.
    const items = jobs.map((j, i) =>
      task(
        j.type,
        j.payload,
        { jobId: newId(), ...wireOptions(j.options, `jobs[${i}].options`) },
        `jobs[${i}]`,
      ),
    );
    const out: Array<{ jobId: string; rootTaskId: string }> = [];
    // One request, one transaction, unless the jobs exceed what one request may carry (1,000
    // jobs; the body limit): then several, each idempotent by its jobs' ids.
    for (const chunk of chunks(items, 1000, SUBMIT_BYTES)) {
      const r = await this.transport.call<{ jobs: Array<{ jobId: string; rootTaskId: string }> }>(
        'POST',
        '/v1/jobs',
        undefined,
        { raw: `{"jobs":[${chunk.join(',')}]}` },
      );
      for (const j of r.jobs) out.push({ jobId: j.jobId, rootTaskId: j.rootTaskId });
    }
    return out;
  }

  getJob(jobId: string): Promise<JobInfo> {
    return this.transport.call('GET', `/v1/jobs/${idPath(jobId, 'job')}`);
  }

  async listJobs(q: JobQuery): Promise<JobSummary[]> {
    const r = await this.transport.call<{ jobs: JobSummary[] }>(
      'GET',
      `/v1/jobs${query({
        namespace: q.namespace,
        state: q.state,
        type: q.type,
        createdAfter: q.createdAfter,
        createdBefore: q.createdBefore,
        before: q.before,
        limit: q.limit,
      })}`,
    );
    return r.jobs;
  }

  getTask(taskId: string): Promise<TaskInfo> {
    return this.transport.call('GET', `/v1/tasks/${idPath(taskId, 'task')}`);
  }

  tree(jobId: string, after: string | null, limit: number) {
    return this.transport.call<{ tasks: TaskInfo[]; next: string | null }>(
      'GET',
      `/v1/jobs/${idPath(jobId, 'job')}/tasks${query({ after: after ?? undefined, limit })}`,
    );
  }

  async queuedTypes(namespace: string) {
    const r = await this.transport.call<{ types: Array<{ type: string; queued: number; served: boolean }> }>(
      'GET',
      `/v1/types${query({ namespace })}`,
    );
    return r.types;
  }

  async cancelJob(jobId: string, reason?: string): Promise<boolean> {
    const body = reason === undefined ? {} : { reason };
    const r = await this.post<{ cancelled: boolean }>(`/v1/jobs/${idPath(jobId, 'job')}/cancel`, body);
    return r.cancelled;
  }

  async cancelTask(taskId: string, reason?: string): Promise<boolean> {
    const body = reason === undefined ? {} : { reason };
    const r = await this.post<{ cancelled: boolean }>(`/v1/tasks/${idPath(taskId, 'task')}/cancel`, body);
    return r.cancelled;
  }

  async retryTask(taskId: string): Promise<void> {
    // The request names the failed attempt, so that a repeat after a lost answer is
    // recognised as done (the task records the attempt it was retried at) and not refused.
    const task = await this.getTask(taskId);
    const body = task.state === 'failed' ? { attempt: task.attempt } : {};
    await this.post(`/v1/tasks/${idPath(taskId, 'task')}/retry`, body);
  }

  async purge(): Promise<number> {
    throw new ValidationError(
      'purge: not available over HTTP; run `dynatask purge --database <the database>` where the server runs',
    );
  }

  async configureTypes(namespace: string, types: TypeSettings[]): Promise<void> {
    if (types.length) await this.post('/v1/worker/types', { namespace, types });
  }

  async workerStarted(): Promise<() => Promise<void>> {
    // The server sweeps expired leases, and records this worker's types from its claims; on
    // stop it forgets them, so they no longer show as served.
    return async () => {
      // Best effort, briefly: unheard, the presence expires by itself after 15 s.
      await this.post('/v1/worker/stop', { workerId: this.workerId }, AbortSignal.timeout(2000)).catch(
        () => {},
      );
    };
  }

  subscribe(listener: (e: DynataskEvent) => void, jobId?: string): () => void {
    // An id that is no UUID names no job: no events, as in-process.
    if (jobId !== undefined && !UUID.test(jobId)) return () => {};
    const path = jobId ? `/v1/jobs/${jobId}/events` : '/v1/events';
    const { stop, opened } = streamEvents(this.transport, path, listener);
    this.streams.add(stop);
    // In-process, a subscription sees every later transition. Here the stream connects
    // asynchronously: the next submission waits for it (a second at most), so a job submitted
    // right after subscribing has all its events.
    const connecting = Promise.race([opened, new Promise<void>((r) => setTimeout(r, 1000).unref())]);
    this.connecting = Promise.all([this.connecting, connecting]).then(() => {});
    return () => {
      stop();
      this.streams.delete(stop);
    };
  }

  /**
   * Polls the job, from every 20 ms up to every `pollMs`. Not the job's event stream: while
   * one is open the server builds and sends every event of every transaction of the job,
   * which costs a large job more than the polls do.
   */
  async waitForJob(jobId: string, pollMs: number): Promise<JobInfo> {
    for (let delay = Math.min(20, pollMs); ; delay = Math.min(pollMs, delay * 1.5)) {
      const job = await this.getJob(jobId);
      if (job.state !== 'running') return job;
      await new Promise((r) => setTimeout(r, delay));
    }
  }

  async close(): Promise<void> {
    for (const stop of this.streams) stop();
    this.streams.clear();
    await this.transport.close();
  }
}
