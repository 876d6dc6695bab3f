//! The seed projects' workloads as built-in scenarios, each run to its end on a manual clock:
//! the echo load matrix (stepped servers × clients, and with an HPA choosing the servers),
//! the HTTP server whose clients send 1, 10 or 100 messages, the self-healing run and the
//! Paxos namespace. Every step scales what it says when it says, and leaves the `ScenarioStep`
//! event and annotation a reader of the cluster finds it by.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube_relay_sim::{ClockMode, Scenario, SimHandle};

use common::start_scenario;

/// Starts a built-in scenario on a manual clock.
async fn run(name: &str) -> (kube_relay_sim::RunningSim, SimHandle) {
    let scenario = Scenario::builtin(name).expect("built-in scenario");
    start_scenario(scenario, ClockMode::Manual).await
}

/// `spec.replicas` of a deployment.
fn spec_replicas(handle: &SimHandle, namespace: &str, name: &str) -> i32 {
    handle
        .deployment(namespace, name)
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas)
        .unwrap_or(-1)
}

/// The `kube-sim.dev/step` annotation of a deployment.
fn step_annotation(handle: &SimHandle, namespace: &str, name: &str) -> Option<String> {
    handle
        .deployment(namespace, name)?
        .metadata
        .annotations?
        .get("kube-sim.dev/step")
        .cloned()
}

/// The messages of the `ScenarioStep` events, oldest first, without repeats.
fn step_messages(handle: &SimHandle) -> Vec<String> {
    let mut seen = Vec::new();
    for e in handle.events_with_reason("ScenarioStep") {
        let m = e.message.unwrap_or_default();
        if !seen.contains(&m) {
            seen.push(m);
        }
    }
    seen
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready pods of a deployment.
fn ready(handle: &SimHandle, namespace: &str, deployment: &str) -> usize {
    handle
        .running_pods(namespace, deployment)
        .iter()
        .filter(|p| is_ready(p))
        .count()
}

fn advance(handle: &SimHandle, secs: u64) {
    handle.advance(Duration::from_secs(secs)).expect("advance");
}

#[tokio::test]
async fn the_echo_matrix_steps_through_every_servers_and_clients_pair() {
    let (sim, handle) = run("echo-matrix").await;
    let mut reached = Vec::new();
    for servers in [2, 4, 6, 8, 10] {
        for clients in [10, 50, 100] {
            // 50 s into each one-minute step: scaled, and the pods Ready.
            advance(&handle, 50);
            let step = format!("s{servers}-c{clients}");
            assert_eq!(
                (
                    spec_replicas(&handle, "echo", "echo-server"),
                    spec_replicas(&handle, "echo", "echo-client")
                ),
                (servers, clients),
                "{step}"
            );
            assert_eq!(
                step_annotation(&handle, "echo", "echo-client").as_deref(),
                Some(step.as_str())
            );
            reached.push((
                step,
                ready(&handle, "echo", "echo-server"),
                ready(&handle, "echo", "echo-client"),
            ));
            advance(&handle, 10);
        }
    }
    for (step, servers, clients) in &reached {
        let (want_servers, want_clients) = step
            .trim_start_matches('s')
            .split_once("-c")
            .map(|(s, c)| (s.parse().unwrap_or(0), c.parse().unwrap_or(0)))
            .unwrap_or((0, 0));
        assert_eq!((*servers, *clients), (want_servers, want_clients), "{step}");
    }
    // The matrix took 15 minutes; at 15:00 the clients went away.
    let messages = step_messages(&handle);
    assert_eq!(messages.len(), 16, "{messages:#?}");
    assert_eq!(
        messages[2],
        "Step 3/16 s2-c100: echo-client 100, echo-server 2"
    );
    assert_eq!(messages[15], "Step 16/16 done: echo-client 0");
    assert_eq!(spec_replicas(&handle, "echo", "echo-client"), 0, "done");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_hpa_matrix_lets_the_autoscaler_choose_the_servers() {
    let (sim, handle) = run("echo-matrix-hpa").await;
    // Each step lasts three minutes: look 10 s before the next one begins.
    let mut desired = BTreeMap::new();
    let mut elapsed = 0;
    for (step, at) in [
        ("up-c10", 170),
        ("up-c50", 350),
        ("up-c100", 530),
        ("down-c50", 710),
        ("down-c10", 890),
    ] {
        advance(&handle, at - elapsed);
        elapsed = at;
        let status = handle
            .hpa_status("echo", "echo-server")
            .expect("HPA status");
        desired.insert(step, status.desired_replicas);
    }
    assert_eq!(desired["up-c10"], 2, "{desired:?}");
    assert!(desired["up-c50"] > 2, "{desired:?}");
    assert_eq!(desired["up-c100"], 10, "maxed out: {desired:?}");
    assert!(desired["down-c50"] < 10, "{desired:?}");
    assert_eq!(desired["down-c10"], 2, "{desired:?}");
    assert!(handle.scaling_events().len() >= 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn http_clients_of_1_10_and_100_messages_load_the_server_in_turn() {
    let (sim, handle) = run("http-messages").await;
    let clients = ["http-client-m1", "http-client-m10", "http-client-m100"];
    let mut desired = Vec::new();
    for count in [10, 50, 100] {
        for messages in [1, 10, 100] {
            advance(&handle, 110);
            let scaled: Vec<i32> = clients
                .iter()
                .map(|d| spec_replicas(&handle, "http", d))
                .collect();
            let want: Vec<i32> = [1, 10, 100]
                .iter()
                .map(|m| if *m == messages { count } else { 0 })
                .collect();
            assert_eq!(scaled, want, "c{count}-m{messages}");
            let status = handle.hpa_status("http", "http-server").expect("HPA");
            desired.push((format!("c{count}-m{messages}"), status.desired_replicas));
            advance(&handle, 10);
        }
    }
    let of = |step: &str| desired.iter().find(|(s, _)| s == step).map(|(_, d)| *d);
    assert_eq!(of("c10-m1"), Some(2), "{desired:?}");
    assert!(of("c100-m100") > of("c100-m10"), "{desired:?}");
    assert!(of("c100-m100") > of("c10-m100"), "{desired:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_self_healing_run_replaces_a_deleted_pod_and_restarts_a_crashed_one() {
    let (sim, handle) = run("self-healing").await;
    advance(&handle, 85);
    let before: Vec<String> = handle
        .running_pods("resilience", "web")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let serving = ready(&handle, "resilience", "web");
    assert!(serving >= 3, "under load: {serving} Ready");
    advance(&handle, 30); // 115 s: one deleted at 90 s, replaced
    let after: Vec<String> = handle
        .running_pods("resilience", "web")
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let gone: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    let new: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(gone.len(), 1, "one pod deleted: {before:?} -> {after:?}");
    assert!(!new.is_empty(), "a replacement: {before:?} -> {after:?}");
    assert_eq!(ready(&handle, "resilience", "web"), serving, "healed");
    advance(&handle, 60); // 175 s: crashed twice from 150 s on
    let restarts: i32 = handle
        .pods()
        .iter()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref()?.first())
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 2, "one container restarted twice");
    advance(&handle, 200);
    assert_eq!(
        step_messages(&handle),
        [
            "Step 1/5 idle",
            "Step 2/5 load: web-client 30",
            "Step 3/5 pod-deleted",
            "Step 4/5 crash",
            "Step 5/5 cooldown: web-client 0"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_paxos_namespace_runs_each_role_as_its_own_deployment() {
    let (sim, handle) = run("paxos").await;
    advance(&handle, 60);
    let mut roles: BTreeMap<String, usize> = BTreeMap::new();
    for p in handle.pods() {
        assert_eq!(p.metadata.namespace.as_deref(), Some("paxos"));
        let labels = p.metadata.labels.clone().unwrap_or_default();
        *roles.entry(labels["role"].clone()).or_default() += 1;
        let node = &labels["node"];
        assert!(
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{node}-"))),
            "pods are named after their Deployment"
        );
    }
    assert_eq!(
        roles,
        BTreeMap::from([
            ("acceptor".to_string(), 3),
            ("client".to_string(), 2),
            ("learner".to_string(), 2),
            ("proposer".to_string(), 3)
        ])
    );
    for d in ["client1", "client2"] {
        assert_eq!(
            step_annotation(&handle, "paxos", d).as_deref(),
            Some("writes")
        );
    }
    advance(&handle, 400);
    assert_eq!(
        (
            spec_replicas(&handle, "paxos", "client1"),
            spec_replicas(&handle, "paxos", "client2")
        ),
        (0, 0)
    );
    assert_eq!(step_messages(&handle).len(), 6);
    sim.shutdown().await;
}
