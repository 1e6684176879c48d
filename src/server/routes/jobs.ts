/** Jobs and tasks: submit, read, page through a tree, cancel and retry (operators and viewers). */
import { DEFAULTS } from '../../engine/defs.js';
import { NotFoundError } from '../../engine/errors.js';
import type { SubmitOptions } from '../../engine/types.js';
import type { ServerContext } from '../context.js';
import {
  CancelBody,
  CancelReply,
  JobInfo,
  JobParams,
  ListJobsQuery,
  ListJobsReply,
  RetryBody,
  RetryReply,
  SubmitBody,
  SubmitReply,
  TaskInfo,
  TaskParams,
  TreeQuery,
  TreeReply,
  TypesQuery,
  TypesReply,
} from '../schemas.js';
import { jobInfo, jobSummary, taskInfo, taskWithAttempts } from '../views.js';
import { errors, type Typed } from './common.js';

/** How long a worker's presence record counts as live for `served` (it is refreshed every 5 s). */
const LIVE_MS = 15_000;

export function jobRoutes(app: Typed, ctx: ServerContext): void {
  const { engine, store } = ctx;
  const tags = ['jobs'];

  app.post(
    '/v1/jobs',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'submitJobs',
        tags,
        summary: 'Submit jobs (each a root task); idempotent by options.jobId',
        body: SubmitBody,
        response: { 200: SubmitReply, ...errors(400, 401, 403, 413, 415) },
      },
    },
    async (req) => {
      const specs = req.body.jobs.map((j) => ({
        type: j.type,
        payload: j.payload,
        options: { ...(j.options as SubmitOptions | undefined) },
      }));
      return { jobs: await engine.submit(specs) };
    },
  );

  app.get(
    '/v1/jobs',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'listJobs',
        tags,
        summary: 'List jobs, newest first; page with `before` = the previous answer’s `next`',
        querystring: ListJobsQuery,
        response: { 200: ListJobsReply, ...errors(400, 401, 403) },
      },
    },
    async (req) => {
      const q = req.query;
      const limit = q.limit ?? 100;
      const rows = await store.listJobs({ ...q, namespace: q.namespace ?? DEFAULTS.namespace, limit });
      return { jobs: rows.map(jobSummary), next: rows.length === limit ? rows[rows.length - 1]!.id : null };
    },
  );

  app.get(
    '/v1/jobs/:jobId',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'getJob',
        tags,
        summary: 'A job with its result or error and its tasks counted by state',
        params: JobParams,
        response: { 200: JobInfo, ...errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const job = await store.getJob(req.params.jobId);
      if (!job) throw new NotFoundError(`job ${req.params.jobId} not found`);
      return jobInfo(store, job);
    },
  );

  app.get(
    '/v1/jobs/:jobId/tasks',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'listJobTasks',
        tags,
        summary: "A page of a job's tasks in creation order (each with its parentId, to build the tree)",
        params: JobParams,
        querystring: TreeQuery,
        response: { 200: TreeReply, ...errors(400, 401, 403, 404) },
      },
    },
    async (req) => {
      const { jobId } = req.params;
      const page = await store.taskPage(jobId, req.query.after ?? null, req.query.limit ?? 1000);
      // An empty first page is a job with no tasks, which does not exist: every job has its root.
      if (page.tasks.length === 0 && !(await store.getJob(jobId)))
        throw new NotFoundError(`job ${jobId} not found`);
      return { tasks: page.tasks.map(taskInfo), next: page.next };
    },
  );

  app.post(
    '/v1/jobs/:jobId/cancel',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'cancelJob',
        tags,
        summary: 'Cancel every unsettled task of a job; false if it had settled already',
        params: JobParams,
        body: CancelBody,
        response: { 200: CancelReply, ...errors(400, 401, 403, 404, 413, 415) },
      },
    },
    async (req) => ({ cancelled: await engine.cancelJob(req.params.jobId, req.body.reason) }),
  );

  app.get(
    '/v1/tasks/:taskId',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'getTask',
        tags: ['tasks'],
        summary: 'A task with its payload, result, error, timings and failed attempts',
        params: TaskParams,
        response: { 200: TaskInfo, ...errors(400, 401, 403, 404) },
      },
    },
    async (req) => taskWithAttempts(store, req.params.taskId),
  );

  app.post(
    '/v1/tasks/:taskId/cancel',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'cancelTask',
        tags: ['tasks'],
        summary: 'Cancel a task and its unsettled subtree; false if it had settled already',
        params: TaskParams,
        body: CancelBody,
        response: { 200: CancelReply, ...errors(400, 401, 403, 404, 413, 415) },
      },
    },
    async (req) => ({ cancelled: await engine.cancelTask(req.params.taskId, req.body.reason) }),
  );

  app.post(
    '/v1/tasks/:taskId/retry',
    {
      config: { access: 'operator' },
      schema: {
        operationId: 'retryTask',
        tags: ['tasks'],
        summary:
          'Queue a failed task again (fresh attempts), reopening the ancestors and job its failure settled; 409 if it has not failed',
        params: TaskParams,
        body: RetryBody,
        response: { 200: RetryReply, ...errors(400, 401, 403, 404, 409, 413, 415) },
      },
    },
    async (req) => {
      await engine.retryTask(req.params.taskId, req.body.attempt);
      return { retried: true };
    },
  );

  app.get(
    '/v1/types',
    {
      config: { access: 'read' },
      schema: {
        operationId: 'listTypes',
        tags: ['tasks'],
        summary: 'Queued tasks by type, and whether a live worker serves each type',
        querystring: TypesQuery,
        response: { 200: TypesReply, ...errors(400, 401, 403) },
      },
    },
    async (req) => {
      const ns = req.query.namespace ?? DEFAULTS.namespace;
      const [queued, live] = await Promise.all([
        store.queuedByType(ns),
        store.liveTypes(ns, Date.now() - LIVE_MS),
      ]);
      const served = new Set(live);
      return { types: queued.map((q) => ({ type: q.type, queued: q.n, served: served.has(q.type) })) };
    },
  );
}
