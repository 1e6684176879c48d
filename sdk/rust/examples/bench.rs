//! Benchmark workloads with one Rust worker process (`npm run bench -- --rust`), as
//! bench/workloads.ts runs them with the TypeScript remote worker and
//! sdk/python/bench/workloads.py with a Python one. Prints one JSON line.
//!
//! ```text
//! cargo run --release --example bench -- URL flat|latency N
//! ```
//!
//! - `flat`: N one-task jobs submitted in batches of 1,000, then one worker (concurrency 512,
//!   batches of 256, two reports in flight) with a trivial handler processes them; timed from
//!   the worker's start until no job is running (polled every 5 ms). The latency is queueing
//!   time: from before the submissions to each handler's start.
//! - `latency`: an idle worker; N single submissions, each once the previous one's handler
//!   started, 5 ms apart; the latency is from the submit call to the handler starting. (One
//!   ping before them, not counted, tells that the worker is up: it has no ready signal.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dynatask::{Client, JobFilter, JobState, SubmitJob, SubmitOptions, TaskContext, Worker};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

#[derive(Deserialize)]
struct Stamp {
    /// When the task was submitted: ms since the process's clock origin.
    t: f64,
}

/// One clock for submissions and handler starts (both in this process).
struct Clock(Instant);

impl Clock {
    fn ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

struct Record {
    clock: Clock,
    latencies: Mutex<Vec<f64>>,
    started: Notify,
}

fn worker(url: &str, record: &Arc<Record>) -> Result<Worker, dynatask::Error> {
    let r = Arc::clone(record);
    Worker::builder(url)
        // Two batches of 256 (the TypeScript worker's batch): one runs while the other is
        // stored (two reports in flight).
        .concurrency(512)
        .batch_size(256)
        .grace(Duration::from_secs(5))
        .handle_signals(false)
        .handle("noop", move |_ctx: TaskContext, p: Stamp| {
            let r = Arc::clone(&r);
            async move {
                let ms = r.clock.ms() - p.t;
                r.latencies.lock().expect("latencies").push(ms);
                r.started.notify_one();
                Ok(())
            }
        })
        .build()
}

async fn flat(url: &str, n: usize, record: Arc<Record>) -> Result<Value, dynatask::Error> {
    let client = Client::new(url, None)?;
    let now = record.clock.ms();
    let t0 = Instant::now();
    for i in (0..n).step_by(1000) {
        let batch = (i..n.min(i + 1000))
            .map(|_| SubmitJob {
                task_type: "noop".to_owned(),
                payload: Some(json!({ "t": now })),
                options: None,
            })
            .collect();
        client.submit_many(batch).await?;
    }
    let enqueue_s = t0.elapsed().as_secs_f64();
    let w = worker(url, &record)?;
    let stop = w.shutdown_token();
    let t1 = Instant::now();
    let run = tokio::spawn(w.run());
    let running = JobFilter {
        state: Some(JobState::Running),
        limit: Some(1),
        ..JobFilter::default()
    };
    while !client.list_jobs(&running, None).await?.jobs.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = t1.elapsed().as_secs_f64();
    stop.cancel();
    run.await.expect("the worker's task")?;
    let mut out = figures(n, seconds, &record);
    out["enqueue_s"] = json!(round(enqueue_s, 3));
    out["enqueue_per_s"] = json!((n as f64 / enqueue_s).round());
    Ok(out)
}

async fn latency(url: &str, n: usize, record: Arc<Record>) -> Result<Value, dynatask::Error> {
    let client = Client::new(url, None)?;
    let w = worker(url, &record)?;
    let stop = w.shutdown_token();
    let run = tokio::spawn(w.run());
    // The worker has no ready signal: one ping first, not counted, says it is claiming (and
    // has its connections open, as the other languages' workers have once registered).
    ping(&client, &record).await?;
    record.latencies.lock().expect("latencies").clear();
    let t0 = Instant::now();
    for _ in 0..n {
        ping(&client, &record).await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    stop.cancel();
    run.await.expect("the worker's task")?;
    Ok(figures(n, seconds, &record))
}

/// Submits one task and waits until its handler has started.
async fn ping(client: &Client, record: &Record) -> Result<(), dynatask::Error> {
    // Registered before the submission, so a start that comes first is not missed.
    let started = record.started.notified();
    tokio::pin!(started);
    started.as_mut().enable();
    let stamp = json!({ "t": record.clock.ms() });
    client
        .submit("noop", &stamp, SubmitOptions::default())
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(30), started).await;
    Ok(())
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn figures(n: usize, seconds: f64, record: &Record) -> Value {
    let mut lat = record.latencies.lock().expect("latencies").clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((p / 100.0 * lat.len() as f64) as usize).min(lat.len() - 1)]
        }
    };
    json!({
        "tasks": n,
        "seconds": round(seconds, 3),
        "tasks_per_s": (n as f64 / seconds).round(),
        "p50_ms": round(pct(50.0), 2),
        "p99_ms": round(pct(99.0), 2),
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": round(cpu_s(), 2),
    })
}

/// CPU time of the process so far, user and system, all threads (s): /proc/self/stat's
/// utime and stime, in Linux's fixed 100 ticks a second; 0 where /proc is not there.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The process's peak resident set (VmHWM), MB; 0 where /proc is not there.
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| (kb + 512) / 1024)
}

#[tokio::main]
async fn main() -> Result<(), dynatask::Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, workload, n] = args.as_slice() else {
        eprintln!("usage: bench URL flat|latency N");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N: a number");
    let record = Arc::new(Record {
        clock: Clock(Instant::now()),
        latencies: Mutex::new(Vec::new()),
        started: Notify::new(),
    });
    let out = match workload.as_str() {
        "flat" => flat(url, n, record).await?,
        "latency" => latency(url, n, record).await?,
        other => {
            eprintln!("unknown workload {other} (flat or latency)");
            std::process::exit(2);
        }
    };
    println!("{out}");
    Ok(())
}
