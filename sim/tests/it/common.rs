//! Shared fixtures for the simulator's integration tests: a simulated cluster on a port-0
//! listener, and a kube-rs client pointed at it.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::time::Duration;

use kube_relay_sim::{ClockMode, RunningSim, Scenario, SimHandle, Simulator};

/// Starts a simulated cluster for a scenario written inline, on `127.0.0.1:0`.
pub async fn start(yaml: &str, clock: ClockMode) -> (RunningSim, SimHandle) {
    let scenario = Scenario::from_yaml(yaml).expect("test scenario parses");
    start_scenario(scenario, clock).await
}

/// Starts a simulated cluster for a scenario, on `127.0.0.1:0`.
pub async fn start_scenario(scenario: Scenario, clock: ClockMode) -> (RunningSim, SimHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let sim = Simulator::start(scenario, listener, clock)
        .await
        .expect("simulator starts");
    let handle = sim.handle();
    (sim, handle)
}

/// A kube-rs client for the simulated cluster, as the sender builds one.
pub fn client(sim: &RunningSim) -> kube::Client {
    let url = sim.base_url().parse().expect("base url is a URI");
    let mut config = kube::Config::new(url);
    config.read_timeout = Some(Duration::from_secs(30));
    kube::Client::try_from(config).expect("client builds")
}

/// Name → resourceVersion of every pod the simulator holds.
pub fn pod_versions(handle: &SimHandle) -> std::collections::BTreeMap<String, String> {
    handle
        .pods()
        .into_iter()
        .map(|p| {
            (
                p.metadata.name.unwrap_or_default(),
                p.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}
