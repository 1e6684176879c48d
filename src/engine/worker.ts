/**
 * The worker: claims batches of tasks of the types it handles, runs their handlers, and
 * reports outcomes in batches (one transaction per batch of completions). It holds leases
 * with batched heartbeats and aborts handlers that are cancelled, time out or lose their
 * lease. It talks to the engine through a port: in this process, or a server over HTTP.
 *
 * Up to REPORTS_IN_FLIGHT reports (each carrying the claim that refills the slots its
 * outcomes free) are in flight at once, so the handlers of one batch run, and the next
 * outcomes are gathered, while the store records another: with `concurrency` at twice
 * `batchSize`, two batches alternate.
 */
import { TaskContext, type TaskMap } from './context.js';
import type { AttemptRef } from './defs.js';
import { SuspendSignal, toTaskError, ValidationError } from './errors.js';
import type { PortTask, WorkerPort } from './port.js';
import type { TaskError } from './types.js';

/** A handler: receives its context and payload, returns the task's result. */
export type Handler<M extends TaskMap = TaskMap, P = unknown, R = unknown> = (
  ctx: TaskContext<M, P>,
  payload: P,
) => Promise<R> | R;

export interface WorkerOptions {
  namespace: string;
  /** Handlers running at once in this worker. */
  concurrency: number;
  /** Tasks claimed per transaction. */
  batchSize: number;
  /**
   * Safety-net poll when no wake-up arrives: another process may have queued work and the
   * store cannot tell (SQLite), or a wake-up was lost.
   */
  pollMs: number;
  /** The lease the worker asks for; without, the engine's (a server's `--lease-ms`) applies. */
  leaseMs?: number | undefined;
  /** Longest wait of one long-poll claim, on ports that long-poll (remote workers). */
  longPollMs?: number;
}

/**
 * An AbortController made only when a handler reads `ctx.signal`: most handlers never do,
 * and creating one per task is a measurable share of a no-op task's cost.
 */
export class LazyAbort {
  private controller: AbortController | undefined;
  private reason: unknown;
  aborted = false;

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.aborted && !this.controller.signal.aborted) this.controller.abort(this.reason);
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

interface Running {
  claimed: PortTask;
  controller: LazyAbort;
  timer: NodeJS.Timeout | undefined;
  /** Set once an outcome has been queued, so a late one (after a timeout) is dropped. */
  done: boolean;
}

/**
 * The key of one attempt in the worker's memory. Not the task id alone: a handler that
 * suspended may still be unwinding (an async `finally`) when this worker claims the task's
 * next attempt, and each must keep its own entry, heartbeats and abort.
 */
const attemptKey = (r: AttemptRef) => `${r.id}:${r.token}`;

/** Backoff between tries of a report that failed: from the first to the most. */
const REPORT_RETRY_MS = 100;
const REPORT_RETRY_MAX_MS = 5000;
/**
 * How long outcomes are tried again before they are given up (their tasks then run again once
 * their leases expire): beyond a database restart, short of renewing a lease for ever on an
 * error that does not pass.
 */
const REPORT_RETRY_FOR_MS = 120_000;

/**
 * Whether a report that threw may succeed if sent again: anything but a refusal of the request
 * itself (bad input, or a server's 4xx such as a missing token), which would fail again. A busy
 * or unreachable database, a deadlock, a commit of unknown outcome, a server restarting: the
 * report is idempotent by attempt token, so sending it again is safe.
 */
function reportRetryable(e: unknown): boolean {
  if (e instanceof ValidationError) return false;
  const status = (e as { name?: unknown; status?: unknown } | null)?.status;
  return !(
    (e as { name?: unknown }).name === 'HttpError' &&
    typeof status === 'number' &&
    status >= 400 &&
    status < 500 &&
    status !== 408 &&
    status !== 429
  );
}

/**
 * Reports in flight at once. Two let Node's work on one batch overlap the store's on another;
 * a store that runs one transaction at a time (SQLite) just queues the second.
 */
const REPORTS_IN_FLIGHT = 2;

/** How soon an idle worker looks again at a due task that a concurrency limit held back. */
const BLOCKED_RECHECK_MS = 200;

export class Worker {
  /** Attempts this worker holds, by `attemptKey`. */
  private readonly running = new Map<string, Running>();
  private completions: Array<AttemptRef & { result: unknown }> = [];
  private failures: Array<AttemptRef & { error: TaskError }> = [];
  private flushScheduled = false;
  /** Failed tries of the outcomes waiting to be reported again, and the timer of the next. */
  private reportFailures = 0;
  private reportFailingSince = 0;
  private reportRetryTimer: NodeJS.Timeout | undefined;
  /** Set once stop's grace is over: a report that fails then is not tried again. */
  private givingUp = false;
  /** Reports in flight (at most REPORTS_IN_FLIGHT), and the outcomes they carry. */
  private readonly reports = new Set<Promise<void>>();
  private outcomesInFlight = 0;
  /**
   * Claims in flight, alone or riding on a report, until the tasks they brought are started
   * (stop waits for them: their tasks must run or be given back); `unanswered` of them have no
   * answer yet, and they asked for `reserved` tasks in all.
   */
  private readonly claims = new Set<Promise<void>>();
  private unanswered = 0;
  private reserved = 0;
  /** The claim in flight on its own (not with a report), if any, and how many tasks it asked for. */
  private alone: Promise<void> | undefined;
  private aloneWant = 0;
  /** When the last claim began: tasks due before it that it did not take were held back. */
  private claimStartedAt = 0;
  /** Wake-ups heard (onReady): work may have become ready since a claim came back short. */
  private wakes = 0;
  /**
   * Set when a claim came back short, on a port that hears every task made ready (see
   * WorkerPort.hearsAllReady): the wake-ups heard when the next due time was read, and that
   * time (null: none queued). Until another wake-up, or that time, a claim would find nothing.
   */
  private drained: { wakes: number; next: number | null } | undefined;
  /** Ends a long-poll claim early, on stop. */
  private longPoll: AbortController | undefined;
  private stopped = true;
  private wakeTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private beating = false;
  private idleWaiters: Array<() => void> = [];
  private readonly unsubscribe: Array<() => void> = [];
  private readonly types: string[];
  /** Errors of the loop itself (not of handlers), reported once instead of crashing the process. */
  onError: (e: unknown) => void = (e) => console.error('dynatask worker:', e);

  constructor(
    private readonly port: WorkerPort,
    private readonly handlers: Map<string, Handler>,
    private readonly opts: WorkerOptions,
  ) {
    this.types = [...handlers.keys()];
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    const ready = this.port.onReady?.(this.opts.namespace, this.types, () => {
      this.wakes++;
      this.pump();
    });
    if (ready) this.unsubscribe.push(ready);
    const cancelled = this.port.onCancelled?.((ids) => {
      // A cancellation is of the task: it reaches whichever of its attempts runs here.
      const cancelledIds = new Set(ids);
      for (const r of this.running.values())
        if (cancelledIds.has(r.claimed.id)) r.controller.abort(new Error('task cancelled'));
    });
    if (cancelled) this.unsubscribe.push(cancelled);
    this.beating = true;
    this.scheduleHeartbeat();
    this.pump();
  }

  /**
   * Stops claiming and waits up to `graceMs` for running handlers to finish and their
   * outcomes to be stored, heartbeating meanwhile. Handlers still running then are aborted
   * and abandoned: their leases expire and the tasks are retried by another worker.
   */
  async stop(graceMs = 30_000): Promise<void> {
    this.stopped = true;
    clearTimeout(this.wakeTimer);
    this.longPoll?.abort();
    await Promise.all(this.claims);
    const deadline = Date.now() + graceMs;
    const busy = () =>
      this.running.size > 0 || this.completions.length || this.failures.length || this.reports.size > 0;
    while (busy() && Date.now() < deadline) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => this.idleWaiters.push(r)),
        new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, deadline - Date.now())))),
      ]);
      clearTimeout(timer);
    }
    this.beating = false;
    clearTimeout(this.heartbeatTimer);
    for (const u of this.unsubscribe.splice(0)) u();
    for (const r of this.running.values()) r.controller.abort(new Error('worker stopped'));
    this.givingUp = true;
    await Promise.all(this.reports);
    clearTimeout(this.reportRetryTimer);
    this.reportRetryTimer = undefined;
    this.flushScheduled = false;
    const unreported = this.completions.length + this.failures.length;
    if (unreported) {
      // The grace is over and the store still refuses them: their leases expire instead.
      for (const o of [...this.completions, ...this.failures]) this.running.delete(attemptKey(o));
      this.completions = [];
      this.failures = [];
      this.onError(
        new Error(`${unreported} outcomes not stored before stop; their tasks run again after their leases`),
      );
    }
    this.givingUp = false;
  }

  /** Number of handlers running now. */
  get busy(): number {
    return this.running.size;
  }

  /**
   * Slots no claim has asked for yet: the outcomes of reports in flight free theirs, and the
   * claims in flight (those reports' and any other) take theirs.
   */
  private free(): number {
    return this.opts.concurrency - this.running.size + this.outcomesInFlight - this.reserved;
  }

  private pump(wait = false): void {
    // One claim of its own at a time, and none beside a claim that has not answered yet: its
    // answer says whether more work is there.
    if (this.stopped || this.unanswered > 0) return;
    const want = Math.min(this.free(), this.opts.batchSize);
    if (want <= 0) return;
    clearTimeout(this.wakeTimer);
    const q = { namespace: this.opts.namespace, types: this.types, limit: want, leaseMs: this.opts.leaseMs };
    let signal: AbortSignal | undefined;
    if (wait) {
      this.longPoll = new AbortController();
      signal = this.longPoll.signal;
    }
    this.claimStartedAt = Date.now();
    const answered = () => {
      this.unanswered--;
      this.reserved -= want;
    };
    this.unanswered++;
    this.reserved += want;
    const claim: Promise<void> = this.port
      .claim(wait ? { ...q, waitMs: this.opts.longPollMs ?? 10_000 } : q, signal)
      .then(
        (claimed) => {
          answered();
          return this.claimed(claimed, want);
        },
        (e) => {
          answered();
          this.claimFailed(e);
        },
      )
      .catch((e) => this.onError(e))
      .finally(() => {
        this.claims.delete(claim);
        if (this.alone === claim) this.alone = undefined;
      });
    this.claims.add(claim);
    this.alone = claim;
    this.aloneWant = want;
  }

  /** Claims for capacity just freed, unless a claim would find nothing (see `drained`). */
  private refill(): void {
    const d = this.drained;
    if (d && d.wakes === this.wakes && (d.next === null || d.next > Date.now())) return;
    this.pump();
  }

  /**
   * Starts claimed tasks; claims again at once if the batch was full, else sleeps (or, on a
   * port that long-polls, claims again and waits there for work).
   */
  private async claimed(claimed: PortTask[], want: number): Promise<void> {
    this.longPoll = undefined;
    if (this.stopped) {
      // Stopping: what the claim brought is given back unstarted, for another worker to take
      // now rather than once its lease expires. (stop waits for this: it awaits the claim.)
      if (claimed.length)
        await this.port
          .release(claimed.map((c) => ({ id: c.id, token: c.token })))
          .catch((e) => this.onError(e));
      return;
    }
    for (const c of claimed) this.runTask(c);
    const drained = this.drained;
    this.drained = undefined;
    if (claimed.length === want) {
      this.pump();
      return;
    }
    if (this.port.longPoll) {
      // Handlers finishing meanwhile report without a claim; the poll answers as work arrives.
      this.pump(true);
      return;
    }
    // Fewer than asked: sleep until a wake-up, the next due task, or the safety-net poll.
    let delay = this.opts.pollMs;
    try {
      // No wake-up since the last read of the next due time: no task was queued since, so it
      // still holds, unless that task was due when this claim looked (held back, or taken).
      const wakes = this.wakes;
      const known =
        drained?.wakes === wakes && (drained.next === null || drained.next > this.claimStartedAt)
          ? drained
          : undefined;
      const next = known
        ? known.next
        : ((await this.port.nextRunAt?.(this.opts.namespace, this.types)) ?? null);
      if (this.port.hearsAllReady) this.drained = known ?? { wakes, next };
      // A task due when the claim looked, yet passed over, is held back by a concurrency limit
      // (or was taken by another worker): a freed slot wakes this worker, so until then look
      // again now and then rather than in a busy loop of claims.
      if (next !== null)
        delay = Math.min(
          delay,
          next <= this.claimStartedAt ? BLOCKED_RECHECK_MS : Math.max(1, next - Date.now()),
        );
    } catch (e) {
      this.onError(e); // the store is unreachable: poll again later
    }
    clearTimeout(this.wakeTimer);
    if (!this.stopped && this.unanswered === 0) this.wakeTimer = setTimeout(() => this.pump(), delay);
  }

  private claimFailed(e: unknown): void {
    const aborted = this.longPoll?.signal.aborted;
    this.longPoll = undefined;
    if (aborted) {
      this.pump();
      return;
    }
    this.onError(e);
    clearTimeout(this.wakeTimer);
    if (!this.stopped) this.wakeTimer = setTimeout(() => this.pump(), this.opts.pollMs);
  }

  private runTask(claimed: PortTask): void {
    const handler = this.handlers.get(claimed.type)!;
    const controller = new LazyAbort();
    const entry: Running = { claimed, controller, timer: undefined, done: false };
    this.running.set(attemptKey(claimed), entry);
    const { timeoutMs, payload } = claimed;
    if (timeoutMs !== null) {
      entry.timer = setTimeout(
        () => {
          const err = new Error(`attempt ${claimed.attempt} timed out after ${timeoutMs} ms`);
          err.name = 'TimeoutError';
          controller.abort(err);
          this.finish(entry, { error: toTaskError(err) });
        },
        claimed.startedAt + timeoutMs - Date.now(),
      );
    }
    const ctx = new TaskContext(
      this.port,
      {
        id: claimed.id,
        jobId: claimed.jobId,
        parentId: claimed.parentId,
        type: claimed.type,
        attempt: claimed.attempt,
        payload,
      },
      claimed.token,
      controller,
    );
    let promise: Promise<unknown>;
    try {
      promise = Promise.resolve(handler(ctx, payload));
    } catch (e) {
      promise = Promise.reject(e);
    }
    promise.then(
      (result) => this.finish(entry, ctx.suspended ? { suspended: true } : { result }),
      (e: unknown) =>
        this.finish(
          entry,
          ctx.suspended || e instanceof SuspendSignal ? { suspended: true } : { error: toTaskError(e) },
        ),
    );
  }

  private finish(
    entry: Running,
    outcome: { result: unknown } | { error: TaskError } | { suspended: true },
  ): void {
    if (entry.done) return;
    entry.done = true;
    clearTimeout(entry.timer);
    const ref = { id: entry.claimed.id, token: entry.claimed.token };
    if (entry.controller.aborted && !('error' in outcome && outcome.error.name === 'TimeoutError')) {
      // Cancelled or lease lost: the store rejects this attempt's outcome anyway.
      this.running.delete(attemptKey(ref));
      this.pump();
      this.notifyIdle();
      return;
    }
    if ('suspended' in outcome) {
      this.running.delete(attemptKey(ref));
      this.refill();
      this.notifyIdle();
      return;
    }
    if ('result' in outcome) this.completions.push({ ...ref, result: outcome.result });
    else this.failures.push({ ...ref, error: outcome.error });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // setImmediate lets every handler that finishes in this turn join one batch.
      setImmediate(() => void this.flush());
    }
  }

  private async flush(): Promise<void> {
    // The reports in flight are as many as may be: these outcomes wait for one to return
    // (with whatever else finishes meanwhile).
    while (this.reports.size >= REPORTS_IN_FLIGHT) await Promise.race(this.reports);
    // A short claim of its own in flight (a slot freed by a suspended handler): let it land, so
    // these outcomes carry the next claim and batches do not fragment. A full one (the second
    // batch, at start) is not waited for: its batch alternates with this one.
    if (this.alone && this.aloneWant < this.opts.batchSize && !this.longPoll && !this.stopped)
      await this.alone;
    this.flushScheduled = false;
    const completions = this.completions;
    const failures = this.failures;
    this.completions = [];
    this.failures = [];
    const n = completions.length + failures.length;
    if (!n) return;
    // Outcomes and the next claim share one transaction: the slots these tasks free are
    // refilled in the same round trip.
    const want = Math.min(this.free() + n, this.opts.batchSize);
    // With a long-poll in flight (no work was ready), outcomes go without a claim: work they
    // make ready answers that poll. Aborting it instead could drop tasks it just claimed.
    const claimNow = !this.stopped && !this.longPoll && want > 0;
    if (claimNow) {
      this.claimStartedAt = Date.now();
      this.unanswered++;
      this.reserved += want;
      clearTimeout(this.wakeTimer);
    }
    this.outcomesInFlight += n;
    let claimDone!: () => void;
    const claim = claimNow ? new Promise<void>((r) => (claimDone = r)) : undefined;
    if (claim) this.claims.add(claim);
    const report = (async () => {
      let claimed: PortTask[] | undefined;
      let retry = false;
      try {
        const r = await this.port.report(
          completions,
          failures,
          claimNow
            ? { namespace: this.opts.namespace, types: this.types, limit: want, leaseMs: this.opts.leaseMs }
            : undefined,
        );
        claimed = claimNow ? r.claimed : undefined;
        this.reportFailures = 0;
        this.reportFailingSince = 0;
      } catch (e) {
        this.onError(e);
        // Sent again after a backoff (with what finishes meanwhile), as it is idempotent by
        // token: dropped, these attempts would run again once their leases expired. The
        // worker keeps heartbeating them meanwhile.
        this.reportFailingSince ||= Date.now();
        retry =
          reportRetryable(e) && !this.givingUp && Date.now() - this.reportFailingSince < REPORT_RETRY_FOR_MS;
        if (retry) {
          this.completions = completions.concat(this.completions);
          this.failures = failures.concat(this.failures);
          this.retryReport();
        } else {
          // Given up (their leases expire instead): later outcomes start with a fresh budget.
          this.reportFailures = 0;
          this.reportFailingSince = 0;
        }
      }
      this.outcomesInFlight -= n;
      if (!retry) {
        for (const c of completions) this.running.delete(attemptKey(c));
        for (const f of failures) this.running.delete(attemptKey(f));
      }
      if (claim) {
        this.unanswered--;
        this.reserved -= want;
        try {
          if (claimed) await this.claimed(claimed, want);
          else this.claimFailed(new Error('claim skipped: reporting outcomes failed'));
        } finally {
          this.claims.delete(claim);
          claimDone();
        }
      }
    })();
    this.reports.add(report);
    try {
      await report;
    } finally {
      this.reports.delete(report);
    }
    this.refill();
    this.notifyIdle();
  }

  /** Schedules the next try of the outcomes a failed report left, after a capped backoff. */
  private retryReport(): void {
    this.reportFailures++;
    const exp = Math.min(REPORT_RETRY_MAX_MS, REPORT_RETRY_MS * 2 ** (this.reportFailures - 1));
    // Outcomes finishing meanwhile wait for this try instead of flushing at once.
    this.flushScheduled = true;
    clearTimeout(this.reportRetryTimer);
    this.reportRetryTimer = setTimeout(
      () => {
        this.reportRetryTimer = undefined;
        void this.flush();
      },
      exp / 2 + (Math.random() * exp) / 2,
    );
  }

  /**
   * Heartbeats renew leases every third of one; without cancellation notices (a remote
   * worker), they also tell running handlers of cancellations, so they come more often. The
   * lease is read each time: a remote port learns the server's from its claims.
   */
  private scheduleHeartbeat(): void {
    if (!this.beating) return;
    const lease = this.opts.leaseMs ?? this.port.leaseMs;
    const beat = Math.max(
      50,
      Math.min(Math.floor(lease / 3), this.port.cancelPollMs ?? Number.POSITIVE_INFINITY),
    );
    this.heartbeatTimer = setTimeout(() => {
      void this.heartbeat().finally(() => this.scheduleHeartbeat());
    }, beat);
    this.heartbeatTimer.unref();
  }

  private async heartbeat(): Promise<void> {
    // Attempts whose outcome waits to be stored (a report failed) are still held: their
    // leases are renewed until it is.
    const entries = [...this.running.values()];
    if (!entries.length) return;
    const refs = entries.map((r) => ({ id: r.claimed.id, token: r.claimed.token }));
    try {
      const status = await this.port.heartbeat(refs, this.opts.leaseMs);
      // Each answer is about the attempt it was asked for, never a later one of the same task.
      status.forEach((s, i) => {
        if (s === 'ok') return;
        entries[i]!.controller.abort(new Error(s === 'cancelled' ? 'task cancelled' : 'lease lost'));
      });
    } catch (e) {
      this.onError(e);
    }
  }

  private notifyIdle(): void {
    if (this.running.size === 0 || this.stopped) for (const w of this.idleWaiters.splice(0)) w();
  }
}
