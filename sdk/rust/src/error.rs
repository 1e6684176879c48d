//! The one error type of the SDK.
//!
//! Every fallible call returns [`Error`]. Its variants mirror the error codes of the HTTP API
//! (docs/http-api.md): the server answers `{"error": {"code", "message", "field"?}}` and the
//! transport maps the code to a variant, so callers match what they mean:
//!
//! ```
//! use dynatask::Error;
//!
//! fn explain(result: Result<bool, Error>) -> &'static str {
//!     match result {
//!         Ok(_) => "retried",
//!         Err(Error::Conflict { .. }) => "the task has not failed",
//!         Err(Error::NotFound { .. }) => "no such task",
//!         Err(e) if e.is_transient() => "try again later",
//!         Err(_) => "something else",
//!     }
//! }
//! assert_eq!(explain(Err(Error::from_code(409, "conflict", "x".into(), None))), "the task has not failed");
//! ```

use serde_json::Value;

use crate::wire::Outcome;

/// A specialised `Result` whose error is the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error of the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 400 `invalid_request`: bad input. `field` is the server's JSON pointer within the body
    /// (`/jobs/0/type`) or `/name` of a query or path parameter, when known.
    #[error("invalid request: {message}")]
    Validation {
        /// What is wrong.
        message: String,
        /// The offending field, when known.
        field: Option<String>,
    },
    /// 413 `payload_too_large`: a request body over the server's `--body-limit`.
    #[error("payload too large: {message}")]
    PayloadTooLarge {
        /// The server's message.
        message: String,
    },
    /// 404 `not_found`: an unknown job or task id (or route).
    #[error("not found: {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// 409 `stale_attempt`: the attempt token no longer holds the task (lease expired,
    /// cancelled, settled by another attempt).
    #[error("stale attempt: {message}")]
    StaleAttempt {
        /// The server's message.
        message: String,
    },
    /// 409 `conflict`: the state does not allow the operation (e.g. retrying an unfailed task).
    #[error("conflict: {message}")]
    Conflict {
        /// The server's message.
        message: String,
    },
    /// 401 `unauthorized` (missing or unknown token) or 403 `forbidden` (scope lacking).
    #[error("{code} (HTTP {status}): {message}")]
    Auth {
        /// 401 or 403.
        status: u16,
        /// `unauthorized` or `forbidden`.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No answer from the server before the retries gave up.
    #[error("cannot reach the dynatask server at {url}: {message}")]
    Unreachable {
        /// The server's base URL.
        url: String,
        /// What went wrong on the last try.
        message: String,
    },
    /// Any other error answer of the server (e.g. 500 `internal`, 503 `unavailable`), or an
    /// answer that is not the JSON expected (`code` `bad_response`).
    #[error("HTTP {status} {code}: {message}")]
    Http {
        /// The HTTP status (0 when none applies).
        status: u16,
        /// The server's error code.
        code: String,
        /// The server's message.
        message: String,
    },
    /// A job did not succeed: `error` is its root task's error (`{name, message, stack?}`).
    #[error("job {job_id} {state}: {}", error_message(.error))]
    TaskFailed {
        /// The job's id.
        job_id: String,
        /// Its final state (`failed` or `cancelled`).
        state: String,
        /// The root task's error, as the server gives it.
        error: Value,
    },
    /// A durable wait for all children: some awaited child did not succeed.
    #[error("{} awaited child task(s) did not succeed{}", .failures.len(), first_failure(.failures))]
    ChildTaskFailed {
        /// The outcomes of the children that did not succeed.
        failures: Vec<Outcome>,
    },
    /// A value could not be encoded or decoded as JSON of the expected type (a typed result
    /// or payload, or an answer of the server).
    #[error("decode: {0}")]
    Decode(String),
    /// A wait of the client (for a job to settle) ran out of time.
    #[error("timed out: {message}")]
    Timeout {
        /// What was waited for.
        message: String,
    },
    /// A durable wait suspended the task: the handler must return this error as it is (the
    /// `?` operator does), and the task runs again, from the top, when what it waits for has
    /// settled. Not a failure.
    #[error("the task suspended in a durable wait")]
    Suspended,
    /// An error of a task handler: fails the attempt. When `retryable` is false the task
    /// fails at once, without further attempts.
    #[error("{name}: {message}")]
    Task {
        /// The error's name (`Error` unless given).
        name: String,
        /// What went wrong.
        message: String,
        /// Whether the server may try the task again (within its attempts).
        retryable: bool,
    },
}

fn error_message(error: &Value) -> String {
    match error.get("message") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "no error message".to_owned(),
    }
}

fn first_failure(failures: &[Outcome]) -> String {
    match failures.first() {
        None => String::new(),
        Some(o) => {
            let message = o.error.as_ref().map(error_message).unwrap_or_default();
            format!("; first: {} {}: {}", o.task_id, o.state, message)
        }
    }
}

impl Error {
    /// A handler error that fails the attempt; the task is tried again within its attempts.
    pub fn task(message: impl Into<String>) -> Self {
        Error::Task {
            name: "Error".to_owned(),
            message: message.into(),
            retryable: true,
        }
    }

    /// A handler error that fails the task at once, without further attempts.
    pub fn non_retryable(message: impl Into<String>) -> Self {
        Error::Task {
            name: "NonRetryableError".to_owned(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The error for a code of the server (an HTTP answer's or a batched item's
    /// `{"error": {code, message, field?}}`); `status` 0 when no HTTP status applies.
    pub fn from_code(status: u16, code: &str, message: String, field: Option<String>) -> Self {
        match code {
            "invalid_request" => Error::Validation { message, field },
            "payload_too_large" => Error::PayloadTooLarge { message },
            "not_found" => Error::NotFound { message },
            "stale_attempt" => Error::StaleAttempt { message },
            "conflict" => Error::Conflict { message },
            "unauthorized" | "forbidden" => Error::Auth {
                status: if status != 0 {
                    status
                } else if code == "unauthorized" {
                    401
                } else {
                    403
                },
                code: code.to_owned(),
                message,
            },
            _ => Error::Http {
                status,
                code: code.to_owned(),
                message,
            },
        }
    }

    /// The error for an HTTP error answer with the given (possibly empty or non-JSON) body.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        let code = err
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| match status {
                401 => "unauthorized".to_owned(),
                403 => "forbidden".to_owned(),
                404 => "not_found".to_owned(),
                413 => "payload_too_large".to_owned(),
                _ => format!("http_{status}"),
            });
        let message = err
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        let field = err
            .and_then(|e| e.get("field"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Error::from_code(status, &code, message, field)
    }

    /// The server's error code of this error (`invalid_request`, `not_found`, ...), or the
    /// SDK's own (`unreachable`, `job_failed`, `child_task_failed`, `decode`, `suspended`,
    /// `task_error`).
    pub fn code(&self) -> &str {
        match self {
            Error::Validation { .. } => "invalid_request",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::NotFound { .. } => "not_found",
            Error::StaleAttempt { .. } => "stale_attempt",
            Error::Conflict { .. } => "conflict",
            Error::Auth { code, .. } | Error::Http { code, .. } => code,
            Error::Unreachable { .. } => "unreachable",
            Error::TaskFailed { state, .. } => {
                if state == "cancelled" {
                    "job_cancelled"
                } else {
                    "job_failed"
                }
            }
            Error::ChildTaskFailed { .. } => "child_task_failed",
            Error::Decode(_) => "decode",
            Error::Timeout { .. } => "timeout",
            Error::Suspended => "suspended",
            Error::Task { .. } => "task_error",
        }
    }

    /// The HTTP status of the server's answer, 0 when the error did not come from one.
    pub fn status(&self) -> u16 {
        match self {
            Error::Validation { .. } => 400,
            Error::PayloadTooLarge { .. } => 413,
            Error::NotFound { .. } => 404,
            Error::StaleAttempt { .. } | Error::Conflict { .. } => 409,
            Error::Auth { status, .. } | Error::Http { status, .. } => *status,
            _ => 0,
        }
    }

    /// Whether trying the same call again later may succeed (no answer, or 503).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable { .. }) || self.status() == 503
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Decode(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_servers_error_answers() {
        let e = Error::from_response(
            400,
            br#"{"error":{"code":"invalid_request","message":"type: required","field":"/type"}}"#,
        );
        assert!(
            matches!(&e, Error::Validation { field: Some(f), .. } if f == "/type"),
            "{e:?}"
        );
        assert_eq!(e.status(), 400);
        let e = Error::from_response(409, br#"{"error":{"code":"stale_attempt","message":"x"}}"#);
        assert!(matches!(e, Error::StaleAttempt { .. }));
        let e = Error::from_response(403, b"");
        assert!(matches!(e, Error::Auth { status: 403, .. }), "{e:?}");
        assert_eq!(e.code(), "forbidden");
        let e = Error::from_response(503, b"<html>");
        assert!(e.is_transient());
        assert_eq!(e.code(), "http_503");
        let e = Error::from_response(500, br#"{"error":{"code":"internal","message":"boom"}}"#);
        assert_eq!(e.to_string(), "HTTP 500 internal: boom");
    }
}
