//! The Rust worker against a real `dynatask server`, on SQLite and on PostgreSQL: spawn and
//! resume with the same children, both wait shapes, steps, cancellation, a payload that does
//! not deserialise, graceful shutdown, two reports in flight within the concurrency.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Store, TestServer};
use dynatask::{Child, Error, Method, TaskContext, TaskType, Transport, Worker};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

const SETTLE: Duration = Duration::from_secs(30);

/// Submits a job of `task_type` with `payload`; its id.
async fn submit(t: &Transport, namespace: &str, task_type: &str, payload: Value) -> String {
    submit_with(t, task_type, payload, json!({ "namespace": namespace })).await
}

async fn submit_with(t: &Transport, task_type: &str, payload: Value, options: Value) -> String {
    let body = json!({"jobs": [{"type": task_type, "payload": payload, "options": options}]});
    let r: Value = t
        .call(Method::POST, "/v1/jobs", Some(&body))
        .await
        .expect("submitted");
    r["jobs"][0]["jobId"].as_str().unwrap().to_owned()
}

/// The job once settled (polled, each answer read in full).
async fn settled(t: &Transport, job: &str) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let info: Value = t
            .call::<Value, ()>(Method::GET, &format!("/v1/jobs/{job}"), None)
            .await
            .expect("job");
        let state = info["state"].as_str().unwrap_or("");
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} did not settle: {info}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The job's tasks, by key (the root under "root").
async fn tasks(t: &Transport, job: &str) -> std::collections::HashMap<String, Value> {
    let r: Value = t
        .call::<Value, ()>(Method::GET, &format!("/v1/jobs/{job}/tasks"), None)
        .await
        .expect("tasks");
    r["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| {
            let key = task["key"].as_str().unwrap_or("root").to_owned();
            let key = if task["parentId"].is_null() {
                "root".to_owned()
            } else {
                key
            };
            (key, task.clone())
        })
        .collect()
}

/// Runs `worker` on its own task; the token stops it.
fn serve(
    worker: Worker,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), Error>>,
) {
    let stop = worker.shutdown_token();
    (stop, tokio::spawn(worker.run()))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Leaf {
    n: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_and_resume_with_the_same_children() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let step_runs = Arc::new(AtomicUsize::new(0));
        let created = Arc::new(std::sync::Mutex::new(Vec::new()));
        // The leaves finish only once the root has suspended in its wait, so it runs again.
        let (suspended_tx, suspended_rx) = watch::channel(false);
        let suspended_tx = Arc::new(suspended_tx);
        let (r, s, c) = (runs.clone(), step_runs.clone(), created.clone());
        let worker = Worker::builder(server.url.clone())
            .handle_signals(false)
            .concurrency(8)
            .handle("root", move |ctx: TaskContext, p: Value| {
                let (r, s, c, tx) = (r.clone(), s.clone(), c.clone(), suspended_tx.clone());
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    let stamp: u64 = ctx
                        .step("stamp", || async {
                            s.fetch_add(1, Ordering::SeqCst);
                            41u64
                        })
                        .await?;
                    let mut handles = Vec::new();
                    for n in 1..=2u64 {
                        handles.push(ctx.spawn("leaf", &Leaf { n }).await?);
                    }
                    handles.push(
                        ctx.spawn_child(Child::new("leaf", &Leaf { n: 10 })?.key("mine"))
                            .await?,
                    );
                    handles.extend(
                        ctx.spawn_many(vec![Child::new("leaf", &Leaf { n: 100 })?])
                            .await?,
                    );
                    c.lock().unwrap().push(
                        handles
                            .iter()
                            .map(|h| (h.key.clone(), h.created))
                            .collect::<Vec<_>>(),
                    );
                    let results: Vec<u64> = match ctx.wait_all(&handles).await {
                        Err(Error::Suspended) => {
                            tx.send_replace(true);
                            return Err(Error::Suspended);
                        }
                        other => other?,
                    };
                    let base = p["base"].as_u64().unwrap_or(0);
                    Ok(json!({"sum": base + stamp + results.iter().sum::<u64>(), "results": results}))
                }
            })
            .handle("leaf", move |_ctx: TaskContext, leaf: Leaf| {
                let mut rx = suspended_rx.clone();
                async move {
                    rx.wait_for(|s| *s).await.expect("the root suspends");
                    Ok(leaf.n * 2)
                }
            })
            .build()
            .unwrap();
        let (stop, running) = serve(worker);
        let job = submit(&t, "default", "root", json!({"base": 1000})).await;
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "succeeded", "{}: {info}", store.name());
        assert_eq!(
            info["result"],
            json!({"sum": 1000 + 41 + 2 + 4 + 20 + 200, "results": [2, 4, 20, 200]})
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "the root ran again after its wait"
        );
        assert_eq!(step_runs.load(Ordering::SeqCst), 1, "the step ran once");
        let created = created.lock().unwrap().clone();
        let keys = |created: bool| {
            vec![
                ("#0".to_owned(), created),
                ("#1".to_owned(), created),
                ("mine".to_owned(), created),
                ("#2".to_owned(), created),
            ]
        };
        assert_eq!(created, vec![keys(true), keys(false)]);
        let tasks = tasks(&t, &job).await;
        assert_eq!(tasks.len(), 5, "no child was created twice");
        assert_eq!(tasks["root"]["attempt"], 1);
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_wait_shapes_and_failures() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let worker = Worker::builder(server.url.clone())
            .handle_signals(false)
            .handle("settled", |ctx: TaskContext, _: Value| async move {
                let ok = ctx.spawn("ok", &1).await?;
                let bad = ctx.spawn("bad", &()).await?;
                let outcomes = ctx.wait_all_settled([&ok, &bad]).await?;
                Ok(outcomes
                    .iter()
                    .map(|o| json!([o.state, o.result, o.error.as_ref().map(|e| &e["message"])]))
                    .collect::<Vec<_>>())
            })
            .handle("strict", |ctx: TaskContext, _: Value| async move {
                ctx.spawn("ok", &2).await?;
                ctx.spawn("bad", &()).await?;
                let all: Vec<u64> = ctx.wait_children().await?;
                Ok(all)
            })
            .handle("catcher", |ctx: TaskContext, _: Value| async move {
                ctx.spawn("ok", &3).await?;
                ctx.spawn("bad", &()).await?;
                match ctx.wait_children::<u64>().await {
                    Err(Error::ChildTaskFailed { failures }) => {
                        Ok(json!({"failed": failures.len()}))
                    }
                    other => Ok(json!({"results": other?})),
                }
            })
            .handle(
                TaskType::new("ok").max_attempts(2),
                |_ctx: TaskContext, n: u64| async move { Ok(n) },
            )
            .handle(
                TaskType::new("bad").max_attempts(3),
                |_ctx: TaskContext, _: Value| async move {
                    Err::<(), _>(Error::non_retryable("bad child"))
                },
            )
            .build()
            .unwrap();
        let (stop, running) = serve(worker);

        let job = submit(&t, "default", "settled", Value::Null).await;
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "succeeded", "{info}");
        assert_eq!(
            info["result"],
            json!([["succeeded", 1, null], ["failed", null, "bad child"]])
        );
        let tasks_of = tasks(&t, &job).await;
        assert_eq!(
            tasks_of["#1"]["attempt"], 1,
            "a non-retryable error is not retried"
        );
        assert_eq!(tasks_of["#1"]["error"]["name"], "NonRetryableError");

        let job = submit(&t, "default", "strict", Value::Null).await;
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "failed", "{info}");
        let root = &tasks(&t, &job).await["root"];
        assert_eq!(root["error"]["name"], "ChildTaskFailedError", "{root}");
        assert_eq!(root["attempt"], 1, "ChildTaskFailed is not retried");

        let job = submit(&t, "default", "catcher", Value::Null).await;
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "succeeded", "{info}");
        assert_eq!(info["result"], json!({"failed": 1}));
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Resize {
    width: u32,
    height: u32,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_does_not_deserialise_fails_without_retries() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let worker = Worker::builder(server.url.clone())
            .handle_signals(false)
            .handle(
                TaskType::new("resize").max_attempts(5),
                |_ctx: TaskContext, r: Resize| async move { Ok(r.width * r.height) },
            )
            .build()
            .unwrap();
        let (stop, running) = serve(worker);
        let good = submit(&t, "default", "resize", json!({"width": 3, "height": 4})).await;
        let bad = submit(&t, "default", "resize", json!({"width": "wide"})).await;
        assert_eq!(settled(&t, &good).await["result"], 12);
        let info = settled(&t, &bad).await;
        assert_eq!(info["state"], "failed");
        let root = &tasks(&t, &bad).await["root"];
        assert_eq!(root["attempt"], 1, "not retried: {root}");
        assert_eq!(root["error"]["name"], "PayloadValidationError");
        let message = root["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("Resize") && message.contains("invalid type"),
            "a clear message: {message}"
        );
        stop.cancel();
        running.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_sees_its_token_and_its_result_is_ignored() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let started = Arc::new(Notify::new());
        let saw_cancel = Arc::new(AtomicUsize::new(0));
        let (st, saw) = (started.clone(), saw_cancel.clone());
        let worker = Worker::builder(server.url.clone())
            .handle_signals(false)
            .handle("sleeper", move |ctx: TaskContext, _: Value| {
                let (st, saw) = (st.clone(), saw.clone());
                async move {
                    st.notify_one();
                    ctx.cancelled().cancelled().await;
                    saw.fetch_add(1, Ordering::SeqCst);
                    Ok("woke")
                }
            })
            .build()
            .unwrap();
        let (stop, running) = serve(worker);
        let job = submit(&t, "default", "sleeper", Value::Null).await;
        started.notified().await;
        let body = json!({"reason": "enough"});
        let r: Value = t
            .call(Method::POST, &format!("/v1/jobs/{job}/cancel"), Some(&body))
            .await
            .unwrap();
        assert_eq!(r["cancelled"], true);
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "cancelled");
        // Its handler learns of it at the next heartbeat (within a second) and returns; what
        // it returned changes nothing.
        stop.cancel();
        running.await.unwrap().unwrap();
        assert_eq!(
            saw_cancel.load(Ordering::SeqCst),
            1,
            "the handler saw its token"
        );
        let root = &tasks(&t, &job).await["root"];
        assert_eq!(root["state"], "cancelled");
        assert!(root["result"].is_null(), "{root}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_finishes_what_runs_within_its_grace() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let started = Arc::new(Notify::new());
        let go = Arc::new(Notify::new());
        let (st, g) = (started.clone(), go.clone());
        let worker = Worker::builder(server.url.clone())
            .handle_signals(false)
            .grace(Duration::from_secs(20))
            .handle("slow", move |_ctx: TaskContext, n: u64| {
                let (st, g) = (st.clone(), g.clone());
                async move {
                    st.notify_one();
                    g.notified().await;
                    Ok(n + 1)
                }
            })
            .build()
            .unwrap();
        let (stop, running) = serve(worker);
        let job = submit(&t, "default", "slow", json!(1)).await;
        started.notified().await;
        stop.cancel();
        // Stopping: the handler still runs; once it returns its result is reported.
        go.notify_one();
        running.await.unwrap().unwrap();
        let info = settled(&t, &job).await;
        assert_eq!(info["state"], "succeeded");
        assert_eq!(info["result"], 2);
        let types: Value = t
            .call::<Value, ()>(Method::GET, "/v1/types", None)
            .await
            .unwrap();
        let slow = types["types"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["type"] == "slow")
            .cloned()
            .unwrap_or(Value::Null);
        assert!(
            slow.is_null() || slow["served"] == false || slow["served"] == 0,
            "the worker told the server it stopped: {slow}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_reports_in_flight_never_run_more_than_the_concurrency() {
    const JOBS: usize = 200;
    for store in Store::all() {
        let server = TestServer::start(store);
        let t = Transport::new(&server.url, None).unwrap();
        let jobs: Vec<Value> = (0..JOBS)
            .map(|i| json!({"type": "work", "payload": i}))
            .collect();
        let body = json!({ "jobs": jobs });
        let _: Value = t
            .call(Method::POST, "/v1/jobs", Some(&body))
            .await
            .expect("submitted");
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let runs = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let all_ran = Arc::new(Notify::new());
        let (n, m, r, a) = (
            Arc::clone(&now),
            Arc::clone(&most),
            Arc::clone(&runs),
            Arc::clone(&all_ran),
        );
        // Batches of 2 (4 slots, 2 reports in flight): the handlers of one batch run while
        // another is stored, outcomes of some handlers going while others still run.
        let worker = Worker::builder(server.url.clone())
            .concurrency(4)
            .batch_size(2)
            .reports_in_flight(2)
            .handle_signals(false)
            .handle("work", move |ctx: TaskContext, i: u64| {
                let (n, m, r, a) = (
                    Arc::clone(&n),
                    Arc::clone(&m),
                    Arc::clone(&r),
                    Arc::clone(&a),
                );
                async move {
                    let running = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(running, Ordering::SeqCst);
                    // Work of different lengths (0 to 4 ms): handlers end out of step with
                    // their batches, and claims land while others still run.
                    tokio::time::sleep(Duration::from_millis(i % 5)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    let mut runs = r.lock().unwrap();
                    *runs.entry(ctx.task_id().to_owned()).or_insert(0usize) += 1;
                    if runs.len() == JOBS {
                        a.notify_one();
                    }
                    Ok(i)
                }
            })
            .build()
            .unwrap();
        let (stop, running) = serve(worker);
        tokio::time::timeout(SETTLE, all_ran.notified())
            .await
            .expect("every task ran");
        // The drain reports the last outcomes.
        stop.cancel();
        running.await.unwrap().unwrap();
        assert!(
            most.load(Ordering::SeqCst) <= 4,
            "{} handlers at once",
            most.load(Ordering::SeqCst)
        );
        assert!(
            runs.lock().unwrap().values().all(|n| *n == 1),
            "each ran once"
        );
        let list: Value = t
            .call::<Value, ()>(Method::GET, "/v1/jobs?state=succeeded&limit=1000", None)
            .await
            .expect("jobs");
        assert_eq!(
            list["jobs"].as_array().unwrap().len(),
            JOBS,
            "every outcome stored ({})",
            store.name()
        );
    }
}
