//! resourceVersions the server never issued and ones it forgot, answered exactly as a real
//! API server answers them:
//! - never issued (a client of an earlier run, after a restart with fresh storage): lists,
//!   gets and watches wait up to 3 s for it (the watch cache's `blockTimeout`), then lists
//!   and gets answer `504 Timeout`, watches a `200` stream with one `ERROR` event; both
//!   carry the cause `ResourceVersionTooLarge` and `retryAfterSeconds: 1`, which client-go's
//!   reflector takes as "relist from scratch";
//! - forgotten (compacted): a watch gets an `ERROR` event with `410 Expired`, a continue
//!   token `410 Expired`.

use crate::common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, WatchEvent, WatchParams};
use kube_relay_sim::{ClockMode, Fault};
use kube_relay_testkit::http;
use serde_json::{Value, json};

use common::{client, start};

const SCENARIO: &str = r#"
seed: 5
jitter: 0
nodes: {count: 1}
deployments:
  - {name: web, namespace: shop, replicas: 2, image: nginx:1.27, startup: 1s, readiness: 1s}
"#;

/// A resourceVersion far beyond anything the test's cluster issues.
const NEVER_ISSUED: u64 = 99_999_999;

/// The Status a real API server refuses `requested` with while it is at `current`.
fn too_large(requested: u64, current: u64) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("Too large resource version: {requested}, current: {current}"),
        "reason": "Timeout",
        "details": {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1
        },
        "code": 504
    })
}

/// The lines of a watch response body, parsed.
fn events(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
        .collect()
}

#[tokio::test]
async fn a_resource_version_never_issued_is_too_large_for_lists_gets_and_watches() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(5)).expect("advance");
    let addr = sim.local_addr();
    let current = handle.resource_version();
    let pod = handle.pods()[0].metadata.name.clone().expect("a pod");

    // Every request waits the watch cache's 3 s for the version: all at once.
    let watch = |path: String| async move {
        let r = http::get(addr, &path, &[]).await.expect("watch answered");
        (r.status, events(&r.body))
    };
    let get = |path: String| async move {
        let r = http::get(addr, &path, &[]).await.expect("answered");
        let body: Value = serde_json::from_slice(&r.body).expect("a Status");
        (r.status, body)
    };
    let (watches, gets) = tokio::join!(
        futures::future::join_all([
            // kubectl get --raw '/api/v1/pods?watch=1&resourceVersion=99999999': a 200
            // stream that ends after one ERROR event (it used to hang for ever)...
            watch(format!(
                "/api/v1/pods?watch=1&resourceVersion={NEVER_ISSUED}"
            )),
            // ... as does a streaming list (sendInitialEvents) in a namespace.
            watch(format!(
                "/api/v1/namespaces/shop/pods?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion={NEVER_ISSUED}"
            )),
        ]),
        // Lists and gets: 504 with the same Status.
        futures::future::join_all([
            get(format!("/api/v1/pods?resourceVersion={NEVER_ISSUED}")),
            get(format!(
                "/api/v1/pods?resourceVersion={NEVER_ISSUED}&resourceVersionMatch=Exact"
            )),
            get(format!(
                "/api/v1/namespaces/shop/pods/{pod}?resourceVersion={NEVER_ISSUED}"
            )),
        ]),
    );
    for answer in watches {
        assert_eq!(
            answer,
            (
                200,
                vec![json!({"type": "ERROR", "object": too_large(NEVER_ISSUED, current)})]
            )
        );
    }
    for answer in gets {
        assert_eq!(answer, (504, too_large(NEVER_ISSUED, current)));
    }

    // kube-rs sees the ERROR event with the code its callers match on.
    let api: Api<Pod> = Api::all(client(&sim));
    let mut stream = api
        .watch(&WatchParams::default(), &NEVER_ISSUED.to_string())
        .await
        .expect("watch starts")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (504, "Timeout"));
            assert!(status.message.starts_with("Too large resource version"));
        }
        other => panic!("expected a 504 ERROR event, got {other:?}"),
    }
    assert!(stream.try_next().await.expect("ends cleanly").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_resource_version_reached_while_waiting_is_served() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(1)).expect("advance");
    let next = handle.resource_version() + 1;
    let api: Api<Pod> = Api::all(client(&sim));
    let watch = tokio::spawn(async move {
        let mut stream = api
            .watch(&WatchParams::default(), &next.to_string())
            .await
            .expect("watch starts")
            .boxed();
        stream.try_next().await
    });
    // The cluster writes its next resourceVersion (pods move on) within the wait.
    handle.advance(Duration::from_secs(2)).expect("advance");
    match watch.await.expect("join") {
        Ok(Some(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
            let rv: u64 = p
                .metadata
                .resource_version
                .and_then(|v| v.parse().ok())
                .expect("a resourceVersion");
            assert!(
                rv >= next,
                "a change after the requested version ({rv} < {next})"
            );
        }
        other => panic!("expected a pod change, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_forgotten_resource_version_is_gone() {
    let (sim, handle) = start(SCENARIO, ClockMode::Manual).await;
    handle.advance(Duration::from_secs(5)).expect("advance");
    let addr = sim.local_addr();
    let (_, first): (u16, Value) = {
        let r = http::get(addr, "/api/v1/pods?limit=1", &[])
            .await
            .expect("page");
        (r.status, serde_json::from_slice(&r.body).expect("json"))
    };
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();
    handle.inject_fault(Fault::ExpireResourceVersions);
    let compacted = handle.resource_version();

    let r = http::get(addr, "/api/v1/pods?watch=1&resourceVersion=2", &[])
        .await
        .expect("watch answered");
    assert_eq!(r.status, 200);
    assert_eq!(
        events(&r.body),
        [json!({"type": "ERROR", "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: 2 ({compacted})"),
            "reason": "Expired",
            "code": 410
        }})]
    );

    let r = http::get(addr, &format!("/api/v1/pods?limit=1&continue={token}"), &[])
        .await
        .expect("answered");
    let body: Value = serde_json::from_slice(&r.body).expect("a Status");
    assert_eq!(
        (r.status, body),
        (
            410,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                "reason": "Expired",
                "code": 410
            })
        )
    );
    sim.shutdown().await;
}
