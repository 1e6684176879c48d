//! JSON over HTTP to a dynatask server.
//!
//! One keep-alive connection pool, the bearer token, retries of calls that are safe to repeat
//! (every call of the protocol is: submissions by job id, claims by claim id, reports by
//! attempt token), and the server's `{"error": {...}}` answers mapped to [`Error`]. It behaves
//! like the TypeScript client's transport (src/client/transport.ts) and the Python SDK's.

use std::time::{Duration, Instant};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

pub use reqwest::Method;

/// The server's default address (`dynatask server` without `--host`/`--port`).
pub const DEFAULT_URL: &str = "http://127.0.0.1:7077";

const USER_AGENT: &str = concat!("dynatask-rust/", env!("CARGO_PKG_VERSION"));

/// The server URL: `url` when given and not empty, else `$DYNATASK_URL`, else an http(s)
/// `$DYNATASK_DATABASE_URL`, else [`DEFAULT_URL`]. Fails on anything but an http(s) URL.
pub fn resolve_url(url: Option<&str>) -> Result<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let url = url
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| env("DYNATASK_URL"))
        .or_else(|| {
            env("DYNATASK_DATABASE_URL")
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        })
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    match reqwest::Url::parse(&url) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {
            Ok(url.trim_end_matches('/').to_owned())
        }
        _ => Err(Error::Validation {
            message: format!("url: {url} is not an http:// or https:// URL"),
            field: Some("url".to_owned()),
        }),
    }
}

/// The bearer token: `token` when given (an empty one means none), else `$DYNATASK_TOKEN`.
pub fn resolve_token(token: Option<&str>) -> Option<String> {
    match token {
        Some(t) => Some(t.to_owned()).filter(|t| !t.is_empty()),
        None => std::env::var("DYNATASK_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    }
}

/// How one call is made; [`CallOptions::default`] is the transport's defaults.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// The time allowed for the answer (the transport's, 70 s, when `None`). Long polls give
    /// their wait plus a margin.
    pub timeout: Option<Duration>,
    /// How long connection errors and 503 answers are retried (the transport's when `None`).
    pub retry_for: Option<Duration>,
    /// `false` to make a single try.
    pub no_retry: bool,
    /// Query parameters, appended to the path.
    pub query: Vec<(String, String)>,
}

/// JSON calls to a dynatask server, with retries. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Transport {
    url: String,
    token: Option<String>,
    http: reqwest::Client,
    retry_for: Duration,
    timeout: Duration,
}

impl Transport {
    /// A transport to the server at `url` (see [`resolve_url`]: `""` takes the environment's
    /// or the default) with the bearer `token` (see [`resolve_token`]: `None` takes
    /// `$DYNATASK_TOKEN`).
    pub fn new(url: &str, token: Option<&str>) -> Result<Self> {
        let url = resolve_url(Some(url))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .pool_max_idle_per_host(64)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Http {
                status: 0,
                code: "client_setup".to_owned(),
                message: e.to_string(),
            })?;
        Ok(Transport {
            url,
            token: resolve_token(token),
            http,
            retry_for: Duration::from_secs(30),
            timeout: Duration::from_secs(70),
        })
    }

    /// How long connection errors and 503 answers are retried (30 s by default).
    pub fn with_retry_for(mut self, retry_for: Duration) -> Self {
        self.retry_for = retry_for;
        self
    }

    /// The time allowed for an answer unless a call says otherwise (70 s by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connection errors and 503 answers are retried.
    pub fn retry_window(&self) -> Duration {
        self.retry_for
    }

    /// The server's base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call with the transport's defaults: `path` like `/v1/jobs`; returns the answer
    /// decoded as `T` (an empty answer decodes as JSON `null`).
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        self.call_with(method, path, body, &CallOptions::default())
            .await
    }

    /// One call with the given options. Connection errors, timeouts and 503 answers are
    /// retried with capped, jittered exponential backoff (25 ms to 2 s) for the retry window;
    /// then a connection error is [`Error::Unreachable`].
    pub async fn call_with<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        opts: &CallOptions,
    ) -> Result<T> {
        let content = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| Error::Validation {
                message: format!("request body is not JSON-serialisable: {e}"),
                field: None,
            })?),
            None => None,
        };
        let deadline = Instant::now() + opts.retry_for.unwrap_or(self.retry_for);
        let mut attempt: u32 = 0;
        loop {
            let outcome = self
                .once(&method, path, content.as_deref(), opts)
                .await
                .and_then(|(status, bytes)| parse::<T>(&method, path, status, &bytes));
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if opts.no_retry || !e.is_transient() || Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, path, "dynatask: retrying");
                    let pause =
                        backoff(attempt).min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(String, String)],
    ) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.url, path))
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        content: Option<&[u8]>,
        opts: &CallOptions,
    ) -> Result<(u16, Vec<u8>)> {
        let mut req = self
            .request(method.clone(), path, &opts.query)
            .timeout(opts.timeout.unwrap_or(self.timeout));
        if let Some(c) = content {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(c.to_vec());
        }
        let res = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| self.unreachable(&e))?;
        Ok((status, bytes.to_vec()))
    }

    /// Opens a streaming GET (server-sent events): retried like a call until the server
    /// answers; an error answer is mapped to [`Error`].
    pub(crate) async fn open_stream(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<reqwest::Response> {
        let deadline = Instant::now() + self.retry_for;
        let mut attempt: u32 = 0;
        loop {
            let res = self
                .request(Method::GET, path, query)
                .header(reqwest::header::ACCEPT, "text/event-stream")
                .send()
                .await;
            let err = match res {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    Error::from_response(status, &body)
                }
                Err(e) => self.unreachable(&e),
            };
            if !err.is_transient() || Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Error::Unreachable {
            url: self.url.clone(),
            message,
        }
    }
}

fn parse<T: DeserializeOwned>(method: &Method, path: &str, status: u16, bytes: &[u8]) -> Result<T> {
    if status >= 400 {
        return Err(Error::from_response(status, bytes));
    }
    let value: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).map_err(|_| Error::Http {
            status,
            code: "bad_response".to_owned(),
            message: format!("{method} {path}: the answer is not JSON"),
        })?
    };
    serde_json::from_value(value)
        .map_err(|e| Error::Decode(format!("{method} {path}: unexpected answer: {e}")))
}

/// Exponential backoff with jitter, 25 ms to 2 s, so a restarting server is not stormed.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = (0.025 * f64::from(1u32 << attempt.min(16))).min(2.0);
    let jitter = 0.5 + rand::thread_rng().gen::<f64>() / 2.0;
    Duration::from_secs_f64(base * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        for a in 0..40 {
            let d = backoff(a);
            assert!(d <= Duration::from_secs(2), "{d:?}");
            assert!(d >= Duration::from_micros(12_500), "{d:?}");
        }
    }

    #[test]
    fn resolves_urls() {
        assert_eq!(resolve_url(Some("http://h:1/")).unwrap(), "http://h:1");
        assert!(matches!(
            resolve_url(Some("postgres://x")),
            Err(Error::Validation { .. })
        ));
    }
}
