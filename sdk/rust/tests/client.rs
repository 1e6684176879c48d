//! The client against a real server, on SQLite and PostgreSQL. Tasks are run by the worker
//! protocol itself (claim, report) through the crate's transport, so no other process is
//! needed.

mod common;

use std::collections::HashSet;

use common::{Store, TestServer};
use dynatask::{
    CallOptions, Client, Error, Event, EventKind, JobFilter, JobState, Method, SubmitJob,
    SubmitOptions, TaskState, Transport,
};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use dynatask::wire::{
    ClaimRequest, ClaimResult, ClaimedTask, Completed, Failed, FailedError, ItemStatus,
    ReportRequest, ReportResult,
};

/// Claims one task of `task_type` in `namespace` (long-polling) and reports `outcome` of its
/// payload (typed wire types all the way): `Ok(result)` completes it, `Err(message)` fails it (not retryable).
async fn run_one(
    transport: &Transport,
    namespace: &str,
    task_type: &str,
    outcome: impl Fn(&Value) -> Result<Value, String>,
) -> ClaimedTask {
    let opts = CallOptions {
        timeout: Some(std::time::Duration::from_secs(20)),
        ..CallOptions::default()
    };
    let claim = ClaimRequest {
        namespace: Some(namespace.to_owned()),
        types: vec![task_type.to_owned()],
        limit: 1,
        wait_ms: Some(10_000),
        claim_id: Some(dynatask::new_job_id()),
        ..ClaimRequest::default()
    };
    let claimed: ClaimResult = transport
        .call_with(Method::POST, "/v1/worker/claim", Some(&claim), &opts)
        .await
        .unwrap();
    let task = claimed.tasks.into_iter().next().expect("a task claimed");
    assert_eq!(task.task_type, task_type);
    let (id, token) = (task.id.clone(), task.token);
    let body = match outcome(&task.payload) {
        Ok(result) => ReportRequest {
            completed: Some(vec![Completed {
                id,
                token,
                result: Some(result),
            }]),
            ..ReportRequest::default()
        },
        Err(message) => ReportRequest {
            failed: Some(vec![Failed {
                id,
                token,
                error: FailedError {
                    name: Some("Error".into()),
                    message,
                    stack: None,
                    retryable: Some(false),
                },
            }]),
            ..ReportRequest::default()
        },
    };
    let report: ReportResult = transport
        .call(Method::POST, "/v1/worker/report", Some(&body))
        .await
        .unwrap();
    let statuses = [report.completed, report.failed].concat();
    assert_eq!(statuses, [ItemStatus::Ok]);
    task
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sum {
    total: i64,
}

#[tokio::test]
async fn submit_is_idempotent_and_a_typed_result_is_awaited() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let client = Client::new(&server.url, None).unwrap().with_namespace("rs");
        let options = SubmitOptions {
            job_id: Some(dynatask::new_job_id()),
            ..SubmitOptions::default()
        };
        let job = client
            .submit("add", &json!({"a": 2, "b": 3}), options.clone())
            .await
            .unwrap();
        assert!(job.created);
        let again = client
            .submit("add", &json!({"a": 2, "b": 3}), options)
            .await
            .unwrap();
        assert!(!again.created, "{}", store.name());
        assert_eq!(again.job_id, job.job_id);
        assert_eq!(again.root_task_id, job.root_task_id);

        let info = client.get_job(&job.job_id).await.unwrap();
        assert_eq!(info.state, JobState::Running);
        assert_eq!(info.namespace, "rs");
        assert_eq!(info.task_type, "add");
        assert_eq!(info.total, 1);

        let waiter = {
            let client = client.clone();
            let id = job.job_id.clone();
            tokio::spawn(async move { client.wait_for_result::<Sum>(&id, None).await })
        };
        run_one(client.transport(), "rs", "add", |p| {
            Ok(json!({"total": p["a"].as_i64().unwrap() + p["b"].as_i64().unwrap()}))
        })
        .await;
        assert_eq!(waiter.await.unwrap().unwrap(), Sum { total: 5 });

        // A result of another shape is a decode error naming the job.
        let err = client
            .wait_for_result::<Vec<u8>>(&job.job_id, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Decode(m) if m.contains(&job.job_id)),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn a_failed_job_is_an_error_and_a_retried_task_runs_again() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let client = Client::new(&server.url, None).unwrap();
        let job = client
            .submit(
                "flaky",
                &json!(null),
                SubmitOptions {
                    max_attempts: Some(1),
                    ..SubmitOptions::default()
                },
            )
            .await
            .unwrap();
        run_one(client.transport(), "default", "flaky", |_| {
            Err("broken".into())
        })
        .await;
        let err = client
            .wait_for_result::<Value>(&job.job_id, None)
            .await
            .unwrap_err();
        match &err {
            Error::TaskFailed {
                job_id,
                state,
                error,
            } => {
                assert_eq!(job_id, &job.job_id);
                assert_eq!(state, "failed");
                assert_eq!(error["message"], "broken");
            }
            other => panic!("{}: {other:?}", store.name()),
        }
        assert_eq!(err.code(), "job_failed");
        let task = client.get_task(&job.root_task_id).await.unwrap();
        assert_eq!(task.state, TaskState::Failed);
        assert_eq!(task.attempts.as_ref().map(Vec::len), Some(1));

        assert!(client.retry_task(&job.root_task_id).await.unwrap());
        // Retrying again (a repeated call) names the same failed attempt: still fine.
        run_one(client.transport(), "default", "flaky", |_| {
            Ok(json!("fixed"))
        })
        .await;
        let result: String = client.wait_for_result(&job.job_id, None).await.unwrap();
        assert_eq!(result, "fixed");
        // A task that has not failed cannot be retried.
        let err = client.retry_task(&job.root_task_id).await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn jobs_are_listed_and_paged_and_trees_read() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let client = Client::new(&server.url, None)
            .unwrap()
            .with_namespace("pages");
        let jobs: Vec<SubmitJob> = (0..7)
            .map(|i| SubmitJob {
                task_type: if i % 2 == 0 { "even" } else { "odd" }.to_owned(),
                payload: Some(json!(i)),
                options: None,
            })
            .collect();
        let submitted = client.submit_many(jobs).await.unwrap();
        assert_eq!(submitted.len(), 7);
        let ids: HashSet<String> = submitted.iter().map(|j| j.job_id.clone()).collect();

        let filter = JobFilter {
            limit: Some(3),
            ..JobFilter::default()
        };
        let first = client.list_jobs(&filter, None).await.unwrap();
        assert_eq!(first.jobs.len(), 3);
        assert!(first.next.is_some());
        let all: Vec<_> = client.jobs(filter).collect::<Vec<_>>().await;
        let listed: HashSet<String> = all.into_iter().map(|j| j.unwrap().id).collect();
        assert_eq!(listed, ids, "{}", store.name());

        let odd: Vec<_> = client
            .jobs(JobFilter {
                task_type: Some("odd".into()),
                state: Some(JobState::Running),
                ..JobFilter::default()
            })
            .collect::<Vec<_>>()
            .await;
        assert_eq!(odd.len(), 3);
        let none = client
            .list_jobs(
                &JobFilter {
                    namespace: Some("elsewhere".into()),
                    ..JobFilter::default()
                },
                None,
            )
            .await
            .unwrap();
        assert!(none.jobs.is_empty() && none.next.is_none());

        // A tree: a root that spawns three children through the worker protocol.
        let job = client
            .submit("root", &json!({}), SubmitOptions::default())
            .await
            .unwrap();
        let opts = CallOptions {
            timeout: Some(std::time::Duration::from_secs(20)),
            ..CallOptions::default()
        };
        let claimed: Value = client
            .transport()
            .call_with(
                Method::POST,
                "/v1/worker/claim",
                Some(
                    &json!({"namespace": "pages", "types": ["root"], "limit": 1, "waitMs": 10000}),
                ),
                &opts,
            )
            .await
            .unwrap();
        let root = &claimed["tasks"][0];
        let children: Vec<Value> = (0..3)
            .map(|i| json!({"type": "leaf", "payload": i, "options": {"key": format!("k{i}")}}))
            .collect();
        let spawned: Value = client
            .transport()
            .call(
                Method::POST,
                "/v1/worker/spawn",
                Some(&json!({"items": [{"id": root["id"], "token": root["token"], "children": children}]})),
            )
            .await
            .unwrap();
        assert_eq!(
            spawned["items"][0]["children"].as_array().map(Vec::len),
            Some(3),
            "{spawned}"
        );
        let page = client.tree(&job.job_id, None, Some(2)).await.unwrap();
        assert_eq!(page.tasks.len(), 2);
        assert_eq!(page.tasks[0].id, job.root_task_id);
        let tasks: Vec<_> = client.tasks(&job.job_id, 2).collect::<Vec<_>>().await;
        let tasks: Vec<_> = tasks.into_iter().map(Result::unwrap).collect();
        assert_eq!(tasks.len(), 4);
        assert_eq!(tasks[0].state, TaskState::Running);
        let keys: Vec<_> = tasks[1..].iter().map(|t| t.key.clone().unwrap()).collect();
        assert_eq!(keys, ["k0", "k1", "k2"]);
        assert!(tasks[1..]
            .iter()
            .all(|t| t.parent_id.as_deref() == Some(&job.root_task_id)));

        let types = client.types(None).await.unwrap();
        let leaf = types
            .iter()
            .find(|t| t.task_type == "leaf")
            .expect("leaf listed");
        assert_eq!(leaf.queued, 3);
    }
}

#[tokio::test]
async fn cancel_and_the_event_stream_of_a_job() {
    for store in Store::all() {
        let server = TestServer::start(store);
        let client = Client::new(&server.url, None).unwrap();
        let job = client
            .submit("slow", &json!(1), SubmitOptions::default())
            .await
            .unwrap();
        let mut events = client.events(Some(&job.job_id), &[]).await.unwrap();
        run_one(client.transport(), "default", "slow", |_| Ok(json!(42))).await;
        let mut seen = vec![];
        while let Some(e) = events.next().await {
            seen.push(e.unwrap());
        }
        // The stream ends after the job's `job` event.
        assert!(
            matches!(
                seen.last(),
                Some(Event::Job {
                    state: JobState::Succeeded,
                    ..
                })
            ),
            "{}: {seen:?}",
            store.name()
        );
        assert!(seen.iter().any(|e| matches!(
            e,
            Event::Task {
                state: TaskState::Running,
                ..
            }
        )));
        assert!(seen.iter().all(|e| e.job_id() == job.job_id));

        // A late subscriber of a settled job still learns the end.
        let mut late = client
            .events(Some(&job.job_id), &[EventKind::Job])
            .await
            .unwrap();
        assert!(matches!(late.next().await, Some(Ok(Event::Job { .. }))));
        assert!(late.next().await.is_none());

        // Cancelling: a running job, then again (it has settled), and an unknown one.
        let other = client
            .submit("slow", &json!(2), SubmitOptions::default())
            .await
            .unwrap();
        assert!(client
            .cancel_job(&other.job_id, Some("not needed"))
            .await
            .unwrap());
        assert!(!client.cancel_job(&other.job_id, None).await.unwrap());
        let err = client
            .wait_for_result::<Value>(&other.job_id, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TaskFailed { state, .. } if state == "cancelled"),
            "{err:?}"
        );
        let info = client.get_job(&other.job_id).await.unwrap();
        assert_eq!(info.state, JobState::Cancelled);
        let err = client
            .cancel_task(&dynatask::new_job_id(), None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
        let err = client
            .events(Some(&dynatask::new_job_id()), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
}

#[tokio::test]
async fn waiting_for_a_job_times_out_and_the_server_can_restart_meanwhile() {
    let mut server = TestServer::start(Store::Sqlite);
    let client = Client::new(&server.url, None).unwrap();
    let job = client
        .submit("later", &json!(null), SubmitOptions::default())
        .await
        .unwrap();
    let err = client
        .wait_for_job(&job.job_id, Some(std::time::Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");

    let waiter = {
        let client = client.clone();
        let id = job.job_id.clone();
        tokio::spawn(async move { client.wait_for_result::<i64>(&id, None).await })
    };
    server.restart();
    run_one(client.transport(), "default", "later", |_| Ok(json!(7))).await;
    assert_eq!(waiter.await.unwrap().unwrap(), 7);
    assert!(client.ready().await);
}

#[tokio::test]
async fn a_token_is_sent_and_a_missing_one_is_an_auth_error() {
    let secret = "rs-secret-0123456789abcdef";
    let server =
        TestServer::start_with(Store::Sqlite, &["--token", &format!("ops:admin:{secret}")]);
    let anonymous = Client::new(&server.url, Some("")).unwrap();
    let err = anonymous
        .get_job(&dynatask::new_job_id())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { status: 401, .. }), "{err:?}");
    let client = Client::new(&server.url, Some(secret)).unwrap();
    let err = client.get_job(&dynatask::new_job_id()).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
