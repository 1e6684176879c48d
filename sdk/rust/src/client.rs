//! The client: submit jobs, read them and their task trees, wait for results, cancel, retry,
//! and follow a job's events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), dynatask::Error> {
//! use dynatask::{Client, SubmitOptions};
//!
//! let client = Client::new("http://127.0.0.1:7077", None)?;
//! let job = client
//!     .submit("resize", &serde_json::json!({"width": 64}), SubmitOptions::default())
//!     .await?;
//! let result: serde_json::Value = client.wait_for_result(&job.job_id, None).await?;
//! # Ok(())
//! # }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_core::Stream;
use futures_util::StreamExt;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::transport::{backoff, CallOptions, Method, Transport};
use crate::wire::{
    CancelRequest, CancelResult, Event, JobInfo, JobPage, JobState, JobSummary, RetryRequest,
    RetryResult, SubmitJob, SubmitOptions, SubmitRequest, SubmitResult, SubmittedJob, TaskInfo,
    TaskPage, TaskState, TypeInfo, TypeList,
};

/// The most jobs of one `POST /v1/jobs`.
const MAX_BATCH: usize = 1000;

/// A new job id: a UUID v7 (time-ordered), as the other SDKs make.
pub fn new_job_id() -> String {
    uuid7()
}

/// A UUID v7: the crate's ids (jobs, claims, worker names) are all made here.
pub(crate) fn uuid7() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70 | (b[6] & 0x0f);
    b[8] = 0x80 | (b[8] & 0x3f);
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

/// Which jobs [`Client::list_jobs`] and [`Client::jobs`] return.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// The namespace (the client's when `None`).
    pub namespace: Option<String>,
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs whose root task has this type.
    pub task_type: Option<String>,
    /// Only jobs created at or after this time (epoch ms).
    pub created_after: Option<u64>,
    /// Only jobs created before this time (epoch ms).
    pub created_before: Option<u64>,
    /// The page size (the server's default, 100, when `None`).
    pub limit: Option<u32>,
}

/// The kinds of events a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Task state changes.
    Task,
    /// Task progress.
    Progress,
    /// Jobs settling (costs the server nothing: ask for this alone to wait for jobs).
    Job,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Task => "task",
            EventKind::Progress => "progress",
            EventKind::Job => "job",
        }
    }
}

/// A client of a dynatask server. Cheap to clone; safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
    namespace: String,
}

impl Client {
    /// A client of the server at `url` (`""`: `$DYNATASK_URL`, else the default) with the
    /// bearer `token` (`None`: `$DYNATASK_TOKEN`), submitting to and listing the `default`
    /// namespace.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self> {
        Ok(Client::from_transport(Transport::new(url, token)?))
    }

    /// A client over an existing transport (shared with a worker, say).
    pub fn from_transport(transport: Transport) -> Self {
        Client {
            transport,
            namespace: "default".to_owned(),
        }
    }

    /// Submits to and lists `namespace` unless a call names another.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The transport (for calls the client has no method for).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The namespace of the client's submissions and lists.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    // -- submitting ---------------------------------------------------------------------

    /// Submits a job whose root task is `task_type` with `payload` (anything serde
    /// serialises to JSON).
    ///
    /// `options.job_id` (a UUID; a v7 one is made here otherwise) makes the submission
    /// idempotent: a repeat returns the existing job with `created: false`.
    pub async fn submit<P: Serialize + ?Sized>(
        &self,
        task_type: &str,
        payload: &P,
        options: SubmitOptions,
    ) -> Result<SubmittedJob> {
        let payload = serde_json::to_value(payload).map_err(|e| Error::Validation {
            message: format!("payload: not JSON-serialisable: {e}"),
            field: Some("/jobs/0/payload".to_owned()),
        })?;
        let job = SubmitJob {
            task_type: task_type.to_owned(),
            payload: Some(payload),
            options: Some(options),
        };
        let mut jobs = self.submit_many(vec![job]).await?;
        jobs.pop()
            .ok_or_else(|| Error::Decode("POST /v1/jobs: no job in the answer".into()))
    }

    /// Submits many jobs, in order (in requests of up to 1000); each is idempotent by its job
    /// id (one is made here for a job without, and the namespace is the client's unless
    /// given). A request over the server's body limit is split in halves and sent again
    /// (safe: the job ids are chosen already).
    pub async fn submit_many(&self, jobs: Vec<SubmitJob>) -> Result<Vec<SubmittedJob>> {
        let jobs: Vec<SubmitJob> = jobs
            .into_iter()
            .map(|mut j| {
                let o = j.options.get_or_insert_with(SubmitOptions::default);
                if o.job_id.is_none() {
                    o.job_id = Some(new_job_id());
                }
                if o.namespace.is_none() {
                    o.namespace = Some(self.namespace.clone());
                }
                j
            })
            .collect();
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(MAX_BATCH) {
            let mut pending = vec![chunk];
            while let Some(items) = pending.pop() {
                let body = SubmitRequest {
                    jobs: items.to_vec(),
                };
                match self
                    .transport
                    .call::<SubmitResult, _>(Method::POST, "/v1/jobs", Some(&body))
                    .await
                {
                    Ok(r) => out.extend(r.jobs),
                    Err(Error::PayloadTooLarge { .. }) if items.len() > 1 => {
                        let (a, b) = items.split_at(items.len() / 2);
                        pending.push(b);
                        pending.push(a);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    // -- reading ------------------------------------------------------------------------

    /// The job, with its result or error and its tasks counted by state.
    pub async fn get_job(&self, job_id: &str) -> Result<JobInfo> {
        self.get(&format!("/v1/jobs/{}", seg(job_id)), vec![]).await
    }

    /// Waits until the job settles and returns it; [`Error::Timeout`] after `timeout`.
    ///
    /// Follows the job's `job` events (which cost the server nothing) and reads the job
    /// whenever one comes, and every few seconds besides (a stream only sees what its own
    /// server commits).
    pub async fn wait_for_job(&self, job_id: &str, timeout: Option<Duration>) -> Result<JobInfo> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut events = Some(self.events(Some(job_id), &[EventKind::Job]).await?);
        let mut attempt = 0;
        loop {
            let info = self.get_job(job_id).await?;
            if info.state.settled() {
                return Ok(info);
            }
            let mut pause = Duration::from_secs(5);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout {
                        message: format!(
                            "job {job_id} has not settled after {:?}",
                            timeout.unwrap_or_default()
                        ),
                    });
                }
                pause = pause.min(left);
            }
            match events.as_mut() {
                Some(stream) => match tokio::time::timeout(pause, stream.next()).await {
                    Ok(Some(Ok(_))) | Err(_) => {}
                    // The stream gave up (or ended): read the job with backoff from now on.
                    Ok(Some(Err(_)) | None) => events = None,
                },
                None => {
                    tokio::time::sleep(backoff(attempt).max(Duration::from_millis(200)).min(pause))
                        .await;
                    attempt += 1;
                }
            }
        }
    }

    /// Waits until the job settles; returns its result decoded as `T`, or
    /// [`Error::TaskFailed`] (with the root task's error) when it failed or was cancelled.
    pub async fn wait_for_result<T: DeserializeOwned>(
        &self,
        job_id: &str,
        timeout: Option<Duration>,
    ) -> Result<T> {
        let info = self.wait_for_job(job_id, timeout).await?;
        if info.state != JobState::Succeeded {
            let error = match &info.error {
                Some(e) => serde_json::to_value(e)?,
                None => Value::Null,
            };
            return Err(Error::TaskFailed {
                job_id: info.id,
                state: info.state.as_str().to_owned(),
                error,
            });
        }
        serde_json::from_value(info.result)
            .map_err(|e| Error::Decode(format!("the result of job {job_id}: {e}")))
    }

    /// One page of jobs, newest first; `cursor` is an earlier page's `next`.
    pub async fn list_jobs(&self, filter: &JobFilter, cursor: Option<&str>) -> Result<JobPage> {
        let mut q = vec![(
            "namespace".to_owned(),
            filter
                .namespace
                .clone()
                .unwrap_or_else(|| self.namespace.clone()),
        )];
        if let Some(s) = filter.state {
            q.push(("state".into(), s.as_str().into()));
        }
        if let Some(t) = &filter.task_type {
            q.push(("type".into(), t.clone()));
        }
        if let Some(t) = filter.created_after {
            q.push(("createdAfter".into(), t.to_string()));
        }
        if let Some(t) = filter.created_before {
            q.push(("createdBefore".into(), t.to_string()));
        }
        if let Some(l) = filter.limit {
            q.push(("limit".into(), l.to_string()));
        }
        if let Some(c) = cursor {
            q.push(("before".into(), c.to_owned()));
        }
        self.get("/v1/jobs", q).await
    }

    /// Every job that matches, newest first, page after page.
    pub fn jobs(&self, filter: JobFilter) -> impl Stream<Item = Result<JobSummary>> + Send + '_ {
        paged(move |cursor| {
            let filter = filter.clone();
            async move {
                let p = self.list_jobs(&filter, cursor.as_deref()).await?;
                Ok((p.jobs, p.next))
            }
        })
    }

    /// One page of the job's tasks, in creation order (the root first); `after` is an
    /// earlier page's `next`; `limit` up to 10000 (1000 when `None`).
    pub async fn tree(
        &self,
        job_id: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<TaskPage> {
        let mut q = vec![];
        if let Some(a) = after {
            q.push(("after".to_owned(), a.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit".to_owned(), l.to_string()));
        }
        self.get(&format!("/v1/jobs/{}/tasks", seg(job_id)), q)
            .await
    }

    /// Every task of the job, in creation order, page after page.
    pub fn tasks<'a>(
        &'a self,
        job_id: &'a str,
        page_size: u32,
    ) -> impl Stream<Item = Result<TaskInfo>> + Send + 'a {
        paged(move |cursor| async move {
            let p = self
                .tree(job_id, cursor.as_deref(), Some(page_size))
                .await?;
            Ok((p.tasks, p.next))
        })
    }

    /// The task, with its failed `attempts`.
    pub async fn get_task(&self, task_id: &str) -> Result<TaskInfo> {
        self.get(&format!("/v1/tasks/{}", seg(task_id)), vec![])
            .await
    }

    /// The namespace's task types (the client's when `None`): queued tasks, and whether a
    /// live worker serves each.
    pub async fn types(&self, namespace: Option<&str>) -> Result<Vec<TypeInfo>> {
        let ns = namespace.unwrap_or(&self.namespace).to_owned();
        let list: TypeList = self
            .get("/v1/types", vec![("namespace".into(), ns)])
            .await?;
        Ok(list.types)
    }

    // -- control ------------------------------------------------------------------------

    /// Cancels the job's unsettled tasks; `false` when it had settled already.
    pub async fn cancel_job(&self, job_id: &str, reason: Option<&str>) -> Result<bool> {
        self.cancel(&format!("/v1/jobs/{}/cancel", seg(job_id)), reason)
            .await
    }

    /// Cancels the task and its subtree; `false` when it had settled already.
    pub async fn cancel_task(&self, task_id: &str, reason: Option<&str>) -> Result<bool> {
        self.cancel(&format!("/v1/tasks/{}/cancel", seg(task_id)), reason)
            .await
    }

    /// Runs a failed task again (its job runs again too).
    ///
    /// The failed attempt is read first, so that repeating the call after a lost answer
    /// retries it once only. [`Error::Conflict`] when the task has not failed.
    pub async fn retry_task(&self, task_id: &str) -> Result<bool> {
        let task = self.get_task(task_id).await?;
        let body = RetryRequest {
            attempt: (task.state == TaskState::Failed).then_some(task.attempt),
        };
        let r: RetryResult = self
            .transport
            .call(
                Method::POST,
                &format!("/v1/tasks/{}/retry", seg(task_id)),
                Some(&body),
            )
            .await?;
        Ok(r.retried)
    }

    // -- events -------------------------------------------------------------------------

    /// Follows the server's events (server-sent events): of one job, or of all jobs.
    ///
    /// `kinds` chooses among task, progress and job events (all when empty; a client that
    /// only waits for jobs to settle should ask for [`EventKind::Job`] alone). A job's stream
    /// ends after the job's `job` event (it settled), and a stream of a settled job starts
    /// with that event. A dropped connection is opened again (within the transport's retry
    /// window; events meanwhile are missed, so treat the stream as a prompt to read the job,
    /// not as a log); then the stream yields the error and ends. Drop it to stop.
    ///
    /// Returns once the stream is open (so events after the call are not missed).
    pub async fn events(&self, job_id: Option<&str>, kinds: &[EventKind]) -> Result<EventStream> {
        let path = match job_id {
            Some(id) => format!("/v1/jobs/{}/events", seg(id)),
            None => "/v1/events".to_owned(),
        };
        let mut query = vec![];
        if !kinds.is_empty() {
            let k: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            query.push(("kinds".to_owned(), k.join(",")));
        }
        let ends_with_job =
            job_id.is_some() && (kinds.is_empty() || kinds.contains(&EventKind::Job));
        let first = self.transport.open_stream(&path, &query).await?;
        let (tx, rx) = mpsc::channel(256);
        let transport = self.transport.clone();
        let task = tokio::spawn(async move {
            let mut response = Some(first);
            let mut deadline = Instant::now() + transport.retry_window();
            let mut attempt = 0;
            loop {
                let res = match response.take() {
                    Some(r) => r,
                    None => match transport.open_stream(&path, &query).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e)).await;
                            return;
                        }
                    },
                };
                let mut body = res.bytes_stream();
                let mut parser = SseParser::default();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for data in parser.push(&chunk) {
                        deadline = Instant::now() + transport.retry_window();
                        attempt = 0;
                        let Ok(event) = serde_json::from_str::<Event>(&data) else {
                            continue;
                        };
                        let end = ends_with_job && matches!(event, Event::Job { .. });
                        if tx.send(Ok(event)).await.is_err() || end {
                            return;
                        }
                    }
                }
                // The stream ended (the server drains) or broke: open it again.
                if Instant::now() >= deadline {
                    let _ = tx
                        .send(Err(Error::Unreachable {
                            url: transport.url().to_owned(),
                            message: "the event stream broke and could not be opened again".into(),
                        }))
                        .await;
                    return;
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        });
        Ok(EventStream { rx, task })
    }

    // -- lifecycle ----------------------------------------------------------------------

    /// Whether the server answers and its database does (`/readyz`), without retries.
    pub async fn ready(&self) -> bool {
        let opts = CallOptions {
            timeout: Some(Duration::from_secs(5)),
            no_retry: true,
            ..CallOptions::default()
        };
        self.transport
            .call_with::<Value, ()>(Method::GET, "/readyz", None, &opts)
            .await
            .is_ok()
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Vec<(String, String)>,
    ) -> Result<T> {
        let opts = CallOptions {
            query,
            ..CallOptions::default()
        };
        self.transport
            .call_with::<T, ()>(Method::GET, path, None, &opts)
            .await
    }

    async fn cancel(&self, path: &str, reason: Option<&str>) -> Result<bool> {
        let body = CancelRequest {
            reason: reason.map(str::to_owned),
        };
        let r: CancelResult = self.transport.call(Method::POST, path, Some(&body)).await?;
        Ok(r.cancelled)
    }
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn paged<'a, T, F, Fut>(fetch: F) -> impl Stream<Item = Result<T>> + Send + 'a
where
    T: Send + 'a,
    F: Fn(Option<String>) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>)>> + Send + 'a,
{
    struct State<T, F> {
        fetch: F,
        buffer: std::collections::VecDeque<T>,
        cursor: Option<String>,
        done: bool,
    }
    let state = State {
        fetch,
        buffer: Default::default(),
        cursor: None,
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.buffer.pop_front() {
                return Some((Ok(item), s));
            }
            if s.done {
                return None;
            }
            match (s.fetch)(s.cursor.take()).await {
                Ok((items, next)) => {
                    s.buffer.extend(items);
                    s.done = next.is_none();
                    s.cursor = next;
                }
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
}

/// The events of a stream opened by [`Client::events`]; a [`Stream`] of
/// `Result<Event>`. Dropping it closes the connection.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for EventStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Server-sent events: bytes in, the `data` of each complete event out.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = vec![];
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                let v = v.strip_prefix(' ').unwrap_or(v);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(v);
                    }
                    None => self.data = Some(v.to_owned()),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_uuid_v7() {
        let a = new_job_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, new_job_id());
    }

    #[test]
    fn parses_server_sent_events_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nid: 1\ndata: {\"a\"").is_empty());
        assert_eq!(
            p.push(b":1}\n\r\ndata: x\ndata: y\n\n"),
            vec!["{\"a\":1}", "x\ny"]
        );
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
