//! The worker: serves task types of a dynatask server from this process.
//!
//! One claim loop takes batches of tasks with long polls and reports each batch of outcomes
//! together with the next claim in one request (one transaction on the server); one heartbeat
//! loop renews the leases of every attempt it holds in one batched call. Each handler run is a
//! tokio task. It behaves on the wire like the TypeScript remote worker (src/engine/worker.ts
//! over src/client/http-port.ts) and the Python SDK's.
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

    /// Tasks claimed per request at most (the concurrency by default, 1000 at most).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.clamp(1, 1000));
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
            format!("{host}:{}:{}", std::process::id(), uuid_v4())
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
                flush_lock: tokio::sync::Mutex::new(()),
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
    running: HashMap<Ref, Entry>,
    completed: Vec<(Ref, Value)>,
    failed: Vec<(Ref, FailedError)>,
    polling: bool,
    side_flush: bool,
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
    wake: Notify,
    flush_lock: tokio::sync::Mutex<()>,
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

/// A random (version 4) UUID, as claim ids are.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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

impl Worker {
    /// A builder of a worker of the server at `url` (`""`: `$DYNATASK_URL` or the default).
    pub fn builder(url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            url: url.into(),
            token: None,
            namespace: "default".to_owned(),
            concurrency: 16,
            batch_size: None,
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
    /// types with a local limit.
    fn capacity(&self, st: &State) -> (usize, Vec<String>) {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        let mut busy = 0;
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
                    let left = limit.saturating_sub(counts.get(t.as_str()).copied().unwrap_or(0));
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
            claim_id: Some(uuid_v4()),
            wait_ms: None,
        }
    }

    async fn claim_loop(self: Arc<Self>) {
        let mut failures: u32 = 0;
        loop {
            if self.stopping.is_cancelled() {
                return;
            }
            let (free, types, outcomes) = {
                let st = lock(&self.state);
                let (free, types) = self.capacity(&st);
                (free, types, st.has_outcomes())
            };
            if outcomes {
                Arc::clone(&self).flush(true).await;
                continue;
            }
            if free == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = self.stopping.cancelled() => return,
                }
                continue;
            }
            let mut body = self.claim_body(free, types);
            body.wait_ms = Some(self.long_poll_ms);
            let opts = CallOptions {
                timeout: Some(Duration::from_millis(self.long_poll_ms + 30_000)),
                ..CallOptions::default()
            };
            lock(&self.state).polling = true;
            let claimed = tokio::select! {
                r = self.transport.call_with::<ClaimResult, _>(Method::POST, "/v1/worker/claim", Some(&body), &opts) => Some(r),
                // Closing the long poll's request: the server releases a claim whose client
                // hung up.
                _ = self.stopping.cancelled() => None,
            };
            lock(&self.state).polling = false;
            match claimed {
                None => return,
                Some(Ok(t)) => {
                    failures = 0;
                    self.start(t.tasks);
                }
                Some(Err(e)) => {
                    failures += 1;
                    tracing::error!(error = %e, "dynatask worker: claim failed");
                    let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        _ = tokio::time::sleep(pause.min(Duration::from_secs(5))) => {}
                        _ = self.stopping.cancelled() => return,
                    }
                }
            }
        }
    }

    fn start(self: &Arc<Self>, tasks: Vec<ClaimedTask>) {
        if let Some(t) = tasks.first() {
            if t.lease_expires_at > t.started_at {
                self.granted_lease_ms
                    .store(t.lease_expires_at - t.started_at, Ordering::Relaxed);
            }
        }
        let mut release = Vec::new();
        for t in tasks {
            let Some(reg) = self.handlers.get(&t.task_type) else {
                release.push((t.id, t.token));
                continue;
            };
            if self.stopping.is_cancelled() {
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
            let payload = attempt.payload.clone();
            let ctx = TaskContext::new(Arc::clone(&attempt));
            lock(&self.state).running.insert(
                key.clone(),
                Entry {
                    attempt: Arc::clone(&attempt),
                    task_type: t.task_type,
                    done: false,
                    aborted: None,
                    run: None,
                },
            );
            let fut = match reg.handler.start(ctx, payload) {
                Ok(f) => f,
                Err(message) => {
                    self.finish(&key, Done::Payload(message));
                    continue;
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
            if let Some(ms) = t.timeout_ms {
                let me = Arc::clone(self);
                let k = key.clone();
                let cancel = attempt.cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => me.timed_out(&k),
                        _ = cancel.cancelled() => {}
                    }
                });
            }
        }
        if !release.is_empty() {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.release(release).await });
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
        self.outcome_added(&mut st);
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
        self.outcome_added(&mut st);
    }

    fn outcome_added(self: &Arc<Self>, st: &mut State) {
        self.wake.notify_one();
        // A long poll is in flight (no work was ready): outcomes go without a claim, and work
        // they make ready answers that poll.
        if st.polling && !st.side_flush {
            st.side_flush = true;
            let me = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    {
                        let mut st = lock(&me.state);
                        if !st.polling || !st.has_outcomes() {
                            st.side_flush = false;
                            return;
                        }
                    }
                    Arc::clone(&me).flush(false).await;
                }
            });
        }
    }

    async fn flush(self: Arc<Self>, claim: bool) {
        let _guard = self.flush_lock.lock().await;
        // Handlers just started often end within a few turns of the scheduler, on any of its
        // threads: their outcomes go in this report (as one turn of the event loop batches them
        // in TypeScript), not each few in a round trip of their own. Done once no more come.
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
        let (completed, failed, want) = {
            let mut st = lock(&self.state);
            let completed = std::mem::take(&mut st.completed);
            let failed = std::mem::take(&mut st.failed);
            let want = if claim && !st.polling && !self.stopping.is_cancelled() {
                // The slots these outcomes free count: they are refilled in the same trip.
                Some(self.capacity(&st))
            } else {
                None
            };
            (completed, failed, want)
        };
        if completed.is_empty() && failed.is_empty() {
            return;
        }
        self.report(completed, failed, want.filter(|(n, _)| *n > 0))
            .await;
    }

    async fn report(
        self: &Arc<Self>,
        completed: Vec<(Ref, Value)>,
        failed: Vec<(Ref, FailedError)>,
        claim: Option<(usize, Vec<String>)>,
    ) {
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
            // A drain waiting for these attempts to end learns of it now.
            self.wake.notify_one();
            self.start(tasks);
        }
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
    /// outcomes are reported; then the late ones are failed, retryably.
    async fn drain(self: Arc<Self>) {
        let grace = *self.grace.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + grace;
        loop {
            let (busy, outcomes) = {
                let st = lock(&self.state);
                (!st.running.is_empty(), st.has_outcomes())
            };
            if outcomes {
                Arc::clone(&self).flush(false).await;
                continue;
            }
            if !busy {
                break;
            }
            let grace_now = *self.grace.lock().unwrap_or_else(|p| p.into_inner());
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || grace_now.is_zero() {
                break;
            }
            let _ = tokio::time::timeout(left, self.wake.notified()).await;
        }
        let late = {
            let mut st = lock(&self.state);
            let keys: Vec<Ref> = st
                .running
                .iter()
                .filter(|(_, e)| !e.done)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &keys {
                if let Some(e) = st.running.get_mut(k) {
                    e.done = true;
                    e.attempt.cancel.cancel();
                    if let Some(run) = &e.run {
                        run.abort();
                    }
                    // Failed (retryably) rather than left to their leases: retried sooner.
                    if e.aborted.is_none() {
                        let message = format!(
                            "the worker stopped before the handler finished (grace {} ms)",
                            grace.as_millis()
                        );
                        st.failed
                            .push((k.clone(), error("WorkerStopped", &message, None)));
                    }
                }
            }
            keys.len()
        };
        if lock(&self.state).has_outcomes() {
            Arc::clone(&self).flush(false).await;
        }
        if late > 0 {
            tracing::warn!("dynatask worker: {late} handlers still running after the grace");
        }
    }
}
