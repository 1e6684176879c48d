//! The harness itself: a real server starts on every store, answers, restarts on its port.

mod common;

use common::{Store, TestServer};
use dynatask::{Method, Transport};
use serde_json::Value;

#[tokio::test]
async fn a_real_server_answers_on_every_store_and_restarts_on_its_port() {
    for store in Store::all() {
        let mut server = TestServer::start(store);
        let transport = Transport::new(&server.url, None).unwrap();
        let health: Value = transport
            .call(Method::GET, "/healthz", None::<&()>)
            .await
            .unwrap();
        assert_eq!(health["status"], "ok", "{}: {health}", store.name());
        let port = server.port;
        server.restart();
        assert_eq!(server.port, port);
        let ready: Value = transport
            .call(Method::GET, "/readyz", None::<&()>)
            .await
            .unwrap();
        assert_eq!(ready["status"], "ready", "{}: {ready}", store.name());
    }
}

#[tokio::test]
async fn error_answers_map_to_the_error_enum() {
    let server = TestServer::start(Store::Sqlite);
    let transport = Transport::new(&server.url, None).unwrap();
    let err = transport
        .call::<Value, _>(
            Method::POST,
            "/v1/jobs",
            Some(&serde_json::json!({"jobs": [{"type": 5}]})),
        )
        .await
        .unwrap_err();
    match &err {
        dynatask::Error::Validation { field, .. } => {
            assert_eq!(field.as_deref(), Some("/jobs/0/type"), "{err}")
        }
        other => panic!("not a validation error: {other:?}"),
    }
    let err = transport
        .call::<Value, ()>(
            Method::GET,
            "/v1/jobs/0190b7a0-0000-7000-8000-000000000000",
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, dynatask::Error::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_named_after_the_retry_window() {
    let server = TestServer::start(Store::Sqlite);
    let url = server.url.clone();
    drop(server);
    let transport = Transport::new(&url, None)
        .unwrap()
        .with_retry_for(std::time::Duration::from_millis(300));
    let err = transport
        .call::<Value, ()>(Method::GET, "/healthz", None)
        .await
        .unwrap_err();
    match err {
        dynatask::Error::Unreachable { url: u, .. } => assert_eq!(u, url),
        other => panic!("{other:?}"),
    }
}
