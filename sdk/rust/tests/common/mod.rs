//! The test harness: real `dynatask server` processes on SQLite and PostgreSQL.
//!
//! - [`Store::all`]: the stores to run a test on. PostgreSQL is the server in
//!   `$DYNATASK_TEST_POSTGRES_URL` (`npm test` always sets it); without one the Postgres half
//!   fails loudly when `CI=true` and is skipped (with a note on stderr) otherwise.
//! - [`TestServer::start`]: a server of its own on a fresh database (a SQLite file in a
//!   temporary directory, or a schema of its own on PostgreSQL), killed on drop, its schema
//!   dropped then.
//!
//! The server is `node bin/dynatask.js server` from the repository: run `npm run build`
//! first, so dist/ is current (`npm test` and `npm run test:rust` do).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to say it listens.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository's root (two levels above the crate).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The store a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A SQLite file.
    Sqlite,
    /// A schema of its own on the PostgreSQL server of the tests.
    Postgres,
}

impl Store {
    /// The stores to run on: SQLite, and PostgreSQL when the environment gives one (see the
    /// module's doc: a missing one fails under `CI=true`).
    pub fn all() -> Vec<Store> {
        let mut stores = vec![Store::Sqlite];
        if postgres_url().is_some() {
            stores.push(Store::Postgres);
        } else {
            let message = "no PostgreSQL for the Postgres half of the Rust tests: run them with \
                           `npm test` or `npm run test:rust` (which start a private server), or \
                           set DYNATASK_TEST_POSTGRES_URL to a postgres:// URL";
            let ci = std::env::var("CI").unwrap_or_default().to_lowercase();
            if matches!(ci.as_str(), "1" | "true" | "yes") {
                panic!("{message}");
            }
            eprintln!("skipped: {message}");
        }
        stores
    }

    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Store::Sqlite => "sqlite",
            Store::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL server of the tests, if the environment gives one.
pub fn postgres_url() -> Option<String> {
    ["DYNATASK_TEST_POSTGRES_URL", "DYNATASK_DATABASE_URL"]
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| v.starts_with("postgres://") || v.starts_with("postgresql://"))
}

/// A name unlikely to be used twice (process id, time, a counter).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{:x}_{}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh database of `store`: what `--database` takes, and what to clean up after.
#[derive(Debug)]
pub struct Database {
    /// The `--database` argument.
    pub url: String,
    schema: Option<String>,
    dir: Option<PathBuf>,
}

impl Database {
    /// A fresh database: a SQLite file in a new temporary directory, or a new schema.
    pub fn fresh(store: Store) -> Database {
        match store {
            Store::Sqlite => {
                let dir = std::env::temp_dir().join(unique("dynatask-rs"));
                std::fs::create_dir_all(&dir).expect("a temporary directory");
                Database {
                    url: dir.join("dynatask.db").to_string_lossy().into_owned(),
                    schema: None,
                    dir: Some(dir),
                }
            }
            Store::Postgres => {
                let base = postgres_url().expect("a PostgreSQL URL");
                let schema = unique("rs");
                let sep = if base.contains('?') { '&' } else { '?' };
                Database {
                    url: format!("{base}{sep}schema={schema}"),
                    schema: Some(schema),
                    dir: None,
                }
            }
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let (Some(schema), Some(url)) = (&self.schema, postgres_url()) {
            // Through node's pg, so the tests need no Postgres driver of their own.
            let script = format!(
                "import pg from 'pg'; const c = new pg.Client({{connectionString: process.argv[1]}}); \
                 await c.connect(); await c.query('DROP SCHEMA IF EXISTS \"{schema}\" CASCADE'); \
                 await c.end();"
            );
            let _ = Command::new("node")
                .args(["--input-type=module", "-e", &script, &url])
                .current_dir(repo())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Default)]
struct Lines {
    lines: VecDeque<String>,
    seen: u64,
    done: bool,
}

/// A process's output, drained by a thread (so it never blocks on a full pipe), its last
/// lines kept.
#[derive(Clone, Default)]
pub struct Output(Arc<(Mutex<Lines>, Condvar)>);

impl Output {
    fn drain(&self, reader: impl std::io::Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                let (lock, cond) = &*me.0;
                let mut l = lock.lock().unwrap();
                l.lines.push_back(line);
                l.seen += 1;
                if l.lines.len() > 400 {
                    l.lines.pop_front();
                }
                cond.notify_all();
            }
            let (lock, cond) = &*me.0;
            lock.lock().unwrap().done = true;
            cond.notify_all();
        });
    }

    /// Waits for a JSON line that `matches` (looking at lines still kept, then new ones).
    pub fn wait_for(
        &self,
        matches: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.0;
        let mut l = lock.lock().unwrap();
        let mut checked = l.seen - l.lines.len() as u64;
        loop {
            let first = l.seen - l.lines.len() as u64;
            let from = checked.saturating_sub(first) as usize;
            for line in l.lines.iter().skip(from) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                    if matches(&v) {
                        return Ok(v);
                    }
                }
            }
            checked = l.seen;
            if l.done {
                return Err(format!("the process ended:\n{}", tail(&l.lines)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no such line in time:\n{}", tail(&l.lines)));
            }
            l = cond.wait_timeout(l, deadline - now).unwrap().0;
        }
    }

    /// The last lines, for failure messages.
    pub fn tail(&self) -> String {
        tail(&self.0 .0.lock().unwrap().lines)
    }
}

fn tail(lines: &VecDeque<String>) -> String {
    let skip = lines.len().saturating_sub(40);
    lines
        .iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running `dynatask server` on a database of its own; killed (and its database removed)
/// on drop.
pub struct TestServer {
    /// The store it runs on.
    pub store: Store,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its port (kept across [`TestServer::restart`]).
    pub port: u16,
    /// Extra arguments of `dynatask server`.
    pub args: Vec<String>,
    /// Its output (JSON log lines).
    pub output: Output,
    child: Option<Child>,
    database: Database,
}

impl TestServer {
    /// A server on a fresh database of `store`.
    pub fn start(store: Store) -> TestServer {
        TestServer::start_with(store, &[])
    }

    /// A server on a fresh database of `store`, with extra arguments (`--token`, ...).
    pub fn start_with(store: Store, args: &[&str]) -> TestServer {
        let mut server = TestServer {
            store,
            url: String::new(),
            port: 0,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            output: Output::default(),
            child: None,
            database: Database::fresh(store),
        };
        server.spawn(0);
        server
    }

    fn spawn(&mut self, port: u16) {
        let mut child = Command::new("node")
            .arg(repo().join("bin/dynatask.js"))
            .args(["server", "--port", &port.to_string(), "--database"])
            .arg(&self.database.url)
            .args(&self.args)
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs bin/dynatask.js (is node on PATH?)");
        let output = Output::default();
        output.drain(child.stdout.take().expect("stdout"));
        output.drain(child.stderr.take().expect("stderr"));
        self.child = Some(child);
        let line = output
            .wait_for(
                |v| v.get("msg").and_then(|m| m.as_str()) == Some("dynatask server listening"),
                STARTUP_TIMEOUT,
            )
            .unwrap_or_else(|e| {
                panic!(
                    "dynatask server on {} did not start (run `npm run build` first): {e}",
                    self.store.name()
                )
            });
        self.url = line["url"].as_str().expect("url").to_owned();
        self.port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port");
        self.output = output;
    }

    /// Stops the server: SIGTERM when `graceful` (waiting for the exit), else SIGKILL.
    pub fn stop(&mut self, graceful: bool) {
        if let Some(mut child) = self.child.take() {
            if graceful {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = child.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM) and starts it again on the same port and database.
    pub fn restart(&mut self) {
        self.stop(true);
        let port = self.port;
        self.spawn(port);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(false);
    }
}
