/**
 * The wire contract in TypeBox: every request and response body of the HTTP API. The OpenAPI
 * document (GET /openapi.json, openapi.json at the repository root) is generated from these, so
 * they are written for thin clients in any language: named fields, no positional arrays.
 *
 * Bounds are part of validation, not decoration: they keep every value a client can send
 * inside what both stores accept (a NUL in a text column or an integer beyond int4 would
 * otherwise be a database error, i.e. a 500).
 */
import { type Static, type TSchema, Type } from 'typebox';
import {
  MAX_AFTER,
  MAX_ATTEMPTS,
  MAX_CONCURRENCY,
  MAX_EPOCH_MS,
  MAX_KEY_LENGTH,
  MAX_MS,
  MAX_NAME_LENGTH,
  MAX_PRIORITY,
  MAX_STEP_NAME_LENGTH,
  MIN_PRIORITY,
} from '../engine/limits.js';
import { TASK_STATES } from '../engine/types.js';

/** Text without NUL characters (PostgreSQL text cannot hold them). */
const Text = (opts: { minLength?: number; maxLength: number; description?: string }) =>
  Type.String({ pattern: '^[^\\u0000]*$', ...opts });

/** A task or job id: a UUID (any version; dynatask makes v7). */
export const Id = Type.String({
  pattern: '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$',
  description: 'A UUID',
});

const Ms = (description: string, minimum = 0) => Type.Integer({ minimum, maximum: MAX_MS, description });
const Int32 = { minimum: MIN_PRIORITY, maximum: MAX_PRIORITY };

export const TaskType = Text({ minLength: 1, maxLength: MAX_NAME_LENGTH, description: 'A task type' });
export const Namespace = Text({ minLength: 1, maxLength: MAX_NAME_LENGTH, description: "Default 'default'" });
/** Any JSON value (payloads, results, progress, step values). */
export const AnyJson = Type.Unknown({ description: 'Any JSON value' });

export const TaskState = Type.Enum([...TASK_STATES], { title: 'TaskState' });
export const JobState = Type.Enum(['running', 'succeeded', 'failed', 'cancelled'], { title: 'JobState' });

/** A task error as stored: plain data. */
export const TaskErrorSchema = Type.Object(
  {
    name: Type.String(),
    message: Type.String(),
    stack: Type.Optional(Type.String()),
    retryable: Type.Optional(Type.Boolean()),
    childTaskId: Type.Optional(Type.String()),
  },
  { title: 'TaskError' },
);
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

// ---------------------------------------------------------------- errors

export const ErrorBody = Type.Object(
  {
    error: Type.Object({
      code: Type.String({
        description:
          'invalid_request, unauthorized, forbidden, not_found, method_not_allowed, stale_attempt, conflict, payload_too_large, unsupported_media_type, unavailable, internal',
      }),
      message: Type.String(),
      field: Type.Optional(Type.String({ description: 'JSON pointer of the offending field' })),
    }),
  },
  { title: 'Error' },
);

// ---------------------------------------------------------------- task options

const TaskOptionsFields = {
  maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_ATTEMPTS, description: 'Default 3' })),
  backoffMs: Type.Optional(Ms('Base delay of the exponential backoff')),
  maxBackoffMs: Type.Optional(Ms('Cap on one backoff delay')),
  priority: Type.Optional(Type.Integer({ ...Int32, description: 'Higher runs first' })),
  runAt: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_EPOCH_MS, description: 'Epoch ms' })),
  delayMs: Type.Optional(Ms('Do not run before this many ms from now')),
  timeoutMs: Type.Optional(Ms('Per-attempt timeout', 1)),
  concurrency: Type.Optional(
    Type.Object(
      {
        key: Text({ minLength: 1, maxLength: MAX_NAME_LENGTH }),
        limit: Type.Integer({ minimum: 1, maximum: MAX_CONCURRENCY }),
      },
      { additionalProperties: false },
    ),
  ),
};

export const SubmitOptions = Type.Object(
  {
    ...TaskOptionsFields,
    namespace: Type.Optional(Namespace),
    jobId: Type.Optional({ ...Id, description: 'A UUID chosen by the client: resubmitting returns the job' }),
  },
  { additionalProperties: false, title: 'SubmitOptions' },
);

export const SpawnOptions = Type.Object(
  {
    ...TaskOptionsFields,
    key: Text({
      minLength: 1,
      maxLength: MAX_KEY_LENGTH,
      description:
        "The child's idempotency key among its parent's children (the TypeScript client uses #0, #1, ...)",
    }),
    dedupKey: Type.Optional(
      Text({ minLength: 1, maxLength: MAX_KEY_LENGTH, description: 'Unique within the job, e.g. a URL' }),
    ),
    after: Type.Optional(
      Type.Array(Text({ minLength: 1, maxLength: MAX_KEY_LENGTH }), {
        maxItems: MAX_AFTER,
        description: 'Task ids of this job, or spawn keys of siblings',
      }),
    ),
    runRegardless: Type.Optional(Type.Boolean()),
    ignoreFailure: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false, title: 'SpawnOptions' },
);

// ---------------------------------------------------------------- jobs and tasks

export const SubmitBody = Type.Object(
  {
    jobs: Type.Array(
      Type.Object(
        { type: TaskType, payload: Type.Optional(AnyJson), options: Type.Optional(SubmitOptions) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1000 },
    ),
  },
  { additionalProperties: false, title: 'SubmitRequest' },
);
export type SubmitBody = Static<typeof SubmitBody>;

export const SubmitReply = Type.Object(
  {
    jobs: Type.Array(
      Type.Object({ jobId: Type.String(), rootTaskId: Type.String(), created: Type.Boolean() }),
    ),
  },
  { title: 'SubmitResult' },
);

const Counts = Type.Object(Object.fromEntries(TASK_STATES.map((s) => [s, Type.Integer()])));

const JobFields = {
  id: Type.String(),
  namespace: Type.String(),
  type: Type.String(),
  rootTaskId: Type.String(),
  state: JobState,
  createdAt: Type.Integer(),
  settledAt: Nullable(Type.Integer()),
};

export const JobSummary = Type.Object(JobFields, { title: 'JobSummary' });
export const JobInfo = Type.Object(
  {
    ...JobFields,
    result: AnyJson,
    error: Nullable(TaskErrorSchema),
    counts: Counts,
    total: Type.Integer(),
  },
  { title: 'JobInfo' },
);

export const AttemptRecord = Type.Object(
  {
    attempt: Type.Integer(),
    startedAt: Type.Integer(),
    finishedAt: Type.Integer(),
    error: TaskErrorSchema,
  },
  { title: 'AttemptRecord' },
);

export const TaskInfo = Type.Object(
  {
    id: Type.String(),
    jobId: Type.String(),
    parentId: Nullable(Type.String()),
    type: Type.String(),
    key: Nullable(Type.String()),
    dedupKey: Nullable(Type.String()),
    state: TaskState,
    payload: AnyJson,
    result: AnyJson,
    error: Nullable(TaskErrorSchema),
    progress: AnyJson,
    attempt: Type.Integer(),
    maxAttempts: Nullable(Type.Integer()),
    priority: Type.Integer(),
    runAt: Type.Integer(),
    createdAt: Type.Integer(),
    startedAt: Nullable(Type.Integer()),
    finishedAt: Nullable(Type.Integer()),
    settledAt: Nullable(Type.Integer()),
    openChildren: Type.Integer(),
    workerId: Nullable(Type.String({ description: 'The worker holding the task while it runs' })),
    leaseExpiresAt: Nullable(Type.Integer({ description: "While it runs: when its worker's lease expires" })),
    attempts: Type.Optional(Type.Array(AttemptRecord)),
  },
  { title: 'TaskInfo' },
);

export const ListJobsQuery = Type.Object(
  {
    namespace: Type.Optional(Namespace),
    state: Type.Optional(JobState),
    type: Type.Optional(TaskType),
    createdAfter: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e14 })),
    createdBefore: Type.Optional(Type.Integer({ minimum: 0, maximum: 1e14 })),
    before: Type.Optional({ ...Id, description: 'The `next` of the previous page' }),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Default 100' })),
  },
  { additionalProperties: false },
);
export const ListJobsReply = Type.Object(
  { jobs: Type.Array(JobSummary), next: Nullable(Type.String()) },
  { title: 'JobPage' },
);

export const TreeQuery = Type.Object(
  {
    after: Type.Optional({ ...Id, description: 'The `next` of the previous page' }),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000, description: 'Default 1000' })),
  },
  { additionalProperties: false },
);
export const TreeReply = Type.Object(
  { tasks: Type.Array(TaskInfo), next: Nullable(Type.String()) },
  { title: 'TaskPage' },
);

export const JobParams = Type.Object({ jobId: Id });
export const TaskParams = Type.Object({ taskId: Id });
export const CancelBody = Type.Object(
  { reason: Type.Optional(Text({ maxLength: 10_000 })) },
  { additionalProperties: false, title: 'CancelRequest' },
);
export const CancelReply = Type.Object({ cancelled: Type.Boolean() }, { title: 'CancelResult' });
export const RetryBody = Type.Object(
  {
    attempt: Type.Optional(
      Type.Integer({
        minimum: 1,
        description:
          'The failed attempt to retry (the task view shows it). If that failure was retried already (a request repeated after its answer was lost), the answer is `retried: true` and nothing changes',
      }),
    ),
  },
  { additionalProperties: false, title: 'RetryRequest' },
);
export const RetryReply = Type.Object({ retried: Type.Boolean() }, { title: 'RetryResult' });
export const EmptyBody = Type.Object({}, { additionalProperties: false });

export const TypesQuery = Type.Object(
  { namespace: Type.Optional(Namespace) },
  { additionalProperties: false },
);
export const TypesReply = Type.Object(
  {
    types: Type.Array(Type.Object({ type: Type.String(), queued: Type.Integer(), served: Type.Boolean() })),
  },
  { title: 'TypeList' },
);

// ---------------------------------------------------------------- worker protocol

/** An attempt token: bumped on every claim of a task. */
const Token = Type.Integer({
  minimum: 0,
  maximum: 2147483647,
  description: 'The attempt token of the claim',
});
const Ref = { id: Id, token: Token };

/** The worker's name in claims: GET /v1/types shows its types as served while it claims. */
const WorkerId = Text({
  minLength: 1,
  maxLength: 200,
  description: 'Names the worker, so GET /v1/types shows its types as served',
});

/** A worker that stops: its types are no longer shown as served by it. */
export const WorkerStopBody = Type.Object(
  { workerId: WorkerId },
  { additionalProperties: false, title: 'WorkerStopRequest' },
);

const ClaimFields = {
  namespace: Type.Optional(Namespace),
  types: Type.Array(TaskType, { minItems: 1, maxItems: 1000 }),
  limit: Type.Integer({ minimum: 1, maximum: 1000 }),
  leaseMs: Type.Optional(
    Type.Integer({ minimum: 100, maximum: 86_400_000, description: "Default: the server's --lease-ms" }),
  ),
  workerId: Type.Optional(WorkerId),
  claimId: Type.Optional({
    ...Id,
    description:
      'A UUID the client chooses per claim: repeating the claim with it (after a lost answer) returns the same tasks',
  }),
};

export const ClaimBody = Type.Object(
  {
    ...ClaimFields,
    waitMs: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 30_000, description: 'Long-poll this long when none is ready' }),
    ),
  },
  { additionalProperties: false, title: 'ClaimRequest' },
);
export type ClaimBody = Static<typeof ClaimBody>;

export const ClaimedTask = Type.Object(
  {
    id: Type.String(),
    jobId: Type.String(),
    parentId: Nullable(Type.String()),
    namespace: Type.String(),
    type: Type.String(),
    payload: AnyJson,
    attempt: Type.Integer(),
    token: Type.Integer(),
    timeoutMs: Nullable(
      Type.Integer({ description: "Per-attempt timeout: the task's own, else its type's" }),
    ),
    startedAt: Type.Integer(),
    leaseExpiresAt: Type.Integer(),
  },
  { title: 'ClaimedTask' },
);
export const ClaimReply = Type.Object({ tasks: Type.Array(ClaimedTask) }, { title: 'ClaimResult' });

const Status = Type.Enum(['ok', 'stale']);

export const ReportBody = Type.Object(
  {
    completed: Type.Optional(
      Type.Array(Type.Object({ ...Ref, result: Type.Optional(AnyJson) }, { additionalProperties: false }), {
        maxItems: 1000,
      }),
    ),
    failed: Type.Optional(
      Type.Array(
        Type.Object(
          {
            ...Ref,
            error: Type.Object(
              {
                name: Type.Optional(Text({ maxLength: 200 })),
                message: Type.String({ maxLength: 100_000 }),
                stack: Type.Optional(Type.String({ maxLength: 100_000 })),
                retryable: Type.Optional(Type.Boolean()),
              },
              { additionalProperties: false },
            ),
          },
          { additionalProperties: false },
        ),
        { maxItems: 1000 },
      ),
    ),
    claim: Type.Optional(Type.Object(ClaimFields, { additionalProperties: false })),
  },
  { additionalProperties: false, title: 'ReportRequest' },
);
export type ReportBody = Static<typeof ReportBody>;
export const ReportReply = Type.Object(
  {
    completed: Type.Array(Status),
    failed: Type.Array(Status),
    tasks: Type.Array(ClaimedTask),
  },
  { title: 'ReportResult' },
);

export const HeartbeatBody = Type.Object(
  {
    items: Type.Array(Type.Object(Ref, { additionalProperties: false }), { minItems: 1, maxItems: 10_000 }),
    leaseMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000 })),
  },
  { additionalProperties: false, title: 'HeartbeatRequest' },
);
export const HeartbeatReply = Type.Object(
  {
    items: Type.Array(Type.Enum(['ok', 'cancelled', 'lost'])),
  },
  { title: 'HeartbeatResult' },
);

/** Claimed tasks a worker gives back unstarted (it stops): queued again, no attempt counted. */
export const ReleaseBody = Type.Object(
  {
    items: Type.Array(Type.Object(Ref, { additionalProperties: false }), { minItems: 1, maxItems: 1000 }),
  },
  { additionalProperties: false, title: 'ReleaseRequest' },
);
export const ReleaseReply = Type.Object({ items: Type.Array(Status) }, { title: 'ReleaseResult' });

/** A per-item failure inside a batched answer. */
const ItemError = Type.Object(
  {
    error: Type.Object({ code: Type.String(), message: Type.String() }),
  },
  { title: 'ItemError' },
);

export const WaitBody = Type.Object(
  {
    items: Type.Array(
      Type.Object(
        {
          ...Ref,
          all: Type.Optional(Type.Boolean({ description: 'Wait for every child (the default without ids)' })),
          ids: Type.Optional(Type.Array(Id, { maxItems: 100_000, description: 'Wait for these children' })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1000 },
    ),
  },
  { additionalProperties: false, title: 'WaitRequest' },
);
export type WaitBody = Static<typeof WaitBody>;

export const Outcome = Type.Object(
  {
    taskId: Type.String(),
    state: Type.Enum(['succeeded', 'failed', 'cancelled', 'skipped']),
    result: Type.Optional(AnyJson),
    error: Type.Optional(TaskErrorSchema),
  },
  { title: 'Outcome' },
);
export const WaitReply = Type.Object(
  {
    items: Type.Array(
      Type.Union([
        Type.Object({ suspended: Type.Literal(true) }, { title: 'WaitSuspended' }),
        Type.Object(
          { suspended: Type.Literal(false), outcomes: Type.Array(Outcome) },
          { title: 'WaitOutcomes' },
        ),
        ItemError,
      ]),
    ),
  },
  { title: 'WaitResult' },
);

export const SpawnBody = Type.Object(
  {
    items: Type.Array(
      Type.Object(
        {
          ...Ref,
          children: Type.Array(
            Type.Object(
              { type: TaskType, payload: Type.Optional(AnyJson), options: SpawnOptions },
              { additionalProperties: false },
            ),
            { maxItems: 10_000 },
          ),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1000 },
    ),
  },
  { additionalProperties: false, title: 'SpawnRequest' },
);
export type SpawnBody = Static<typeof SpawnBody>;

export const TaskHandle = Type.Object(
  {
    id: Type.String(),
    type: Type.String(),
    key: Type.String(),
    created: Type.Boolean(),
    parentId: Nullable(Type.String()),
  },
  { title: 'TaskHandle' },
);
export const SpawnReply = Type.Object(
  {
    items: Type.Array(
      Type.Union([
        Type.Object({ children: Type.Array(TaskHandle) }, { title: 'SpawnedChildren' }),
        ItemError,
      ]),
    ),
  },
  { title: 'SpawnResult' },
);

export const ProgressBody = Type.Object(
  { ...Ref, progress: AnyJson },
  { additionalProperties: false, title: 'ProgressRequest' },
);
export const StepGetBody = Type.Object(
  { ...Ref, name: Text({ minLength: 1, maxLength: MAX_STEP_NAME_LENGTH }) },
  { additionalProperties: false, title: 'StepGetRequest' },
);
export const StepGetReply = Type.Object(
  { found: Type.Boolean(), value: Type.Optional(AnyJson) },
  { title: 'StepValue' },
);
export const StepPutBody = Type.Object(
  { ...Ref, name: Text({ minLength: 1, maxLength: MAX_STEP_NAME_LENGTH }), value: Type.Optional(AnyJson) },
  { additionalProperties: false, title: 'StepPutRequest' },
);
export const OkReply = Type.Object({});

export const TypeConfigBody = Type.Object(
  {
    namespace: Type.Optional(Namespace),
    types: Type.Array(
      Type.Object(
        {
          type: TaskType,
          maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_ATTEMPTS })),
          backoffMs: Type.Optional(Ms('Base delay of the exponential backoff')),
          maxBackoffMs: Type.Optional(Ms('Cap on one backoff delay')),
          timeoutMs: Type.Optional(Ms('Per-attempt timeout', 1)),
          concurrency: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_CONCURRENCY })),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1000 },
    ),
  },
  { additionalProperties: false, title: 'TypeSettingsRequest' },
);
export type TypeConfigBody = Static<typeof TypeConfigBody>;

// ---------------------------------------------------------------- events and operations

export const EventsQuery = Type.Object(
  {
    kinds: Type.Optional(
      Type.String({
        pattern: '^(task|progress|job)(,(task|progress|job))*$',
        description:
          'Comma-separated kinds to receive (default all). `job` alone costs the server nothing per transaction: use it to learn when jobs settle',
      }),
    ),
  },
  { additionalProperties: false },
);
/** An event of a stream, as the JSON of its `data:` line (DynataskEvent in engine/types.ts). */
export const StreamEvent = Type.Union(
  [
    Type.Object(
      {
        kind: Type.Literal('task'),
        jobId: Type.String(),
        taskId: Type.String(),
        type: Type.String(),
        state: TaskState,
        at: Type.Integer({ description: 'Epoch ms' }),
      },
      { title: 'TaskEvent' },
    ),
    Type.Object(
      {
        kind: Type.Literal('progress'),
        jobId: Type.String(),
        taskId: Type.String(),
        type: Type.String(),
        progress: AnyJson,
        at: Type.Integer({ description: 'Epoch ms' }),
      },
      { title: 'ProgressEvent' },
    ),
    Type.Object(
      {
        kind: Type.Literal('job'),
        jobId: Type.String(),
        state: JobState,
        at: Type.Integer({ description: 'Epoch ms' }),
      },
      { title: 'JobEvent' },
    ),
  ],
  { title: 'Event' },
);

/**
 * One Server-Sent Event as a client's parser reads it: in OpenAPI 3.1 the schema of a
 * text/event-stream describes each event, and `data` holds the event's JSON.
 */
export const ServerSentEvent = Type.Object(
  {
    id: Type.Optional(Type.String({ description: 'Increases by one per event of this stream' })),
    event: Type.Optional(Type.String({ description: 'Not sent: the default, message' })),
    retry: Type.Optional(Type.Integer({ description: 'Reconnection delay in ms' })),
    data: Type.String({ contentMediaType: 'application/json', contentSchema: StreamEvent }),
  },
  { title: 'ServerSentEvent' },
);

export const HealthReply = Type.Object({ status: Type.String() }, { title: 'Health' });
