//! Three languages, one job, on SQLite and on PostgreSQL: a TypeScript root task spawns Python
//! tasks, which spawn Rust tasks, whose results flow back up to the TypeScript root, which
//! aggregates them; each process serves only its own types. Then the same with the Rust worker
//! killed by SIGKILL mid-job and started again: the job completes, nothing is lost, no child is
//! created twice.
//!
//! The Python worker runs on the repository's `.venv` (`npm run test:python` makes it;
//! `$DYNATASK_PYTHON` names another interpreter with the SDK installed).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{repo, Store, TestServer};
use dynatask::{Method, Transport};
use serde_json::{json, Value};

const CHILDREN: u64 = 3;
const LEAVES: u64 = 4;

/// A worker process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` and waits for its `ready` line.
fn start(mut cmd: Command, what: &str) -> Proc {
    let mut child = cmd
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test leaf_worker_process ... " before it on the same line.
            if line.trim().ends_with("ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} did not say ready"));
    Proc(child)
}

fn python() -> PathBuf {
    std::env::var("DYNATASK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv/bin/python"))
}

fn fixture(name: &str) -> PathBuf {
    repo().join("sdk/rust/tests/fixtures").join(name)
}

fn ts(url: &str, ns: &str) -> Proc {
    let mut c = Command::new("node");
    c.arg(fixture("ts_worker.mjs")).args([url, ns]);
    start(c, "the TypeScript worker")
}

fn py(url: &str, ns: &str) -> Proc {
    let py = python();
    assert!(
        py.exists(),
        "no Python for the three-languages test at {} (run `npm run test:python` once, or set \
         DYNATASK_PYTHON)",
        py.display()
    );
    let mut c = Command::new(py);
    c.arg(fixture("py_worker.py")).args([url, ns]);
    start(c, "the Python worker")
}

/// A Rust worker process: this test binary again, running only [`leaf_worker_process`], which
/// serves `rs_leaf` (as examples/leaf_worker.rs does) when `DYNATASK_LEAF_WORKER` says where.
fn rs(url: &str, ns: &str, delay_ms: u64) -> Proc {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "leaf_worker_process",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env("DYNATASK_LEAF_WORKER", format!("{url} {ns} {delay_ms}"));
    start(c, "the Rust worker")
}

#[derive(serde::Deserialize)]
struct Leaf {
    n: u64,
}

/// The Rust worker of [`rs`]; returns at once in a test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaf_worker_process() {
    let Ok(config) = std::env::var("DYNATASK_LEAF_WORKER") else {
        return;
    };
    let mut parts = config.split(' ');
    let url = parts.next().unwrap().to_owned();
    let ns = parts.next().unwrap().to_owned();
    let delay = Duration::from_millis(parts.next().unwrap().parse().unwrap());
    let worker = dynatask::Worker::builder(url)
        .namespace(ns)
        .concurrency(4)
        .handle(
            "rs_leaf",
            move |_ctx: dynatask::TaskContext, leaf: Leaf| async move {
                tokio::time::sleep(delay).await;
                Ok(json!({"n": leaf.n * 2, "language": "rust"}))
            },
        )
        .build()
        .unwrap();
    println!("ready");
    worker.run().await.unwrap();
}

fn expected_sum() -> u64 {
    (0..CHILDREN)
        .flat_map(|n| (0..LEAVES).map(move |j| (n * 10 + j) * 2))
        .sum()
}

async fn get(t: &Transport, path: &str) -> Value {
    t.call::<Value, ()>(Method::GET, path, None).await.unwrap()
}

async fn submit(t: &Transport, ns: &str) -> String {
    let body = json!({"jobs": [{"type": "tree", "payload": {"children": CHILDREN, "leaves": LEAVES},
        "options": {"namespace": ns}}]});
    let r: Value = t.call(Method::POST, "/v1/jobs", Some(&body)).await.unwrap();
    r["jobs"][0]["jobId"].as_str().unwrap().to_owned()
}

async fn settled(t: &Transport, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = get(t, &format!("/v1/jobs/{job}")).await;
        if info["state"] != "running" {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not settle: {info}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The job's tree: one root, CHILDREN py_mid, CHILDREN × LEAVES rs_leaf, each once.
async fn check_tree(t: &Transport, job: &str) -> Vec<Value> {
    let tree = get(t, &format!("/v1/jobs/{job}/tasks")).await;
    let tasks = tree["tasks"].as_array().unwrap().clone();
    let count = |ty: &str| tasks.iter().filter(|x| x["type"] == ty).count() as u64;
    assert_eq!(count("tree"), 1);
    assert_eq!(count("py_mid"), CHILDREN);
    assert_eq!(
        count("rs_leaf"),
        CHILDREN * LEAVES,
        "no child created twice"
    );
    let mut keys: Vec<(String, String)> = tasks
        .iter()
        .map(|x| {
            (
                x["parentId"].as_str().unwrap_or("").to_owned(),
                x["key"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), tasks.len(), "each spawn key once per parent");
    for x in &tasks {
        assert_eq!(x["state"], "succeeded", "{x}");
    }
    tasks
}

fn check_result(info: &Value) {
    assert_eq!(info["state"], "succeeded", "{info}");
    let mids: Vec<u64> = (0..CHILDREN)
        .map(|n| (0..LEAVES).map(|j| (n * 10 + j) * 2).sum())
        .collect();
    assert_eq!(
        info["result"],
        json!({"sum": expected_sum(), "mids": mids, "languages": ["typescript", "python", "rust"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_across_typescript_python_and_rust() {
    for store in Store::all() {
        let server = TestServer::start_with(store, &["--lease-ms", "1000"]);
        let t = Transport::new(&server.url, None).unwrap();
        let ns = common::unique("three");
        let _ts = ts(&server.url, &ns);
        let _py = py(&server.url, &ns);
        let _rs = rs(&server.url, &ns, 0);
        let job = submit(&t, &ns).await;
        check_result(&settled(&t, &job).await);
        check_tree(&t, &job).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_worker_killed_mid_job() {
    for store in Store::all() {
        let server = TestServer::start_with(store, &["--lease-ms", "1000"]);
        let t = Transport::new(&server.url, None).unwrap();
        let ns = common::unique("kill");
        let _ts = ts(&server.url, &ns);
        let _py = py(&server.url, &ns);
        // Each leaf holds its slot for 5 s: the kill comes while leaves run.
        let mut first = rs(&server.url, &ns, 5000);
        let job = submit(&t, &ns).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tree = get(&t, &format!("/v1/jobs/{job}/tasks")).await;
            let running = tree["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|x| x["type"] == "rs_leaf" && x["state"] == "running")
                .count();
            if running > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no Rust leaf ran: {tree}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = Command::new("kill")
            .args(["-KILL", &first.0.id().to_string()])
            .status();
        let _ = first.0.wait();
        // A new one: the leases of the killed one's attempts expire, and they run again here.
        let _second = rs(&server.url, &ns, 0);
        let info = settled(&t, &job).await;
        check_result(&info);
        let tasks = check_tree(&t, &job).await;
        let retried = tasks
            .iter()
            .filter(|x| x["type"] == "rs_leaf" && x["attempt"].as_u64() > Some(1))
            .count();
        assert!(retried > 0, "some leaves ran again after the kill");
        drop(first);
    }
}
