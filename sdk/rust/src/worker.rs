//! The worker: serves task types of a dynatask server from this process.
//!
//! One loop takes batches of tasks with long polls and reports each batch of outcomes together
//! with the next claim in one request (one transaction on the server), two such requests in
//! flight at once by default (the handlers of one batch run while another batch is stored);
//! one heartbeat loop renews the leases of every attempt it holds in one batched call. Each
//! handler run is a tokio task. It behaves on the wire like the TypeScript remote worker
//! (src/engine/worker.ts over src/client/http-port.ts) and the Python SDK's.
//!
//! ```no_run
//! use dynatask::{TaskContext, TaskType, Worker};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Resize { width: u32 }
//!
//! # async fn demo() -> Result<(), dynatask::Error> {
//! Worker::builder("http://127.0.0.1:7077")
//!     .handle("resize", |ctx: TaskContext, p: Resize| async move {
//!         ctx.progress(&"working").await?;
//!         Ok(p.width * 2)
//!     })
//!     .handle(TaskType::new("slow").timeout(std::time::Duration::from_secs(60)),
//!             |_ctx: TaskContext, _p: serde_json::Value| async move { Ok("done") })
//!     .build()?
//!     .run()
//!     .await
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::context::{Attempt, TaskContext};
use crate::error::{Error, Result};
use crate::transport::{CallOptions, Method, Transport};
use crate::wire::{
    AttemptRef, ClaimRequest, ClaimResult, ClaimedTask, Completed, Empty, Failed, FailedError,
    HeartbeatRequest, HeartbeatResult, HeartbeatStatus, ReleaseRequest, ReleaseResult,
    ReportRequest, ReportResult, TypeSettings, TypeSettingsRequest, WorkerStopRequest,
};

/// Longest error message or stack sent (the server's bound).
const MAX_TEXT: usize = 100_000;
/// Bytes of outcomes per report request: well within the server's default body limit.
const REPORT_BYTES: usize = 512 * 1024;
/// How long outcomes whose report failed are tried again before their leases decide.
const REPORT_RETRY_FOR: Duration = Duration::from_secs(120);
const DEFAULT_LEASE_MS: u64 = 30_000;
/// Turns of the scheduler a report waits at most for more outcomes of handlers still running.
const COALESCE_TURNS: usize = 32;
/// While handlers run, heartbeats go at least this often: they also bring cancellations.
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// Reports (each with the next claim) in flight at once by default: while the server stores
/// one batch, the handlers of the other run (see [`WorkerBuilder::reports_in_flight`]).
pub const REPORTS_IN_FLIGHT: usize = 2;
/// The most reports in flight a worker may be given.
const MAX_REPORTS_IN_FLIGHT: usize = 8;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Value>> + Send>>;

/// A handler of one task type, as a trait implementation (closures register through
/// [`WorkerBuilder::handle`]).
///
/// The payload arrives deserialised as [`Payload`](Handler::Payload); one that does not
/// deserialise fails the attempt without retries (`PayloadValidationError`). What `run`
/// returns is the task's result; an error fails the attempt ([`Error::Task`] with
/// `retryable: false`, or [`Error::ChildTaskFailed`], fail the task at once), and
/// [`Error::Suspended`] (from a durable wait, through `?`) ends the run until the children it
/// waits for have settled.
pub trait Handler: Send + Sync + 'static {
    /// The payload's type (`serde_json::Value` takes any).
    type Payload: DeserializeOwned + Send + 'static;
    /// The result's type.
    type Output: Serialize + Send + 'static;

    /// One run of the handler.
    fn run(
        &self,
        ctx: TaskContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
}

/// An async closure as a [`Handler`].
struct FnHandler<F, P, R> {
    f: F,
    _types: PhantomData<fn(P) -> R>,
}

impl<F, Fut, P, R> Handler for FnHandler<F, P, R>
where
    F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R>> + Send + 'static,
    P: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    type Payload = P;
    type Output = R;

    fn run(&self, ctx: TaskContext, payload: P) -> impl Future<Output = Result<R>> + Send {
        (self.f)(ctx, payload)
    }
}

/// A handler with its types erased: the payload as JSON in, the result as JSON out.
trait Erased: Send + Sync {
    fn start(&self, ctx: TaskContext, payload: Value) -> std::result::Result<BoxFuture, String>;
}

struct Typed<H>(Arc<H>);

impl<H: Handler> Erased for Typed<H> {
    fn start(&self, ctx: TaskContext, payload: Value) -> std::result::Result<BoxFuture, String> {
        let payload: H::Payload = serde_json::from_value(payload).map_err(|e| {
            format!(
                "the payload of {} task {} is no {}: {e}",
                ctx.task_type(),
                ctx.task_id(),
                std::any::type_name::<H::Payload>()
            )
        })?;
        let h = Arc::clone(&self.0);
        Ok(Box::pin(async move {
            let out = h.run(ctx, payload).await?;
            serde_json::to_value(out).map_err(|e| Error::Task {
                name: "InvalidResult".to_owned(),
                message: format!("the result is not JSON-serialisable: {e}"),
                retryable: false,
            })
        }))
    }
}

/// A task type this worker serves, with the type's settings (shared by every worker of the
/// namespace; the last registration holds) and a limit of this worker's own.
#[derive(Debug, Clone)]
pub struct TaskType {
    settings: TypeSettings,
    local: Option<usize>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TaskType {
    /// The type `name`, with the server's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        TaskType {
            settings: TypeSettings {
                task_type: name.into(),
                ..TypeSettings::default()
            },
            local: None,
        }
    }

    /// Tasks of this type running at once across all workers of the namespace (kept by the
    /// server).
    pub fn concurrency(mut self, limit: u32) -> Self {
        self.settings.concurrency = Some(limit);
        self
    }

    /// Tasks of this type running at once in this worker (besides the worker's total).
    pub fn local_concurrency(mut self, limit: usize) -> Self {
        self.local = Some(limit.max(1));
        self
    }

    /// Attempts at most per task (1..1000).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.settings.max_attempts = Some(n);
        self
    }

    /// The base of the exponential retry backoff.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.settings.backoff_ms = Some(millis(backoff));
        self
    }

    /// The longest retry backoff.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.settings.max_backoff_ms = Some(millis(max));
        self
    }

    /// The time one attempt may run: then its worker fails it (`TimeoutError`, retried) and
    /// fires its cancellation token.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout_ms = Some(millis(timeout));
        self
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.settings.task_type
    }
}

impl From<&str> for TaskType {
    fn from(name: &str) -> Self {
        TaskType::new(name)
    }
}

impl From<String> for TaskType {
    fn from(name: String) -> Self {
        TaskType::new(name)
    }
}

struct Registered {
    spec: TaskType,
    handler: Arc<dyn Erased>,
}

/// Builds a [`Worker`]: the server, the handlers, the limits.
pub struct WorkerBuilder {
    url: String,
    token: Option<String>,
    namespace: String,
    concurrency: usize,
    batch_size: Option<usize>,
    reports_in_flight: usize,
    lease: Option<Duration>,
    grace: Duration,
    long_poll: Duration,
    worker_id: Option<String>,
    signals: bool,
    shutdown: CancellationToken,
    handlers: Vec<Registered>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .field("concurrency", &self.concurrency)
            .field(
                "types",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.spec.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// The bearer token (a `worker`-scoped one); by default `$DYNATASK_TOKEN`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The namespace served (`default` by default).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Handlers running at once in this process (16 by default).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Tasks claimed per request at most (the concurrency by default, 1000 at most). Below the
    /// concurrency, the slots hold several batches, and (with
    /// [`reports_in_flight`](WorkerBuilder::reports_in_flight)) one runs while another is
    /// stored: handlers that all end at once (trivial ones) pipeline only so, e.g. a
    /// concurrency of 512 with batches of 256.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.clamp(1, 1000));
        self
    }

    /// Requests reporting outcomes (each carrying the next claim) in flight at once, 1 to 8
    /// ([`REPORTS_IN_FLIGHT`], 2, by default). With more than one, the outcomes of handlers
    /// that end while a report is being stored go in a second one at once, and the handlers of
    /// its claim run while the first is stored; claims still never bring more than the
    /// concurrency: each asks only for the slots that neither running handlers nor the claims
    /// in flight hold. 1 reports one batch at a time. See also
    /// [`batch_size`](WorkerBuilder::batch_size).
    pub fn reports_in_flight(mut self, n: usize) -> Self {
        self.reports_in_flight = n.clamp(1, MAX_REPORTS_IN_FLIGHT);
        self
    }

    /// The lease asked for with claims and heartbeats; by default the server's `--lease-ms`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How long running handlers may take to finish once the worker stops (30 s by default);
    /// then they are failed (`WorkerStopped`, retried elsewhere).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long one claim waits on the server for work (10 s by default, 30 s at most).
    pub fn long_poll(mut self, wait: Duration) -> Self {
        self.long_poll = wait.min(Duration::from_secs(30));
        self
    }

    /// The worker's name on the server (by default host, process id and a random part).
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Whether SIGTERM and SIGINT stop the worker gracefully (yes by default; a second signal
    /// stops it without waiting for handlers).
    pub fn handle_signals(mut self, yes: bool) -> Self {
        self.signals = yes;
        self
    }

    /// A token that stops the worker gracefully when cancelled.
    pub fn shutdown_token(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Registers an async closure `|ctx: TaskContext, payload: P| async move { ... }` as the
    /// handler of `task_type` (a name, or a [`TaskType`] with settings).
    pub fn handle<F, Fut, P, R>(self, task_type: impl Into<TaskType>, f: F) -> Self
    where
        F: Fn(TaskContext, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
    {
        self.handler(
            task_type,
            FnHandler {
                f,
                _types: PhantomData,
            },
        )
    }

    /// Registers a [`Handler`] implementation as the handler of `task_type`.
    pub fn handler<H: Handler>(mut self, task_type: impl Into<TaskType>, handler: H) -> Self {
        let spec = task_type.into();
        self.handlers.retain(|h| h.spec.name() != spec.name());
        self.handlers.push(Registered {
            spec,
            handler: Arc::new(Typed(Arc::new(handler))),
        });
        self
    }

    /// The worker; fails without handlers, or with a bad URL.
    pub fn build(self) -> Result<Worker> {
        if self.handlers.is_empty() {
            return Err(Error::Validation {
                message: "no handlers: register some with .handle(type, f)".to_owned(),
                field: None,
            });
        }
        if let Some(h) = self.handlers.iter().find(|h| h.spec.name().is_empty()) {
            return Err(Error::Validation {
                message: format!("task type {:?} must be a non-empty string", h.spec.name()),
                field: None,
            });
        }
        let transport = Arc::new(Transport::new(&self.url, self.token.as_deref())?);
        let worker_id = self.worker_id.unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
            format!("{host}:{}:{}", std::process::id(), crate::client::uuid7())
        });
        let mut types = Vec::new();
        let mut handlers = HashMap::new();
        for r in self.handlers {
            types.push(r.spec.name().to_owned());
            handlers.insert(r.spec.name().to_owned(), r);
        }
        Ok(Worker {
            inner: Arc::new(Inner {
                transport,
                namespace: self.namespace,
                concurrency: self.concurrency,
                batch_size: self.batch_size.unwrap_or(self.concurrency).min(1000),
                reports_in_flight: self.reports_in_flight,
                lease_ms: self.lease.map(|l| l.as_millis() as u64),
                granted_lease_ms: AtomicU64::new(0),
                grace: Mutex::new(self.grace),
                long_poll_ms: self.long_poll.as_millis() as u64,
                worker_id,
                types,
                handlers,
                signals: self.signals,
                stopping: self.shutdown,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        })
    }
}

/// `{id, token}`: an attempt, as every worker call names it.
type Ref = (String, u32);

fn attempt_ref((id, token): &Ref) -> AttemptRef {
    AttemptRef {
        id: id.clone(),
        token: *token,
    }
}

struct Entry {
    attempt: Arc<Attempt>,
    task_type: String,
    done: bool,
    aborted: Option<String>,
    run: Option<AbortHandle>,
}

#[derive(Default)]
struct State {
    /// Attempts held: running, or ended with an outcome not stored yet (still heartbeated).
    running: HashMap<Ref, Entry>,
    completed: Vec<(Ref, Value)>,
    failed: Vec<(Ref, FailedError)>,
    /// A long poll is pending (one at most): outcomes go without a claim meanwhile.
    polling: bool,
    /// Reports and immediate claims in flight (the long poll aside).
    in_flight: usize,
    /// Tasks the claims in flight (the long poll's too) may bring: their slots are taken.
    claiming: usize,
    /// The last claim brought all it asked for: more work is likely ready, so free slots are
    /// claimed at once rather than long-polled.
    more: bool,
    /// Claims that failed in a row (their backoff).
    claim_failures: u32,
    /// A claim failed: none goes without outcomes until its backoff is over.
    pausing: bool,
}

impl State {
    fn remove(&mut self, key: &Ref) {
        self.running.remove(key);
    }

    fn has_outcomes(&self) -> bool {
        !self.completed.is_empty() || !self.failed.is_empty()
    }
}

struct Inner {
    transport: Arc<Transport>,
    namespace: String,
    concurrency: usize,
    batch_size: usize,
    reports_in_flight: usize,
    lease_ms: Option<u64>,
    granted_lease_ms: AtomicU64,
    grace: Mutex<Duration>,
    long_poll_ms: u64,
    worker_id: String,
    types: Vec<String>,
    handlers: HashMap<String, Registered>,
    signals: bool,
    stopping: CancellationToken,
    state: Mutex<State>,
    /// Something the loop (or the drain) waits for changed: an outcome, an answer, a signal.
    wake: Notify,
}

/// Serves the task types registered with its [`WorkerBuilder`] until it is stopped.
///
/// `concurrency` handlers run at once in this process; a type's
/// [`local_concurrency`](TaskType::local_concurrency) limits that type here, and its
/// [`concurrency`](TaskType::concurrency) across every worker (kept by the server). On
/// SIGTERM or SIGINT, or when its shutdown token is cancelled, [`run`](Worker::run) drains: it
/// stops claiming, gives back claimed tasks it will not start, lets running handlers finish
/// within the grace period (then fails them, retryably), and tells the server it stopped.
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("namespace", &self.inner.namespace)
            .field("types", &self.inner.types)
            .field("busy", &self.busy())
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The length of `v` as JSON, without building the text.
fn json_len(v: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the server stores of an error a handler returned.
fn task_error(e: &Error) -> FailedError {
    let (name, retryable) = match e {
        Error::Task {
            name, retryable, ..
        } => (name.as_str(), *retryable),
        // A child's failure is final, and bad input to a ctx call is a bug in the handler: a
        // re-run would fail the same way (as in TypeScript and Python).
        Error::ChildTaskFailed { .. } => ("ChildTaskFailedError", false),
        Error::Validation { .. } => ("ValidationError", false),
        Error::Decode(_) => ("DecodeError", false),
        Error::StaleAttempt { .. } => ("StaleAttemptError", true),
        Error::NotFound { .. } => ("NotFoundError", true),
        Error::Conflict { .. } => ("ConflictError", true),
        _ => ("DynataskError", true),
    };
    let message = match e {
        Error::Task { message, .. } => message.clone(),
        other => other.to_string(),
    };
    error(name, &message, (!retryable).then_some(false))
}

/// A failed attempt's error as reported, its texts within the server's bound.
fn error(name: &str, message: &str, retryable: Option<bool>) -> FailedError {
    FailedError {
        name: Some(clip(name)),
        message: clip(message),
        stack: None,
        retryable,
    }
}

enum Done {
    Result(Result<Value>),
    Payload(String),
    Panicked(String),
}

/// Outcomes to report, and the claim that goes with them (`(limit, types)`).
struct Outgoing {
    completed: Vec<(Ref, Value)>,
    failed: Vec<(Ref, FailedError)>,
    claim: Option<(usize, Vec<String>)>,
}

/// What the worker's loop does next.
enum Step {
    /// Report outcomes (taking a place in flight, and the claim's slots).
    Report(Outgoing),
    /// Claim this many tasks (of these types) at once, beside the reports in flight.
    Claim(usize, Vec<String>),
    /// Long-poll for this many: no work was left when last claimed.
    Poll(usize, Vec<String>),
    /// Nothing to do until something changes.
    Wait,
}

impl Worker {
    /// A builder of a worker of the server at `url` (`""`: `$DYNATASK_URL` or the default).
    pub fn builder(url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            url: url.into(),
            token: None,
            namespace: "default".to_owned(),
            concurrency: 16,
            batch_size: None,
            reports_in_flight: REPORTS_IN_FLIGHT,
            lease: None,
            grace: Duration::from_secs(30),
            long_poll: Duration::from_secs(10),
            worker_id: None,
            signals: true,
            shutdown: CancellationToken::new(),
            handlers: Vec::new(),
        }
    }

    /// The types this worker serves.
    pub fn types(&self) -> &[String] {
        &self.inner.types
    }

    /// The worker's name on the server.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// Attempts this worker holds now.
    pub fn busy(&self) -> usize {
        lock(&self.inner.state).running.len()
    }

    /// A token that stops the worker gracefully when cancelled (the builder's
    /// [`shutdown_token`](WorkerBuilder::shutdown_token), or one of its own).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.inner.stopping.clone()
    }

    /// Serves until stopped (a signal, or the shutdown token), then drains. Fails when the
    /// server refuses the type registration (or cannot be reached for its retry window).
    pub async fn run(self) -> Result<()> {
        let inner = self.inner;
        let signals = if inner.signals {
            Some(tokio::spawn(watch_signals(Arc::clone(&inner))))
        } else {
            None
        };
        let heartbeat = tokio::spawn(Arc::clone(&inner).heartbeat_loop());
        let served = async {
            let body = TypeSettingsRequest {
                namespace: Some(inner.namespace.clone()),
                types: inner
                    .types
                    .iter()
                    .map(|t| inner.handlers[t].spec.settings.clone())
                    .collect(),
            };
            tokio::select! {
                r = inner.transport.call::<Empty, _>(Method::POST, "/v1/worker/types", Some(&body)) => { r?; }
                _ = inner.stopping.cancelled() => return Ok(()),
            }
            Arc::clone(&inner).claim_loop().await;
            Arc::clone(&inner).drain().await;
            Ok(())
        }
        .await;
        heartbeat.abort();
        if let Some(s) = signals {
            s.abort();
        }
        let stop = WorkerStopRequest {
            worker_id: inner.worker_id.clone(),
        };
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(2)),
            retry_for: Some(Duration::from_secs(2)),
            ..CallOptions::default()
        };
        let stopped: Result<Empty> = inner
            .transport
            .call_with(Method::POST, "/v1/worker/stop", Some(&stop), &opts)
            .await;
        if let Err(e) = stopped {
            tracing::debug!(error = %e, "dynatask worker: stop not recorded");
        }
        served
    }
}

async fn watch_signals(inner: Arc<Inner>) {
    #[cfg(unix)]
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "dynatask worker: no SIGTERM handler");
            return;
        }
    };
    let mut first = true;
    loop {
        #[cfg(unix)]
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = tokio::signal::ctrl_c() => "SIGINT",
        };
        #[cfg(not(unix))]
        let name = {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        };
        if first {
            tracing::info!("dynatask worker: {name}: draining");
            inner.stopping.cancel();
            first = false;
        } else {
            tracing::warn!("dynatask worker: {name} again: stopping without waiting for handlers");
            *inner.grace.lock().unwrap_or_else(|p| p.into_inner()) = Duration::ZERO;
            inner.wake.notify_one();
        }
    }
}

impl Inner {
    fn lease(&self) -> u64 {
        self.lease_ms
            .or(match self.granted_lease_ms.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n),
            })
            .unwrap_or(DEFAULT_LEASE_MS)
    }

    /// How many tasks to claim and of which types: the free slots of the worker, and of the
    /// types with a local limit. The slots of the claims in flight are taken (they may bring
    /// tasks of any type); those of attempts that ended are free, their outcomes stored with
    /// the claim that refills them.
    fn capacity(&self, st: &State) -> (usize, Vec<String>) {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut busy = st.claiming;
        for e in st.running.values().filter(|e| !e.done) {
            busy += 1;
            *counts.entry(e.task_type.as_str()).or_default() += 1;
        }
        let mut free = self.concurrency.saturating_sub(busy).min(self.batch_size);
        let mut types = Vec::new();
        for t in &self.types {
            match self.handlers[t].spec.local {
                None => types.push(t.clone()),
                Some(limit) => {
                    let held = counts.get(t.as_str()).copied().unwrap_or(0) + st.claiming;
                    let left = limit.saturating_sub(held);
                    if left > 0 {
                        free = free.min(left);
                        types.push(t.clone());
                    }
                }
            }
        }
        if types.is_empty() {
            free = 0;
        }
        (free, types)
    }

    fn claim_body(&self, limit: usize, types: Vec<String>) -> ClaimRequest {
        ClaimRequest {
            namespace: Some(self.namespace.clone()),
            types,
            // At most the batch size, itself at most 1000.
            limit: limit as u32,
            lease_ms: self.lease_ms,
            worker_id: Some(self.worker_id.clone()),
            claim_id: Some(crate::client::uuid7()),
            wait_ms: None,
        }
    }

    /// What the loop does next, its slots and outcomes taken: report the outcomes (with a claim
    /// of the free slots, unless a long poll will fill them), claim at once, long-poll, or
    /// wait for a change.
    fn next_step(&self, st: &mut State) -> Step {
        let stopping = self.stopping.is_cancelled();
        let (free, types) = self.capacity(st);
        if st.has_outcomes() {
            if st.in_flight >= self.reports_in_flight {
                return Step::Wait;
            }
            let claim = (!st.polling && !stopping && free > 0).then_some((free, types));
            st.in_flight += 1;
            st.claiming += claim.as_ref().map_or(0, |c| c.0);
            return Step::Report(Outgoing {
                completed: std::mem::take(&mut st.completed),
                failed: std::mem::take(&mut st.failed),
                claim,
            });
        }
        if stopping || free == 0 || st.polling || st.pausing {
            return Step::Wait;
        }
        if st.more {
            // Work was left when the last claim was answered: fill the free slots now, beside
            // the reports in flight.
            if st.in_flight >= self.reports_in_flight {
                return Step::Wait;
            }
            st.in_flight += 1;
            st.claiming += free;
            return Step::Claim(free, types);
        }
        if st.claiming > 0 {
            // A claim in flight may yet bring work: its answer tells whether to wait for more.
            return Step::Wait;
        }
        st.polling = true;
        st.claiming += free;
        Step::Poll(free, types)
    }

    /// Handlers just started often end within a few turns of the scheduler, on any of its
    /// threads: their outcomes go in one report (as one turn of the event loop batches them in
    /// TypeScript), not each few in a round trip of their own. Done once no more come.
    async fn coalesce(&self) {
        let mut seen = usize::MAX;
        for _ in 0..COALESCE_TURNS {
            tokio::task::yield_now().await;
            let (outcomes, open) = {
                let st = lock(&self.state);
                let open = st.running.values().any(|e| !e.done);
                (st.completed.len() + st.failed.len(), open)
            };
            if outcomes == seen || !open {
                break;
            }
            seen = outcomes;
        }
    }

    /// Starts what [`next_step`](Inner::next_step) chose; `false` when it chose to wait.
    async fn step(self: &Arc<Self>) -> bool {
        let due = {
            let st = lock(&self.state);
            st.has_outcomes() && st.in_flight < self.reports_in_flight
        };
        if due {
            self.coalesce().await;
        }
        let step = self.next_step(&mut lock(&self.state));
        match step {
            Step::Wait => return false,
            Step::Report(out) => {
                tokio::spawn(Arc::clone(self).report(out));
            }
            Step::Claim(n, types) => {
                tokio::spawn(Arc::clone(self).claim(n, types, false));
            }
            Step::Poll(n, types) => {
                tokio::spawn(Arc::clone(self).claim(n, types, true));
            }
        }
        true
    }

    async fn claim_loop(self: Arc<Self>) {
        loop {
            if self.stopping.is_cancelled() {
                return;
            }
            if self.step().await {
                continue;
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.stopping.cancelled() => return,
            }
        }
    }

    /// One claim (a long poll when `poll`) of `limit` tasks, whose slots are taken already.
    async fn claim(self: Arc<Self>, limit: usize, types: Vec<String>, poll: bool) {
        let mut body = self.claim_body(limit, types);
        let mut opts = CallOptions::default();
        if poll {
            body.wait_ms = Some(self.long_poll_ms);
            opts.timeout = Some(Duration::from_millis(self.long_poll_ms + 30_000));
        }
        let claimed = tokio::select! {
            r = self.transport.call_with::<ClaimResult, _>(Method::POST, "/v1/worker/claim", Some(&body), &opts) => Some(r),
            // Closing the long poll's request: the server releases a claim whose client hung
            // up. (An immediate claim is let land: its tasks are given back.)
            _ = self.stopping.cancelled(), if poll => None,
        };
        match claimed {
            Some(Ok(t)) => {
                lock(&self.state).claim_failures = 0;
                self.landed(t.tasks, limit).await;
            }
            None => self.landed(Vec::new(), limit).await,
            Some(Err(e)) => {
                self.landed(Vec::new(), limit).await;
                let failures = {
                    let mut st = lock(&self.state);
                    st.claim_failures += 1;
                    st.pausing = true;
                    st.claim_failures
                };
                tracing::error!(error = %e, "dynatask worker: claim failed");
                let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                tokio::select! {
                    _ = tokio::time::sleep(pause.min(Duration::from_secs(5))) => {}
                    _ = self.stopping.cancelled() => {}
                }
                lock(&self.state).pausing = false;
            }
        }
        {
            let mut st = lock(&self.state);
            if poll {
                st.polling = false;
            } else {
                st.in_flight -= 1;
            }
        }
        self.wake.notify_one();
    }

    /// The tasks a claim of `asked` brought: run (their slots move from the claim to them in
    /// one step), or given back when stopping or of a type not served.
    async fn landed(self: &Arc<Self>, tasks: Vec<ClaimedTask>, asked: usize) {
        if let Some(t) = tasks.first() {
            if t.lease_expires_at > t.started_at {
                self.granted_lease_ms
                    .store(t.lease_expires_at - t.started_at, Ordering::Relaxed);
            }
        }
        let mut release = Vec::new();
        let mut runs = Vec::new();
        {
            let mut st = lock(&self.state);
            st.claiming = st.claiming.saturating_sub(asked);
            if asked > 0 {
                st.more = tasks.len() >= asked;
            }
            let stopping = self.stopping.is_cancelled();
            for t in tasks {
                let Some(reg) = self.handlers.get(&t.task_type) else {
                    release.push((t.id, t.token));
                    continue;
                };
                if stopping {
                    release.push((t.id, t.token));
                    continue;
                }
                let attempt = Arc::new(Attempt::new(
                    Arc::clone(&self.transport),
                    t.id,
                    t.job_id,
                    t.parent_id,
                    t.task_type.clone(),
                    t.attempt,
                    t.token,
                    t.payload,
                    self.lease_ms,
                ));
                let key: Ref = (attempt.id.clone(), attempt.token);
                st.running.insert(
                    key.clone(),
                    Entry {
                        attempt: Arc::clone(&attempt),
                        task_type: t.task_type,
                        done: false,
                        aborted: None,
                        run: None,
                    },
                );
                runs.push((key, attempt, Arc::clone(&reg.handler), t.timeout_ms));
            }
        }
        for (key, attempt, handler, timeout_ms) in runs {
            self.run(key, attempt, handler, timeout_ms);
        }
        if !release.is_empty() {
            self.release(release).await;
        }
    }

    /// One handler run, as a tokio task, with its timeout.
    fn run(
        self: &Arc<Self>,
        key: Ref,
        attempt: Arc<Attempt>,
        handler: Arc<dyn Erased>,
        timeout_ms: Option<u64>,
    ) {
        let payload = attempt.payload.clone();
        let ctx = TaskContext::new(Arc::clone(&attempt));
        let fut = match handler.start(ctx, payload) {
            Ok(f) => f,
            Err(message) => {
                self.finish(&key, Done::Payload(message));
                return;
            }
        };
        let me = Arc::clone(self);
        let k = key.clone();
        let handle = tokio::spawn(async move {
            let done = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => Done::Result(r),
                Err(p) => Done::Panicked(
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "the handler panicked".to_owned()),
                ),
            };
            me.finish(&k, done);
        });
        {
            let mut st = lock(&self.state);
            if let Some(e) = st.running.get_mut(&key) {
                e.run = Some(handle.abort_handle());
            }
        }
        if let Some(ms) = timeout_ms {
            let me = Arc::clone(self);
            let cancel = attempt.cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => me.timed_out(&key),
                    _ = cancel.cancelled() => {}
                }
            });
        }
    }

    fn timed_out(self: &Arc<Self>, key: &Ref) {
        let mut st = lock(&self.state);
        let Some(e) = st.running.get_mut(key) else {
            return;
        };
        if e.done || e.aborted.is_some() {
            return;
        }
        e.aborted = Some("timeout".to_owned());
        e.done = true;
        e.attempt.cancel.cancel();
        let message = format!(
            "attempt {} of task {} timed out",
            e.attempt.attempt, e.attempt.id
        );
        st.failed
            .push((key.clone(), error("TimeoutError", &message, None)));
        self.wake.notify_one();
    }

    fn abort(&self, st: &mut State, key: &Ref, why: &str) {
        if let Some(e) = st.running.get_mut(key) {
            if e.aborted.is_none() {
                e.aborted = Some(why.to_owned());
                e.attempt.cancel.cancel();
            }
        }
    }

    fn finish(self: &Arc<Self>, key: &Ref, done: Done) {
        let mut st = lock(&self.state);
        let Some(e) = st.running.get_mut(key) else {
            return;
        };
        if e.done {
            return;
        }
        e.done = true;
        let suspended = e.attempt.is_suspended();
        let aborted = e.aborted.is_some();
        // Stops its timeout timer.
        e.attempt.cancel.cancel();
        let outcome = match done {
            _ if suspended || aborted => None,
            Done::Result(Err(Error::Suspended)) => None,
            Done::Result(Ok(v)) => Some(Ok(v)),
            Done::Result(Err(err)) => Some(Err(task_error(&err))),
            Done::Payload(message) => {
                Some(Err(error("PayloadValidationError", &message, Some(false))))
            }
            Done::Panicked(message) => Some(Err(error("Panic", &message, None))),
        };
        match outcome {
            // Suspended, or the server rejects this attempt's outcome anyway.
            None => {
                st.remove(key);
                self.wake.notify_one();
                return;
            }
            Some(Ok(v)) => st.completed.push((key.clone(), v)),
            Some(Err(v)) => st.failed.push((key.clone(), v)),
        }
        self.wake.notify_one();
    }

    /// One report in flight: the outcomes (in several requests when over the server's limits,
    /// the claim with the last), tried again while the server cannot store them.
    async fn report(self: Arc<Self>, out: Outgoing) {
        let Outgoing {
            completed,
            failed,
            claim,
        } = out;
        let asked = claim.as_ref().map_or(0, |c| c.0);
        // Within the server's limits (1000 items a list, its body limit): a big batch goes in
        // several requests, the claim with the last.
        let mut chunks: Vec<(Vec<Completed>, Vec<Failed>, Vec<Ref>)> = vec![Default::default()];
        let (mut size, mut count) = (0usize, 0usize);
        let mut next = |n: usize, chunks: &mut Vec<(Vec<Completed>, Vec<Failed>, Vec<Ref>)>| {
            if count >= 1000 || (count > 0 && size + n > REPORT_BYTES) {
                chunks.push(Default::default());
                size = 0;
                count = 0;
            }
            size += n;
            count += 1;
        };
        for (key, result) in completed {
            next(json_len(&result), &mut chunks);
            let chunk = chunks.last_mut().expect("one chunk at least");
            chunk.0.push(Completed {
                id: key.0.clone(),
                token: key.1,
                result: Some(result),
            });
            chunk.2.push(key);
        }
        for (key, error) in failed {
            next(json_len(&error), &mut chunks);
            let chunk = chunks.last_mut().expect("one chunk at least");
            chunk.1.push(Failed {
                id: key.0.clone(),
                token: key.1,
                error,
            });
            chunk.2.push(key);
        }
        let last = chunks.len() - 1;
        let mut claimed = Vec::new();
        for (i, (done, fail, refs)) in chunks.into_iter().enumerate() {
            let body = ReportRequest {
                completed: Some(done),
                failed: (!fail.is_empty()).then_some(fail),
                claim: match &claim {
                    Some((n, types)) if i == last && !self.stopping.is_cancelled() => {
                        Some(self.claim_body(*n, types.clone()))
                    }
                    _ => None,
                },
            };
            let since = Instant::now();
            let mut tries: u32 = 0;
            // The attempts stay held (and heartbeated) while their outcomes are tried again.
            let tasks = loop {
                match self
                    .transport
                    .call::<ReportResult, _>(Method::POST, "/v1/worker/report", Some(&body))
                    .await
                {
                    Ok(r) => break r.tasks,
                    Err(e) => {
                        let retry = e.status() == 0 || e.status() >= 500 || e.status() == 429;
                        if !retry || since.elapsed() > REPORT_RETRY_FOR {
                            tracing::error!(error = %e, "dynatask worker: outcomes not stored; their leases decide");
                            break Vec::new();
                        }
                        tracing::warn!(error = %e, "dynatask worker: report failed, trying again");
                        tries += 1;
                        let pause = Duration::from_millis(100 * 2u64.pow(tries.min(6)));
                        tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
                    }
                }
            };
            {
                let mut st = lock(&self.state);
                for r in &refs {
                    st.remove(r);
                }
            }
            if i == last {
                claimed = tasks;
            }
        }
        self.landed(claimed, asked).await;
        lock(&self.state).in_flight -= 1;
        // The loop may send what waited for this slot; a drain learns that attempts ended.
        self.wake.notify_one();
    }

    async fn release(&self, refs: Vec<Ref>) {
        for chunk in refs.chunks(1000) {
            let body = ReleaseRequest {
                items: chunk.iter().map(attempt_ref).collect(),
            };
            let r: Result<ReleaseResult> = self
                .transport
                .call(Method::POST, "/v1/worker/release", Some(&body))
                .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "dynatask worker: release failed (their leases decide)");
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        loop {
            let every = Duration::from_millis(self.lease() / 3)
                .min(CANCEL_POLL)
                .max(Duration::from_millis(50));
            tokio::time::sleep(every).await;
            let refs: Vec<Ref> = {
                let st = lock(&self.state);
                st.running
                    .iter()
                    .filter(|(_, e)| e.aborted.is_none())
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            if refs.is_empty() {
                continue;
            }
            let body = HeartbeatRequest {
                items: refs.iter().map(attempt_ref).collect(),
                lease_ms: self.lease_ms,
            };
            let opts = CallOptions {
                retry_for: Some(every),
                ..CallOptions::default()
            };
            let r: Result<HeartbeatResult> = self
                .transport
                .call_with(Method::POST, "/v1/worker/heartbeat", Some(&body), &opts)
                .await;
            let statuses = match r {
                Ok(r) => r.items,
                Err(e) => {
                    tracing::error!(error = %e, "dynatask worker: heartbeat failed");
                    continue;
                }
            };
            let mut st = lock(&self.state);
            // Each answer is about the attempt it was asked for, never a later one.
            for (key, status) in refs.iter().zip(statuses) {
                match status {
                    HeartbeatStatus::Ok => {}
                    HeartbeatStatus::Cancelled => self.abort(&mut st, key, "cancelled"),
                    HeartbeatStatus::Lost => self.abort(&mut st, key, "lost"),
                }
            }
        }
    }

    /// Stopping: no more claims; running handlers get the grace period to finish and their
    /// outcomes are reported; then the late ones are failed, retryably. Returns once every
    /// outcome went and nothing is in flight.
    async fn drain(self: Arc<Self>) {
        let grace = *self.grace.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + grace;
        let mut late = None;
        loop {
            // Outcomes go (without claims) as they come, the reports in flight within the limit.
            if self.step().await {
                continue;
            }
            {
                let st = lock(&self.state);
                if st.running.is_empty() && st.in_flight == 0 && !st.polling {
                    break;
                }
            }
            let grace_now = *self.grace.lock().unwrap_or_else(|p| p.into_inner());
            let left = deadline.saturating_duration_since(Instant::now());
            if late.is_none() && (left.is_zero() || grace_now.is_zero()) {
                late = Some(self.fail_late(grace));
                continue;
            }
            if late.is_none() {
                let _ = tokio::time::timeout(left, self.wake.notified()).await;
            } else {
                self.wake.notified().await;
            }
        }
        if let Some(n) = late.filter(|n| *n > 0) {
            tracing::warn!("dynatask worker: {n} handlers still running after the grace");
        }
    }

    /// The grace is over: handlers still running are stopped and failed (retryably, rather
    /// than left to their leases: retried sooner); those cancelled or lost are let go.
    fn fail_late(&self, grace: Duration) -> usize {
        let mut st = lock(&self.state);
        let keys: Vec<Ref> = st
            .running
            .iter()
            .filter(|(_, e)| !e.done)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            let Some(e) = st.running.get_mut(k) else {
                continue;
            };
            e.done = true;
            e.attempt.cancel.cancel();
            if let Some(run) = &e.run {
                run.abort();
            }
            if e.aborted.is_none() {
                let message = format!(
                    "the worker stopped before the handler finished (grace {} ms)",
                    grace.as_millis()
                );
                st.failed
                    .push((k.clone(), error("WorkerStopped", &message, None)));
            } else {
                // The server rejects its outcome anyway.
                st.remove(k);
            }
        }
        keys.len()
    }
}

#[cfg(test)]
mod tests {
    //! The loop's accounting of reports and claims in flight, step by step (no server: each
    //! step is taken as the loop takes it, and the answers are handed in as the requests'
    //! tasks would).
    use super::*;

    /// A worker of 8 slots, batches of 4, whose handlers never end by themselves, of `a`, and
    /// of `b` (at most 2 at once here) when `with_b`.
    fn worker(reports_in_flight: usize, with_b: bool) -> Worker {
        let pending = |_ctx: TaskContext, _p: Value| std::future::pending::<Result<()>>();
        let mut b = Worker::builder("http://127.0.0.1:9")
            .concurrency(8)
            .batch_size(4)
            .reports_in_flight(reports_in_flight)
            .handle_signals(false)
            .handle("a", pending);
        if with_b {
            b = b.handle(TaskType::new("b").local_concurrency(2), pending);
        }
        b.build().expect("a worker")
    }

    fn tasks(range: std::ops::Range<usize>) -> Vec<ClaimedTask> {
        range
            .map(|i| ClaimedTask {
                id: format!("t{i}"),
                job_id: format!("j{i}"),
                parent_id: None,
                namespace: "default".to_owned(),
                task_type: "a".to_owned(),
                payload: Value::Null,
                attempt: 1,
                token: 1,
                timeout_ms: None,
                started_at: 0,
                lease_expires_at: 30_000,
            })
            .collect()
    }

    fn key(i: usize) -> Ref {
        (format!("t{i}"), 1)
    }

    /// The step taken, with what it carries: `("report", outcomes, claim)`, `("claim", 0, n)`,
    /// `("poll", 0, n)`, `("wait", 0, 0)`.
    fn step(inner: &Inner) -> (&'static str, usize, usize) {
        let mut st = lock(&inner.state);
        let s = inner.next_step(&mut st);
        // Never more attempts running and claimed than the concurrency.
        let active = st.running.values().filter(|e| !e.done).count();
        assert!(
            active + st.claiming <= inner.concurrency,
            "over the concurrency"
        );
        match s {
            Step::Report(o) => (
                "report",
                o.completed.len() + o.failed.len(),
                o.claim.map_or(0, |c| c.0),
            ),
            Step::Claim(n, _) => ("claim", 0, n),
            Step::Poll(n, _) => ("poll", 0, n),
            Step::Wait => ("wait", 0, 0),
        }
    }

    fn end(inner: &Arc<Inner>, i: usize) {
        inner.finish(&key(i), Done::Result(Ok(Value::Null)));
    }

    #[tokio::test]
    async fn a_second_report_goes_while_one_is_in_flight_and_claims_only_free_slots() {
        let w = worker(2, false);
        let inner = &w.inner;
        // Idle: one long poll, of a batch.
        assert_eq!(step(inner), ("poll", 0, 4));
        assert_eq!(step(inner), ("wait", 0, 0), "one long poll at most");
        // It brings a full batch: the other slots are claimed at once.
        inner.landed(tasks(0..4), 4).await;
        lock(&inner.state).polling = false;
        assert_eq!(step(inner), ("claim", 0, 4));
        // Two handlers end while that claim is in flight: their outcomes go at once, with a
        // claim of the two slots they free (the claim in flight holds the other four).
        end(inner, 0);
        end(inner, 1);
        assert_eq!(step(inner), ("report", 2, 2));
        assert_eq!(lock(&inner.state).in_flight, 2);
        // Two in flight: the next outcomes wait.
        end(inner, 2);
        end(inner, 3);
        assert_eq!(step(inner), ("wait", 0, 0));
        // The claim lands: its four run, and the waiting outcomes claim the two slots left.
        inner.landed(tasks(4..8), 4).await;
        lock(&inner.state).in_flight -= 1;
        assert_eq!(step(inner), ("report", 2, 2));
        // Every slot is held or claimed: outcomes go without a claim.
        lock(&inner.state).in_flight -= 1;
        end(inner, 4);
        {
            let st = lock(&inner.state);
            assert_eq!(st.claiming, 4);
        }
        assert_eq!(step(inner), ("report", 1, 1));
    }

    #[tokio::test]
    async fn one_report_in_flight_when_so_configured() {
        let w = worker(1, false);
        let inner = &w.inner;
        assert_eq!(step(inner), ("poll", 0, 4));
        inner.landed(tasks(0..4), 4).await;
        lock(&inner.state).polling = false;
        end(inner, 0);
        assert_eq!(step(inner), ("report", 1, 4));
        end(inner, 1);
        assert_eq!(step(inner), ("wait", 0, 0), "one report in flight at most");
    }

    #[tokio::test]
    async fn outcomes_go_without_a_claim_while_a_long_poll_is_pending() {
        let w = worker(2, false);
        let inner = &w.inner;
        assert_eq!(step(inner), ("poll", 0, 4));
        inner.landed(tasks(0..2), 4).await;
        // Fewer than asked: no more work was ready, so the free slots wait for a long poll,
        // after the claims in flight.
        assert!(!lock(&inner.state).more);
        lock(&inner.state).polling = false;
        assert_eq!(step(inner), ("poll", 0, 4));
        end(inner, 0);
        assert_eq!(step(inner), ("report", 1, 0));
        assert_eq!(lock(&inner.state).claiming, 4);
    }

    #[test]
    fn claims_in_flight_count_against_a_local_limit() {
        let w = worker(2, true);
        let inner = &w.inner;
        let mut st = lock(&inner.state);
        // A claim asking for `b` asks for 2 at most.
        assert_eq!(
            inner.capacity(&st),
            (2, vec!["a".to_owned(), "b".to_owned()])
        );
        // A claim in flight of one task may bring a `b`: one `b` slot is left.
        st.claiming = 1;
        assert_eq!(
            inner.capacity(&st),
            (1, vec!["a".to_owned(), "b".to_owned()])
        );
        // Two: none, so `b` is not asked for; `a` has the worker's free slots (batches of 4).
        st.claiming = 2;
        assert_eq!(inner.capacity(&st), (4, vec!["a".to_owned()]));
        st.claiming = 5;
        assert_eq!(inner.capacity(&st), (3, vec!["a".to_owned()]));
    }
}
