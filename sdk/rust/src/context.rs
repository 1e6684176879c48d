//! What a handler sees: its task, and the calls that spawn children, wait for them durably,
//! memoise steps and report progress.
//!
//! The execution model is the other SDKs' (src/engine/context.ts, sdk/python): a handler that
//! waits for unsettled children is suspended (its worker slot is freed) and later runs again
//! from the top. Spawns are idempotent by key, and a child without a key gets `#0`, `#1`, ...
//! in the order of the spawns that succeed in this run of the handler, so the re-run gets the
//! same children back; work that must not repeat goes in [`TaskContext::step`].
//!
//! A durable wait whose children are unsettled returns [`Error::Suspended`]: the `?` operator
//! carries it out of the handler, and the worker ends the run without reporting anything.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::transport::{Method, Transport};
use crate::wire::{
    AttemptRef, Concurrency, Empty, HeartbeatRequest, HeartbeatResult, HeartbeatStatus, Outcome,
    ProgressRequest, SpawnChild, SpawnItem, SpawnItemResult, SpawnOptions, SpawnRequest,
    SpawnResult, StepGetRequest, StepPutRequest, StepValue, WaitItem, WaitItemResult, WaitRequest,
    WaitResult,
};

pub use crate::wire::TaskHandle;

/// Children per spawn request (the server takes 10,000), as the other SDKs send.
const SPAWN_CHILDREN: usize = 5000;
/// Children named per wait request.
const WAIT_IDS: usize = 20_000;

/// A child to spawn with [`TaskContext::spawn_child`] or [`TaskContext::spawn_many`]: its type,
/// payload and options.
///
/// ```
/// use std::time::Duration;
/// let child = dynatask::Child::new("resize", &serde_json::json!({"w": 64}))
///     .unwrap()
///     .priority(5)
///     .timeout(Duration::from_secs(30))
///     .max_attempts(3);
/// ```
#[derive(Debug, Clone)]
pub struct Child {
    task_type: String,
    payload: Value,
    key: Option<String>,
    /// Its options; the key is set when it is spawned.
    options: SpawnOptions,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Child {
    /// A child of type `task_type` with the payload `payload` (any serialisable value).
    pub fn new(task_type: impl Into<String>, payload: &impl Serialize) -> Result<Self> {
        Ok(Child {
            task_type: task_type.into(),
            payload: serde_json::to_value(payload)?,
            key: None,
            options: SpawnOptions::default(),
        })
    }

    /// A child of type `task_type` with no payload (`null`).
    pub fn of_type(task_type: impl Into<String>) -> Self {
        Child {
            task_type: task_type.into(),
            payload: Value::Null,
            key: None,
            options: SpawnOptions::default(),
        }
    }

    /// Its idempotency key among the parent's children (not starting with `#`). Without one,
    /// children get `#0`, `#1`, ... in the order of the spawns.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A key unique within the job: a second spawn with it returns the first task.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.options.dedup_key = Some(key.into());
        self
    }

    /// Tasks of the job (ids, or handles through [`AsRef<str>`]) or sibling spawn keys this
    /// child runs after.
    pub fn after<I, S>(mut self, deps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.options.after = Some(deps.into_iter().map(|d| d.as_ref().to_owned()).collect());
        self
    }

    /// Its priority (higher first among ready tasks).
    pub fn priority(mut self, priority: i32) -> Self {
        self.options.priority = Some(priority);
        self
    }

    /// How long after its spawn it may start.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.options.delay_ms = Some(ms(delay));
        self
    }

    /// Its attempts at most (1..1000).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.options.max_attempts = Some(n);
        self
    }

    /// The base of its exponential retry backoff.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.options.backoff_ms = Some(ms(backoff));
        self
    }

    /// The longest retry backoff.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.options.max_backoff_ms = Some(ms(max));
        self
    }

    /// The time one attempt may run.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout_ms = Some(ms(timeout));
        self
    }

    /// At most `limit` tasks with this concurrency key run at once, across all workers.
    pub fn concurrency(mut self, key: impl Into<String>, limit: u32) -> Self {
        self.options.concurrency = Some(Concurrency {
            key: key.into(),
            limit,
        });
        self
    }

    /// A permanent failure of this child does not fail its parent.
    pub fn ignore_failure(mut self) -> Self {
        self.options.ignore_failure = Some(true);
        self
    }

    /// Runs once its dependencies have settled, whatever their outcome.
    pub fn run_regardless(mut self) -> Self {
        self.options.run_regardless = Some(true);
        self
    }

    fn wire(&self, key: String) -> SpawnChild {
        SpawnChild {
            task_type: self.task_type.clone(),
            payload: (!self.payload.is_null()).then(|| self.payload.clone()),
            options: SpawnOptions {
                key,
                ..self.options.clone()
            },
        }
    }
}

/// The numbering of implicit spawn keys within one run of a handler.
#[derive(Debug, Default)]
struct Keys {
    next: u64,
    /// Numbers given back by spawns that failed: handed out first, lowest first.
    free: Vec<u64>,
}

/// One attempt of a task as the worker holds it.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) transport: Arc<Transport>,
    pub(crate) id: String,
    pub(crate) job_id: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) task_type: String,
    pub(crate) attempt: u32,
    pub(crate) token: u32,
    pub(crate) payload: Value,
    pub(crate) lease_ms: Option<u64>,
    pub(crate) cancel: CancellationToken,
    pub(crate) suspended: AtomicBool,
    keys: Mutex<Keys>,
}

impl Attempt {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        transport: Arc<Transport>,
        id: String,
        job_id: String,
        parent_id: Option<String>,
        task_type: String,
        attempt: u32,
        token: u32,
        payload: Value,
        lease_ms: Option<u64>,
    ) -> Self {
        Attempt {
            transport,
            id,
            job_id,
            parent_id,
            task_type,
            attempt,
            token,
            payload,
            lease_ms,
            cancel: CancellationToken::new(),
            suspended: AtomicBool::new(false),
            keys: Mutex::new(Keys::default()),
        }
    }

    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<()> {
        if self.is_suspended() {
            Err(Error::Suspended)
        } else {
            Ok(())
        }
    }

    fn attempt_ref(&self) -> AttemptRef {
        AttemptRef {
            id: self.id.clone(),
            token: self.token,
        }
    }
}

/// The context of one run of a handler: the task's ids and attempt, and the calls that spawn
/// children, wait for them durably, memoise steps, report progress and renew the lease.
///
/// Cheap to clone; every clone is the same run.
#[derive(Debug, Clone)]
pub struct TaskContext {
    a: Arc<Attempt>,
}

impl TaskContext {
    pub(crate) fn new(a: Arc<Attempt>) -> Self {
        TaskContext { a }
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.a.id
    }

    /// Its job's id.
    pub fn job_id(&self) -> &str {
        &self.a.job_id
    }

    /// The parent task's id; `None` for a job's root task.
    pub fn parent_id(&self) -> Option<&str> {
        self.a.parent_id.as_deref()
    }

    /// The task's type.
    pub fn task_type(&self) -> &str {
        &self.a.task_type
    }

    /// 1 for the first attempt; re-runs after a durable wait keep the number.
    pub fn attempt(&self) -> u32 {
        self.a.attempt
    }

    /// The attempt token: every call of this attempt is guarded by it.
    pub fn token(&self) -> i64 {
        i64::from(self.a.token)
    }

    /// The payload as the server sent it (JSON).
    pub fn raw_payload(&self) -> &Value {
        &self.a.payload
    }

    /// Fires when the task is cancelled, its attempt times out, this worker lost its lease,
    /// or the worker's grace period is over. Whatever the handler returns afterwards is
    /// ignored; a handler that runs long should select on it
    /// (`tokio::select! { _ = ctx.cancelled().cancelled() => ..., r = work => ... }`).
    pub fn cancelled(&self) -> &CancellationToken {
        &self.a.cancel
    }

    /// Whether [`cancelled`](Self::cancelled) has fired.
    pub fn is_cancelled(&self) -> bool {
        self.a.cancel.is_cancelled()
    }

    /// Spawns one child of type `task_type` with `payload`, with an implicit key (see
    /// [`Child`] for options).
    pub async fn spawn(
        &self,
        task_type: impl Into<String>,
        payload: &impl Serialize,
    ) -> Result<TaskHandle> {
        self.spawn_child(Child::new(task_type, payload)?).await
    }

    /// Spawns one child with its options; idempotent across re-runs.
    pub async fn spawn_child(&self, child: Child) -> Result<TaskHandle> {
        let mut handles = self.spawn_many(vec![child]).await?;
        handles
            .pop()
            .ok_or_else(|| Error::Decode("spawn answered no child".to_owned()))
    }

    /// Spawns many children in one transaction (one request for up to 5,000); the handles
    /// come in the order of `children`.
    pub async fn spawn_many(&self, children: Vec<Child>) -> Result<Vec<TaskHandle>> {
        let a = &self.a;
        a.check()?;
        for (i, c) in children.iter().enumerate() {
            if let Some(k) = &c.key {
                if k.is_empty() || k.starts_with('#') {
                    return Err(Error::Validation {
                        message: format!(
                            "children[{i}].key must be a non-empty string not starting with '#'"
                        ),
                        field: Some(format!("/children/{i}/key")),
                    });
                }
            }
            if c.task_type.is_empty() {
                return Err(Error::Validation {
                    message: format!("children[{i}].type must be a non-empty string"),
                    field: Some(format!("/children/{i}/type")),
                });
            }
        }
        // The numbers are taken under the lock, so they follow the order of the calls.
        let mut seqs = Vec::new();
        let keys: Vec<String> = {
            let mut k = a.keys.lock().unwrap_or_else(|p| p.into_inner());
            children
                .iter()
                .map(|c| match &c.key {
                    Some(key) => key.clone(),
                    None => {
                        let n = if k.free.is_empty() {
                            k.next += 1;
                            k.next - 1
                        } else {
                            k.free.remove(0)
                        };
                        seqs.push(n);
                        format!("#{n}")
                    }
                })
                .collect()
        };
        let wire: Vec<SpawnChild> = children.iter().zip(keys).map(|(c, k)| c.wire(k)).collect();
        match self.spawn_wire(wire).await {
            Ok(handles) => Ok(handles),
            Err(e) => {
                // A spawn that failed gives its numbers back, lowest first, as in TypeScript.
                let mut k = a.keys.lock().unwrap_or_else(|p| p.into_inner());
                k.free.extend(seqs);
                k.free.sort_unstable();
                Err(e)
            }
        }
    }

    async fn spawn_wire(&self, wire: Vec<SpawnChild>) -> Result<Vec<TaskHandle>> {
        let a = &self.a;
        let mut handles = Vec::with_capacity(wire.len());
        // More children than one request may carry go in several, in order: safe, as each
        // child's key makes it idempotent.
        for chunk in wire.chunks(SPAWN_CHILDREN) {
            let body = SpawnRequest {
                items: vec![SpawnItem {
                    id: a.id.clone(),
                    token: a.token,
                    children: chunk.to_vec(),
                }],
            };
            let r: SpawnResult = a
                .transport
                .call(Method::POST, "/v1/worker/spawn", Some(&body))
                .await?;
            match first_item(r.items)? {
                SpawnItemResult::Spawned { mut children } => handles.append(&mut children),
                SpawnItemResult::Error(e) => return Err(e.into()),
            }
        }
        Ok(handles)
    }

    /// Waits durably for the children `handles` (handles or ids) and returns every outcome,
    /// in order. If some are unsettled this returns [`Error::Suspended`]: return it (`?`), and
    /// the handler runs again from the top once they have all settled.
    pub async fn wait_all_settled<I, S>(&self, handles: I) -> Result<Vec<Outcome>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let ids: Vec<String> = handles.into_iter().map(|h| h.as_ref().to_owned()).collect();
        let mut outcomes = Vec::with_capacity(ids.len());
        // A slice not settled suspends the task, whose re-run finds the earlier ones settled.
        for chunk in ids.chunks(WAIT_IDS) {
            outcomes.append(&mut self.wait_once(Some(chunk)).await?);
        }
        if ids.is_empty() {
            outcomes = self.wait_once(Some(&[])).await?;
        }
        Ok(outcomes)
    }

    /// Waits durably, as [`wait_all_settled`](Self::wait_all_settled), for every child of this
    /// task.
    pub async fn wait_children_settled(&self) -> Result<Vec<Outcome>> {
        self.wait_once(None).await
    }

    /// Waits durably for the children `handles` and returns their results, deserialised as
    /// `T`, in order; [`Error::ChildTaskFailed`] (which, returned, fails the task without
    /// retries) if an awaited child did not succeed.
    pub async fn wait_all<T, I, S>(&self, handles: I) -> Result<Vec<T>>
    where
        T: DeserializeOwned,
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        results(self.wait_all_settled(handles).await?)
    }

    /// Waits durably, as [`wait_all`](Self::wait_all), for every child of this task.
    pub async fn wait_children<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        results(self.wait_children_settled().await?)
    }

    async fn wait_once(&self, ids: Option<&[String]>) -> Result<Vec<Outcome>> {
        let a = &self.a;
        a.check()?;
        let body = WaitRequest {
            items: vec![WaitItem {
                id: a.id.clone(),
                token: a.token,
                all: ids.is_none().then_some(true),
                ids: ids.map(<[String]>::to_vec),
            }],
        };
        let r: WaitResult = a
            .transport
            .call(Method::POST, "/v1/worker/wait", Some(&body))
            .await?;
        match first_item(r.items)? {
            WaitItemResult::Error(e) => {
                let e = Error::from(e);
                // A first try may have suspended the task before its answer was lost: the
                // repeat then finds the attempt no longer holds it, which is what suspending
                // means. A lease really lost ends the run too, and nothing it reports would be
                // taken.
                if matches!(e, Error::StaleAttempt { .. }) {
                    a.suspended.store(true, Ordering::SeqCst);
                    return Err(Error::Suspended);
                }
                Err(e)
            }
            WaitItemResult::Outcomes {
                suspended: true, ..
            }
            | WaitItemResult::Suspended { suspended: true } => {
                a.suspended.store(true, Ordering::SeqCst);
                Err(Error::Suspended)
            }
            WaitItemResult::Outcomes { outcomes, .. } => Ok(outcomes),
            WaitItemResult::Suspended { .. } => {
                Err(Error::Decode("wait answered no outcomes".to_owned()))
            }
        }
    }

    /// Runs `f` once per task, whatever the number of re-runs and attempts: its result
    /// (stored as JSON) is returned again by later runs.
    pub async fn step<T, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.try_step(name, || async { Ok::<T, Error>(f().await) })
            .await
    }

    /// As [`step`](Self::step) for a fallible function: an error stores nothing (a later run
    /// runs `f` again) and is returned.
    pub async fn try_step<T, E, F, Fut>(&self, name: &str, f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        Error: From<E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let a = &self.a;
        a.check()?;
        let body = StepGetRequest {
            id: a.id.clone(),
            token: a.token,
            name: name.to_owned(),
        };
        let r: StepValue = a
            .transport
            .call(Method::POST, "/v1/worker/steps/get", Some(&body))
            .await?;
        if r.found {
            return Ok(serde_json::from_value(r.value.unwrap_or(Value::Null))?);
        }
        let value = f().await?;
        let stored = serde_json::to_value(&value)?;
        let body = StepPutRequest {
            id: a.id.clone(),
            token: a.token,
            name: name.to_owned(),
            value: (!stored.is_null()).then_some(stored),
        };
        let _: Empty = a
            .transport
            .call(Method::POST, "/v1/worker/steps/put", Some(&body))
            .await?;
        Ok(value)
    }

    /// Reports progress (any JSON value): event streams show it as a `progress` event.
    pub async fn progress(&self, value: &impl Serialize) -> Result<()> {
        let a = &self.a;
        a.check()?;
        let body = ProgressRequest {
            id: a.id.clone(),
            token: a.token,
            progress: serde_json::to_value(value)?,
        };
        let _: Empty = a
            .transport
            .call(Method::POST, "/v1/worker/progress", Some(&body))
            .await?;
        Ok(())
    }

    /// Renews the lease now; false (and [`cancelled`](Self::cancelled) fired) when the attempt
    /// no longer holds the task. The worker also renews leases by itself.
    pub async fn heartbeat(&self) -> Result<bool> {
        let a = &self.a;
        let body = HeartbeatRequest {
            items: vec![a.attempt_ref()],
            lease_ms: a.lease_ms,
        };
        let r: HeartbeatResult = a
            .transport
            .call(Method::POST, "/v1/worker/heartbeat", Some(&body))
            .await?;
        let ok = first_item(r.items)? == HeartbeatStatus::Ok;
        if !ok {
            a.cancel.cancel();
        }
        Ok(ok)
    }
}

/// The answer about the one item a call asked about.
fn first_item<T>(items: Vec<T>) -> Result<T> {
    items
        .into_iter()
        .next()
        .ok_or_else(|| Error::Decode("the answer has no items".to_owned()))
}

fn results<T: DeserializeOwned>(outcomes: Vec<Outcome>) -> Result<Vec<T>> {
    if outcomes.iter().any(|o| o.state != "succeeded") {
        let failures = outcomes
            .into_iter()
            .filter(|o| o.state != "succeeded")
            .collect();
        return Err(Error::ChildTaskFailed { failures });
    }
    outcomes
        .into_iter()
        .map(|o| Ok(serde_json::from_value(o.result.unwrap_or(Value::Null))?))
        .collect()
}
