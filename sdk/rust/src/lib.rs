//! # dynatask
//!
//! The Rust SDK of dynatask: workers that serve some task types of a job (beside TypeScript
//! and Python workers serving others), and a client that submits, follows and manages jobs,
//! all over the server's HTTP API (docs/http-api.md, openapi.json).
//!
//! - [`Client`]: submit jobs (idempotent by job id), get, wait for a typed result, list and
//!   page jobs and their task trees, cancel, retry, and a [`Stream`](futures_core::Stream) of
//!   a job's events.
//! - [`Worker`]: serves task types (handlers as async closures or [`Handler`] implementations,
//!   typed payloads and results), with claims and reports batched and long-polled, heartbeats
//!   batched, and a graceful stop on SIGTERM/SIGINT or a cancellation token.
//! - [`TaskContext`]: what a handler sees: spawn children ([`Child`]), durable waits (a wait
//!   that suspends is [`Error::Suspended`], carried out of the handler by `?`), memoised steps,
//!   progress, heartbeat, a cancellation token.
//! - [`Error`]: the one error type, with the server's error codes.
//! - [`Transport`]: JSON calls with keep-alive and retries, shared by the client and workers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod context;
pub mod error;
pub mod transport;
pub mod wire;
pub mod worker;

pub use client::{new_job_id, Client, EventKind, EventStream, JobFilter};
pub use context::{Child, TaskContext, TaskHandle};
pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken;
pub use transport::{CallOptions, Method, Transport, DEFAULT_URL};
pub use wire::{
    Event, JobInfo, JobState, JobSummary, Outcome, SubmitJob, SubmitOptions, SubmittedJob,
    TaskError, TaskInfo, TaskState,
};
pub use worker::{Handler, TaskType, Worker, WorkerBuilder};
