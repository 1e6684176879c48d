/**
 * Prometheus metrics, in a registry of the server's own (several servers in one process, as in
 * the tests, must not share counters). Task counts are read from the store at scrape time, so
 * they are right across every process on the database; the counters count what went through
 * this server.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Engine } from '../engine/engine.js';

/** A grouped count of tasks, if the store offers one (see the report of the HTTP server work). */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests = new Counter({
    name: 'dynatask_http_requests_total',
    help: 'HTTP requests answered, by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly httpDuration = new Histogram({
    name: 'dynatask_http_request_duration_seconds',
    help: 'Time to answer an HTTP request (long polls included), by route',
    labelNames: ['route'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly claimDuration = new Histogram({
    name: 'dynatask_claim_duration_seconds',
    help: 'Time of one claim transaction (without the long-poll wait)',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
    registers: [this.registry],
  });
  readonly claimLatency = new Histogram({
    name: 'dynatask_claim_latency_seconds',
    help: 'From when a task became due (run_at) to when a worker claimed it through this server',
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 300],
    registers: [this.registry],
  });
  readonly claimed = new Counter({
    name: 'dynatask_tasks_claimed_total',
    help: 'Tasks claimed through this server',
    registers: [this.registry],
  });
  readonly completed = new Counter({
    name: 'dynatask_tasks_completed_total',
    help: 'Handler completions recorded through this server',
    registers: [this.registry],
  });
  readonly failed = new Counter({
    name: 'dynatask_attempts_failed_total',
    help: 'Failed attempts recorded through this server (retried or final)',
    registers: [this.registry],
  });
  readonly stale = new Counter({
    name: 'dynatask_stale_reports_total',
    help: 'Completions, failures and other calls refused because the attempt token was stale',
    registers: [this.registry],
  });
  readonly leaseExpiries = new Counter({
    name: 'dynatask_lease_expiries_total',
    help: 'Attempts failed by the lease sweeper of this server (their worker crashed or stalled)',
    registers: [this.registry],
  });
  readonly longPolls = new Gauge({
    name: 'dynatask_claim_long_polls',
    help: 'Claims waiting for work right now',
    registers: [this.registry],
  });
  readonly eventStreams = new Gauge({
    name: 'dynatask_event_streams',
    help: 'Open Server-Sent Event streams',
    registers: [this.registry],
  });

  constructor(engine: Pick<Engine, 'countTasks'>) {
    new Gauge({
      name: 'dynatask_tasks',
      help: 'Queued and running tasks by namespace and type, across every process on the database',
      labelNames: ['namespace', 'type', 'state'] as const,
      registers: [this.registry],
      // At scrape time: one grouped query over the two partial indexes, so the figure holds
      // across every process and stays cheap however many settled tasks the table holds.
      async collect() {
        this.reset();
        for (const c of await engine.countTasks())
          this.set({ namespace: c.namespace, type: c.type, state: c.state }, c.n);
      },
    });
  }
}
