//! # dynatask
//!
//! The Rust SDK of dynatask: workers that serve some task types of a job (beside TypeScript
//! and Python workers serving others), and a client that submits, follows and manages jobs,
//! all over the server's HTTP API (docs/http-api.md, openapi.json).
//!
//! - [`Client`]: submit jobs (idempotent by job id), get, wait for a typed result, list and
//!   page jobs and their task trees, cancel, retry, and a [`Stream`](futures_core::Stream) of
//!   a job's events.
//! - [`Error`]: the one error type, with the server's error codes.
//! - [`Transport`]: JSON calls with keep-alive and retries, shared by the client and workers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod error;
pub mod transport;
pub mod wire;

pub use client::{new_job_id, Client, EventKind, EventStream, JobFilter};
pub use error::{Error, Result};
pub use transport::{CallOptions, Method, Transport, DEFAULT_URL};
pub use wire::{
    Event, JobInfo, JobState, JobSummary, Outcome, SubmitJob, SubmitOptions, SubmittedJob,
    TaskError, TaskInfo, TaskState,
};
