//! The sender's own HTTP port (`--http-listen`) against the real simulated cluster and the
//! real receiver, through a proxy that can cut the link: `/readyz` turns ready once every
//! watch has listed the cluster; `/metrics` shows the link up and the process; with the link
//! stalled (bytes stop flowing, as with a dead peer) and then reset, `/metrics` still
//! answers and shows the unacknowledged spool growing and the link down; once the link heals
//! the spool is replayed and acknowledged.

use crate::support;

use std::net::SocketAddr;

use kube_relay_sim::Scenario;
use kube_relay_testkit::exposition::sample;
use kube_relay_testkit::http::get;
use kube_relay_testkit::proxy::LinkProxy;
use kube_relay_testkit::wait_until;

use support::{Bed, POLL, WAIT};

/// The sender's `/metrics`.
async fn scrape(http: SocketAddr) -> anyhow::Result<String> {
    let response = get(http, "/metrics", &[]).await?;
    anyhow::ensure!(response.status == 200, "status {}", response.status);
    Ok(response.text()?.to_owned())
}

/// Waits until `check` holds on the sender's `/metrics`; returns that text.
async fn scrape_until(http: SocketAddr, what: &str, check: impl Fn(&str) -> bool) -> String {
    let check = &check;
    wait_until(what, WAIT, POLL, || async move {
        let text = scrape(http).await?;
        Ok(check(&text).then_some(text))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Flips the readiness of every pod of the scenario: each flip changes series.
fn flip_readiness(bed: &Bed, ready: bool) {
    for pod in bed.handle.pods() {
        let (Some(namespace), Some(name)) = (pod.metadata.namespace, pod.metadata.name) else {
            continue;
        };
        bed.handle
            .set_pod_ready(&namespace, &name, ready)
            .expect("set readiness");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_senders_own_port_answers_while_the_link_is_cut_and_shows_the_spool_growing() {
    let bed = Bed::start(Scenario::builtin("demo").expect("demo scenario")).await;
    let proxy = LinkProxy::start(bed.ingest).await.expect("proxy");
    let mut config = bed.config();
    config.targets = vec![proxy.addr().to_string()];
    let (sender, http) = bed.sender_with_http("own-port", config).await;

    wait_until("ready", WAIT, POLL, || async move {
        Ok((get(http, "/readyz", &[]).await?.status == 200).then_some(()))
    })
    .await
    .expect("the sender becomes ready");
    let text = scrape_until(http, "the link up and everything acknowledged", |t| {
        sample(t, "relay_sender_link_up") == Some(1.0)
            && sample(t, "relay_sender_spool_updates") == Some(0.0)
    })
    .await;
    assert!(sample(&text, "relay_sender_series").is_some_and(|n| n > 0.0));
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ] {
        assert!(
            sample(&text, process).is_some_and(|v| v > 0.0),
            "{process} in\n{text}"
        );
    }

    // The link stalls: what is sent is never acknowledged.
    proxy.stall(true);
    flip_readiness(&bed, false);
    let text = scrape_until(http, "unacknowledged updates in the spool", |t| {
        sample(t, "relay_sender_spool_updates").is_some_and(|n| n > 0.0)
    })
    .await;
    let first = sample(&text, "relay_sender_spool_updates").unwrap_or_default();
    flip_readiness(&bed, true);
    let text = scrape_until(http, "the spool growing", |t| {
        sample(t, "relay_sender_spool_updates").is_some_and(|n| n > first)
    })
    .await;
    let grown = sample(&text, "relay_sender_spool_updates").unwrap_or_default();
    assert!(
        sample(&text, "relay_sender_queue_depth").is_some_and(|n| n >= grown),
        "the queue depth counts the spool:\n{text}"
    );
    println!("FIGURE own port: spool {first} then {grown} unacknowledged updates during the cut");

    // The connection goes: the link is down, the port still answers, the spool is kept.
    proxy.reset_all();
    let text = scrape_until(http, "the link down", |t| {
        sample(t, "relay_sender_link_up") == Some(0.0)
    })
    .await;
    assert!(
        sample(&text, "relay_sender_spool_updates").is_some_and(|n| n >= grown),
        "kept for replay:\n{text}"
    );
    assert_eq!(
        get(http, "/healthz", &[]).await.expect("healthz").status,
        200
    );

    // The link heals: the spool is replayed and acknowledged.
    proxy.stall(false);
    scrape_until(http, "the link back and the spool acknowledged", |t| {
        sample(t, "relay_sender_link_up") == Some(1.0)
            && sample(t, "relay_sender_spool_updates") == Some(0.0)
    })
    .await;
    sender.stop().await;
    bed.stop().await;
}
