//! The wire types of the HTTP API (openapi.json) that the SDK uses, as serde structs.
//!
//! Field names follow the API's camelCase. A test (`tests/contract.rs`) checks these types
//! against the repository's openapi.json, so a change of the contract fails `cargo test`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A settled task, as a durable wait returns it: `result` when it succeeded, else `error`
/// (`{name, message, ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The task's id.
    pub task_id: String,
    /// `succeeded`, `failed`, `cancelled` or `skipped`.
    pub state: String,
    /// The result, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl Outcome {
    /// Whether the task succeeded.
    pub fn ok(&self) -> bool {
        self.state == "succeeded"
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Some task of it has not settled.
    Running,
    /// Its root task succeeded.
    Succeeded,
    /// Its root task failed.
    Failed,
    /// It was cancelled.
    Cancelled,
}

impl JobState {
    /// Whether the job has settled (any state but `Running`).
    pub fn settled(self) -> bool {
        self != JobState::Running
    }

    /// The state's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for the tasks it runs after.
    Blocked,
    /// Ready to be claimed (or due later).
    Queued,
    /// Held by a worker.
    Running,
    /// Suspended in a durable wait.
    Waiting,
    /// Its handler returned; its children have not all settled.
    Completing,
    /// Settled with a result.
    Succeeded,
    /// Settled with an error.
    Failed,
    /// Cancelled.
    Cancelled,
    /// Skipped (a task it ran after did not succeed).
    Skipped,
}

/// A task's error: `{name, message, stack?, retryable?, childTaskId?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskError {
    /// The error's name (`Error`, `TimeoutError`, ...).
    pub name: String,
    /// What went wrong.
    pub message: String,
    /// A stack trace, when the language gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// `false` when the handler asked for no further attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// The child whose failure failed this task, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_task_id: Option<String>,
}

/// At most `limit` tasks with concurrency `key` run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Concurrency {
    /// The concurrency key.
    pub key: String,
    /// How many may run at once (1..1000000).
    pub limit: u32,
}

/// Options of a submitted job (`options` of a `POST /v1/jobs` item). Durations are ms, times
/// epoch ms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitOptions {
    /// Attempts of the root task (1..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The first retry's backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The longest backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Higher runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<u64>,
    /// Not before this delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Time allowed per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The namespace (the client's unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The job's id (a UUID): submitting it again returns the existing job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// One job of a `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmitJob {
    /// The root task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Its options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SubmitOptions>,
}

/// The body of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// 1..1000 jobs.
    pub jobs: Vec<SubmitJob>,
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubmittedJob {
    /// The job's id.
    pub job_id: String,
    /// Its root task's id.
    pub root_task_id: String,
    /// `false` when a job of this id existed already (an idempotent resubmission).
    pub created: bool,
}

/// The answer of `POST /v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// The jobs, in the order submitted.
    pub jobs: Vec<SubmittedJob>,
}

/// A job's tasks counted by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Blocked tasks.
    pub blocked: u64,
    /// Queued tasks.
    pub queued: u64,
    /// Running tasks.
    pub running: u64,
    /// Waiting tasks.
    pub waiting: u64,
    /// Completing tasks.
    pub completing: u64,
    /// Succeeded tasks.
    pub succeeded: u64,
    /// Failed tasks.
    pub failed: u64,
    /// Cancelled tasks.
    pub cancelled: u64,
    /// Skipped tasks.
    pub skipped: u64,
}

/// A job (`GET /v1/jobs/{jobId}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobInfo {
    /// The job's id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its root task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its root task's id.
    pub root_task_id: String,
    /// Its state.
    pub state: JobState,
    /// When it was created (epoch ms).
    pub created_at: u64,
    /// When it settled.
    pub settled_at: Option<u64>,
    /// The root task's result (null until it succeeded).
    pub result: Value,
    /// The root task's error, when the job failed or was cancelled.
    pub error: Option<TaskError>,
    /// Its tasks counted by state.
    pub counts: Counts,
    /// How many tasks it has.
    pub total: u64,
}

/// A job in a list (`GET /v1/jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// The job's id.
    pub id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its root task's type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its root task's id.
    pub root_task_id: String,
    /// Its state.
    pub state: JobState,
    /// When it was created (epoch ms).
    pub created_at: u64,
    /// When it settled.
    pub settled_at: Option<u64>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobSummary>,
    /// The cursor of the next page (`before`), `None` on the last.
    pub next: Option<String>,
}

/// A failed attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// The attempt's number (1 = the first).
    pub attempt: u32,
    /// When it started.
    pub started_at: u64,
    /// When it failed.
    pub finished_at: u64,
    /// Its error.
    pub error: TaskError,
}

/// A task (`GET /v1/tasks/{taskId}`, or in a job's tree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInfo {
    /// The task's id.
    pub id: String,
    /// Its job's id.
    pub job_id: String,
    /// Its parent's id (`None` for a root task).
    pub parent_id: Option<String>,
    /// Its type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its spawn key among its siblings.
    pub key: Option<String>,
    /// Its dedup key.
    pub dedup_key: Option<String>,
    /// Its state.
    pub state: TaskState,
    /// Its payload.
    pub payload: Value,
    /// Its result (null until it succeeded).
    pub result: Value,
    /// Its error, when it failed.
    pub error: Option<TaskError>,
    /// Its last progress.
    pub progress: Value,
    /// Its current attempt (0 before the first).
    pub attempt: u32,
    /// Its attempts at most.
    pub max_attempts: Option<u32>,
    /// Its priority.
    pub priority: i32,
    /// Not before this time.
    pub run_at: u64,
    /// When it was created.
    pub created_at: u64,
    /// When its current attempt started.
    pub started_at: Option<u64>,
    /// When its handler last finished.
    pub finished_at: Option<u64>,
    /// When it settled.
    pub settled_at: Option<u64>,
    /// Its children that have not settled.
    pub open_children: u64,
    /// The worker holding it.
    pub worker_id: Option<String>,
    /// When the holder's lease expires.
    pub lease_expires_at: Option<u64>,
    /// Its failed attempts (`GET /v1/tasks/{taskId}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptRecord>>,
}

/// A page of a job's tasks, in creation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<TaskInfo>,
    /// The cursor of the next page (`after`), `None` on the last.
    pub next: Option<String>,
}

/// The body of a cancel call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (recorded in the tasks' errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of a cancel call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResult {
    /// `false` when it had settled already.
    pub cancelled: bool,
}

/// The body of `POST /v1/tasks/{taskId}/retry`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// The failed attempt to retry, so that a repeated call is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// The answer of `POST /v1/tasks/{taskId}/retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryResult {
    /// `true`.
    pub retried: bool,
}

/// A task type of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    /// The type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its queued tasks.
    pub queued: u64,
    /// Whether a live worker serves it.
    pub served: bool,
}

/// The answer of `GET /v1/types`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TypeList {
    /// The types.
    pub types: Vec<TypeInfo>,
}

/// An event of the server's streams (`GET /v1/jobs/{jobId}/events`, `GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Event {
    /// A task changed state.
    #[serde(rename_all = "camelCase")]
    Task {
        /// The job's id.
        job_id: String,
        /// The task's id.
        task_id: String,
        /// Its type.
        #[serde(rename = "type")]
        task_type: String,
        /// Its new state.
        state: TaskState,
        /// When (epoch ms).
        at: u64,
    },
    /// A task reported progress.
    #[serde(rename_all = "camelCase")]
    Progress {
        /// The job's id.
        job_id: String,
        /// The task's id.
        task_id: String,
        /// Its type.
        #[serde(rename = "type")]
        task_type: String,
        /// The progress.
        progress: Value,
        /// When (epoch ms).
        at: u64,
    },
    /// A job settled.
    #[serde(rename_all = "camelCase")]
    Job {
        /// The job's id.
        job_id: String,
        /// Its state.
        state: JobState,
        /// When (epoch ms).
        at: u64,
    },
}

impl Event {
    /// The job the event is about.
    pub fn job_id(&self) -> &str {
        match self {
            Event::Task { job_id, .. }
            | Event::Progress { job_id, .. }
            | Event::Job { job_id, .. } => job_id,
        }
    }
}

// -- the worker protocol (`/v1/worker/*`) ------------------------------------------------

/// One claim of tasks (`POST /v1/worker/claim`, or `claim` of a report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimRequest {
    /// The namespace (`default` when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The types served.
    pub types: Vec<String>,
    /// How many tasks at most.
    pub limit: u32,
    /// The lease of each claimed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// The worker's id (for `/v1/worker/stop` and the task's `workerId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// An id of this claim, so that a repeated claim (after a lost answer) returns the same
    /// tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<String>,
    /// How long to long-poll when nothing is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// A claimed task: its attempt is held by `token` until its lease expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedTask {
    /// The task's id.
    pub id: String,
    /// Its job's id.
    pub job_id: String,
    /// Its parent's id.
    pub parent_id: Option<String>,
    /// Its namespace.
    pub namespace: String,
    /// Its type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its payload.
    pub payload: Value,
    /// The attempt's number.
    pub attempt: u32,
    /// The attempt token, named in every call about the attempt.
    pub token: u32,
    /// Time allowed for the attempt.
    pub timeout_ms: Option<u64>,
    /// When the attempt started.
    pub started_at: u64,
    /// When its lease expires unless heartbeated.
    pub lease_expires_at: u64,
}

/// The answer of `POST /v1/worker/claim`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimResult {
    /// The tasks claimed (none when the long poll ran out).
    pub tasks: Vec<ClaimedTask>,
}

/// An attempt: a task and its attempt token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRef {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
}

/// A completed attempt of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Completed {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// The result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// The error of a failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedError {
    /// The error's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What went wrong.
    pub message: String,
    /// A stack trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// `false`: no further attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

/// A failed attempt of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// Its error.
    pub error: FailedError,
}

/// The body of `POST /v1/worker/report`: completions, failures and the next claim at once.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Attempts that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<Vec<Completed>>,
    /// Attempts that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Vec<Failed>>,
    /// The next claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<ClaimRequest>,
}

/// Whether an item of a batch was taken (`ok`) or its attempt no longer holds the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Taken.
    Ok,
    /// The attempt token no longer holds the task.
    Stale,
}

/// The answer of `POST /v1/worker/report`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResult {
    /// One status per completion, in order.
    pub completed: Vec<ItemStatus>,
    /// One status per failure, in order.
    pub failed: Vec<ItemStatus>,
    /// The tasks of the claim.
    pub tasks: Vec<ClaimedTask>,
}

/// The body of `POST /v1/worker/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The attempts to extend.
    pub items: Vec<AttemptRef>,
    /// Their new lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

/// What a heartbeat learnt of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeartbeatStatus {
    /// Extended.
    Ok,
    /// The task was cancelled: stop.
    Cancelled,
    /// The attempt no longer holds the task.
    Lost,
}

/// The answer of `POST /v1/worker/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatResult {
    /// One status per item, in order.
    pub items: Vec<HeartbeatStatus>,
}

/// The body of `POST /v1/worker/release` (attempts given back unstarted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The attempts.
    pub items: Vec<AttemptRef>,
}

/// The answer of `POST /v1/worker/release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// One status per item, in order.
    pub items: Vec<ItemStatus>,
}

/// Options of a spawned child; `key` names it among its siblings (a re-run that spawns the
/// same key gets the same child).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpawnOptions {
    /// Attempts at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The first retry's backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The longest backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Higher runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Not before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<u64>,
    /// Not before this delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Time allowed per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// A concurrency limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The spawn key.
    pub key: String,
    /// A key deduplicating across the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
    /// Keys of siblings (or ids) it runs after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// Run even when those did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_regardless: Option<bool>,
    /// Its failure does not fail the parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_failure: Option<bool>,
}

/// A child of a spawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnChild {
    /// Its type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Its options (with its key).
    pub options: SpawnOptions,
}

/// The children one attempt spawns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnItem {
    /// The parent's id.
    pub id: String,
    /// The parent's attempt token.
    pub token: u32,
    /// The children.
    pub children: Vec<SpawnChild>,
}

/// The body of `POST /v1/worker/spawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnRequest {
    /// One item per parent attempt.
    pub items: Vec<SpawnItem>,
}

/// A spawned child: `created` is false when the spawn found it already there (a re-run of the
/// handler, or a dedup key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHandle {
    /// The child's task id.
    pub id: String,
    /// Its task type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Its spawn key among its parent's children.
    pub key: String,
    /// Whether this spawn created it.
    pub created: bool,
    /// The task that owns it (another task's id when a dedup key found a task of another
    /// parent).
    pub parent_id: Option<String>,
}

impl AsRef<str> for TaskHandle {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

/// The error of one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemErrorBody {
    /// The server's code (`stale_attempt`, `invalid_request`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
}

/// An item of a batch that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// The error.
    pub error: ItemErrorBody,
}

impl From<ItemError> for crate::Error {
    fn from(e: ItemError) -> Self {
        crate::Error::from_code(0, &e.error.code, e.error.message, None)
    }
}

/// What a spawn item gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpawnItemResult {
    /// The children, in order.
    Spawned {
        /// The children.
        children: Vec<TaskHandle>,
    },
    /// The item failed.
    Error(ItemError),
}

/// The answer of `POST /v1/worker/spawn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpawnResult {
    /// One per item, in order.
    pub items: Vec<SpawnItemResult>,
}

/// A durable wait of one attempt: for all its children (`all`), or for the given `ids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitItem {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// Wait for all children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<bool>,
    /// Wait for these tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
}

/// The body of `POST /v1/worker/wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    /// One item per attempt.
    pub items: Vec<WaitItem>,
}

/// What a wait item gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WaitItemResult {
    /// Everything waited for had settled: the outcomes (`suspended: false`).
    Outcomes {
        /// `false`.
        suspended: bool,
        /// The outcomes, in order.
        outcomes: Vec<Outcome>,
    },
    /// The attempt is suspended (`suspended: true`): end the handler, it runs again later.
    Suspended {
        /// `true`.
        suspended: bool,
    },
    /// The item failed.
    Error(ItemError),
}

/// The answer of `POST /v1/worker/wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitResult {
    /// One per item, in order.
    pub items: Vec<WaitItemResult>,
}

/// The body of `POST /v1/worker/steps/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepGetRequest {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// The step's name.
    pub name: String,
}

/// The body of `POST /v1/worker/steps/put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPutRequest {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// The step's name.
    pub name: String,
    /// Its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A memoised step's value, if found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepValue {
    /// Whether the step had run.
    pub found: bool,
    /// Its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The body of `POST /v1/worker/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// The task's id.
    pub id: String,
    /// The attempt token.
    pub token: u32,
    /// The progress.
    pub progress: Value,
}

/// A task type's settings, shared by every worker of the namespace (`POST /v1/worker/types`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TypeSettings {
    /// The type.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Attempts at most per task (1..1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The base of the exponential retry backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// The longest backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// Time allowed per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Tasks of the type running at once across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

/// The body of `POST /v1/worker/types`: the settings of the types a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeSettingsRequest {
    /// The namespace (`default` when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// 1..1000 types.
    pub types: Vec<TypeSettings>,
}

/// The empty answer (`{}`) of the worker calls that return nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The body of `POST /v1/worker/stop` (the worker stopped: its types are no longer served).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerStopRequest {
    /// The worker's id.
    pub worker_id: String,
}
